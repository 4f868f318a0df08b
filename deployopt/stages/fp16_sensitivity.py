"""Which nodes of an fp16 model to keep in fp32 next: those out of fp16's range first (as ModelOpt's AutoCast
checks), then those whose output loses the most accuracy beyond what their inputs already lost."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from deployopt.data.eval_data import EvalData
from deployopt.sources.onnxutil import load_model

FP16_MAX = 65504.0
CONVERTER_WEIGHT_RANGE = (1e-7, 1e4)  # onnxruntime's converter clamps weights into this magnitude range
ERROR_CAP = 1e6  # an overflowed tensor's error: large, finite, so damage stays a difference


def _tensor_values(path: Path, tensors: set[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``path`` with every tensor in ``tensors`` it produces exposed as an extra output."""
    import onnx
    import onnxruntime as ort

    extended = load_model(path)
    declared = {o.name for o in extended.graph.output}
    produced = {o for n in extended.graph.node for o in n.output}
    for name in sorted(tensors & produced - declared):
        extended.graph.output.append(onnx.ValueInfoProto(name=name))  # typed by ORT: fp16 or fp32
    session = ort.InferenceSession(extended.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _out_of_range(model: Any, nodes: list[Any], fp32_values: dict[str, np.ndarray]) -> list[str]:
    """Nodes fp16 cannot represent (as ModelOpt's AutoCast checks first): an output beyond fp16's ±65504, or
    a weight the converter would clamp (any beyond 1e4, or all of it below 1e-7)."""
    weights = {init.name: init for init in model.graph.initializer}
    low, high = CONVERTER_WEIGHT_RANGE

    def clamped(name: str) -> bool:
        if name not in weights:
            return False
        from onnx import numpy_helper

        magnitude = np.abs(numpy_helper.to_array(weights[name]).astype(np.float64))
        if magnitude.size == 0 or not np.issubdtype(magnitude.dtype, np.floating):
            return False
        nonzero = magnitude[magnitude > 0]
        return bool(magnitude.max() > high or (nonzero.size and nonzero.max() < low))

    def overflows(name: str) -> bool:
        value = fp32_values.get(name)
        if value is None or not np.issubdtype(value.dtype, np.floating) or not value.size:
            return False
        finite = np.abs(value[np.isfinite(value)])
        return bool(finite.size and finite.max() > FP16_MAX)

    return [n.name for n in nodes if any(clamped(t) for t in n.input) or any(overflows(t) for t in n.output)]


def most_sensitive(
    model: Any, fp32: Path, fp16: Path, op_block: list[str], kept_nodes: list[str], data: EvalData, round_index: int
) -> tuple[list[str], str]:
    """The nodes to keep in fp32 next, and why. First those out of fp16's range; then the fp16 nodes whose
    output loses the most accuracy beyond what their inputs already lost (the budget's max relative error of
    each tensor against fp32 on the samples given), 10 %, 20 %, 40 % ... of them per round (at least one)."""
    nodes = [n for n in model.graph.node if n.name not in kept_nodes and n.op_type not in op_block and n.output]
    tensors = {t for n in nodes for t in (*n.input, *n.output) if t}
    feeds = next(data.batches(data.num_samples))  # the caller sizes the data to its memory budget
    reference = _tensor_values(fp32, tensors, feeds)
    if out_of_range := _out_of_range(model, nodes, reference):
        return out_of_range, "out of fp16's range"
    converted = _tensor_values(fp16, tensors, feeds)

    def error(name: str) -> float:
        a, b = reference.get(name), converted.get(name)
        if a is None or b is None or a.shape != b.shape or not np.issubdtype(a.dtype, np.floating):
            return 0.0
        a, b = a.astype(np.float64), b.astype(np.float64)
        scale = np.abs(a[np.isfinite(a)]).max(initial=0.0)
        diff = np.nan_to_num(np.abs(a - b), nan=np.inf, posinf=np.inf).max(initial=0.0)
        return float(min(diff / scale if scale > 0 else diff, ERROR_CAP))

    damage = {n.name: error(n.output[0]) - max((error(t) for t in n.input if t), default=0.0) for n in nodes}
    count = max(1, math.ceil(len(nodes) * 0.1 * 2**round_index))
    ranked = sorted((name for name, d in damage.items() if d > 0), key=damage.get, reverse=True)
    return ranked[:count], "most accuracy lost"
