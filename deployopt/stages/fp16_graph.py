"""The fp16 graph the converter returns, made loadable: its needless fp32 → fp16 → fp32 round trips removed,
and ONNX Runtime's verdict on it taken in a child process (a bad fp16 graph can crash it outright)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any


def drop_round_trips(model: Any, fp32_nodes: set[str]) -> Any:
    """Remove the converter's fp32 → fp16 → fp32 Cast pairs between two nodes kept in fp32: it casts each
    kept node on its own, so a value beyond fp16's range between two of them overflows all the same."""
    from onnx import TensorProto

    def cast_to(node: Any) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    dropped: set[int] = set()
    for down in graph.node:
        if cast_to(down) != TensorProto.FLOAT16 or down.output[0] in outputs:
            continue
        source = producer.get(down.input[0])
        if source is None or source.name not in fp32_nodes:
            continue
        ups = consumers.get(down.output[0], [])
        if not ups or any(cast_to(up) != TensorProto.FLOAT or up.output[0] in outputs for up in ups):
            continue
        for up in ups:
            rename[up.output[0]] = down.input[0]
            dropped.add(id(up))
        dropped.add(id(down))
    if not rename:
        return model
    kept = [node for node in graph.node if id(node) not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)
    return model


LOAD_PROBE = (
    "import sys, onnxruntime as ort\n"
    "o = ort.SessionOptions(); o.log_severity_level = 3\n"
    "try: ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n"
    "except Exception as e: print(e); sys.exit(1)\n"
)


def load_error(model: Any, probe: Path) -> str | None:
    """Load the model in a child process: ONNX Runtime can crash outright (SIGSEGV) on a bad fp16 graph."""
    import onnx

    onnx.save_model(model, str(probe))
    result = subprocess.run([sys.executable, "-c", LOAD_PROBE, str(probe)], capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return None
    if result.returncode < 0:
        return f"ONNX Runtime crashed (signal {-result.returncode}) while loading the fp16 model"
    return (result.stdout or result.stderr).strip()
