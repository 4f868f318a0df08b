"""fp16 stage: an fp32 ONNX model → a float16 model that ONNX Runtime actually loads.

Uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``) with float32 inputs/outputs
kept by default, so callers feed the same arrays. Converters routinely produce graphs that ONNX
Runtime refuses (a node without an fp16 kernel, a Cast whose type no longer matches); instead of
shipping such a file, the node named in the load error is kept in fp32 and conversion is retried.
Every node kept in fp32 is reported. On CPUs without fp16 arithmetic this is a size win, not a speed-up.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployopt.errors import BackendUnavailableError, StageError
from deployopt.sources.onnxutil import load_model, name_nodes
from deployopt.stages.base import BuildContext
from deployopt.types import ONNX_FP32

MAX_FALLBACKS = 50
_NODE_IN_ERROR = re.compile(r"node(?: with name)?\s*[:=]?\s*'?\"?([A-Za-z0-9_./:\-]+)")


class Fp16Config(BaseModel):
    """Options of ``deployopt quantize --fp16`` (and the fp16 variant of ``build``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_io_types: bool = Field(True, description="keep float32 inputs and outputs")
    block: tuple[str, ...] = Field((), description="op types kept in fp32 besides the converter's list (repeatable)")


@dataclass
class Fp16Result:
    blocked_op_types: list[str]
    fallback_nodes: list[str]  # kept in fp32 because ONNX Runtime refused (or crashed on) them in fp16
    fp16_nodes: int
    fp32_nodes: int
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


def convert_fp16(in_path: Path, out_path: Path, config: Fp16Config) -> Fp16Result:
    """Convert and prove that ONNX Runtime loads the result; the input file is only read."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    except ImportError as exc:
        raise BackendUnavailableError("fp16 conversion needs onnxruntime: pip install 'deployopt[cpu]'") from exc
    started = time.perf_counter()
    model = name_nodes(load_model(in_path))
    op_block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(config.block))
    node_block: list[str] = []
    with tempfile.TemporaryDirectory(prefix="deployopt-fp16-") as tmp:
        probe = Path(tmp) / "probe.onnx"
        for _ in range(MAX_FALLBACKS):
            converted = _convert(model, config, op_block, node_block)
            refused = _load_error(converted, probe)
            if refused is None:
                break
            culprits = _node_named_in(refused, converted, node_block) or _search_culprits(
                model, config, op_block, node_block, probe
            )
            if not culprits:
                raise StageError(
                    f"{in_path}: ONNX Runtime refuses the fp16 model ({refused[:300]}) and no node or op "
                    "type kept in fp32 fixes it; pass --fp16-block OPTYPE"
                )
            node_block += culprits
        else:
            raise StageError(f"{in_path}: fp16 conversion still fails after keeping {len(node_block)} nodes in fp32")
    onnx.save_model(converted, str(out_path))
    fp16_nodes, fp32_nodes = _count_precision(converted)
    return Fp16Result(sorted(config.block), node_block, fp16_nodes, fp32_nodes, time.perf_counter() - started)


def _convert(model: Any, config: Fp16Config, op_block: list[str], node_block: list[str]) -> Any:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(
        onnx.ModelProto.FromString(model.SerializeToString()),
        keep_io_types=config.keep_io_types,
        op_block_list=op_block,
        node_block_list=list(node_block),
    )


_LOAD_PROBE = (
    "import sys, onnxruntime as ort\n"
    "o = ort.SessionOptions(); o.log_severity_level = 3\n"
    "try: ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n"
    "except Exception as e: print(e); sys.exit(1)\n"
)


def _load_error(model: Any, probe: Path) -> str | None:
    """Load the model in a child process: ONNX Runtime can crash outright (SIGSEGV) on a bad fp16 graph."""
    import onnx

    onnx.save_model(model, str(probe))
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_PROBE, str(probe)], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return None
    if result.returncode < 0:
        return f"ONNX Runtime crashed (signal {-result.returncode}) while loading the fp16 model"
    return (result.stdout or result.stderr).strip()


def _search_culprits(
    model: Any, config: Fp16Config, op_block: list[str], node_block: list[str], probe: Path
) -> list[str]:
    """When the error names no node: find an op type whose nodes, kept in fp32, make the model load
    (fewest nodes first), then narrow it to the single node that suffices when there is one."""
    by_type: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in op_block and node.name not in node_block:
            by_type.setdefault(node.op_type, []).append(node.name)
    for names in sorted(by_type.values(), key=len):
        if _load_error(_convert(model, config, op_block, node_block + names), probe) is not None:
            continue
        if len(names) > 1:
            for name in names:
                if _load_error(_convert(model, config, op_block, [*node_block, name]), probe) is None:
                    return [name]
        return names
    return []


def _node_named_in(error: str, model: Any, already: list[str]) -> list[str]:
    """The original node named by an ORT load error (converter-inserted Casts map back to their node)."""
    names = {node.name for node in model.graph.node}
    for candidate in _NODE_IN_ERROR.findall(error):
        for name in (candidate, candidate.rsplit("_input_cast", 1)[0], candidate.rsplit("_output_cast", 1)[0]):
            if name in names and name not in already and not name.startswith("graph_"):
                return [name]
    return []


def _count_precision(model: Any) -> tuple[int, int]:
    """Nodes whose first output is fp16 vs everything else (approximated through value_info)."""
    from onnx import TensorProto

    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    fp16 = sum(1 for node in model.graph.node if node.output and types.get(node.output[0]) == TensorProto.FLOAT16)
    return fp16, len(model.graph.node) - fp16


class Fp16Step:
    """``build``'s fp16 variant: ``model-fp16.onnx`` from the optimised fp32 graph."""

    name = "fp16"
    variant = "onnx-fp16"

    def run(self, ctx: BuildContext) -> None:
        ctx.progress("fp16: converting")
        config, fp32 = ctx.config.quantize.fp16, ctx.artifacts[ONNX_FP32]
        outcome = ctx.run.run_stage(
            self.name,
            config,
            {"model": fp32.sha256},
            {"model": "model-fp16.onnx"},
            lambda out: convert_fp16(fp32.path, out["model"], config).to_json(),
        )
        ctx.add_artifact(self.variant, outcome)
        ctx.record(self.name, outcome, fp16_summary(outcome.record["details"]))


def fp16_summary(d: dict) -> str:
    kept = d["fallback_nodes"]
    return (
        f"float16 weights and activations with float32 inputs/outputs; {d['fp16_nodes']} fp16 nodes, "
        f"{d['fp32_nodes']} fp32 nodes (converter block list)"
        + (f"; kept in fp32 because ONNX Runtime refused them: {', '.join(kept)}" if kept else "")
    )
