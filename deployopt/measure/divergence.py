"""Where an fp32 graph stops matching: each op's own error in ONNX Runtime, against exact arithmetic.

When the fp32 artifact misses its budget the graph is usually faithful and a runtime kernel is not (ONNX
Runtime's InstanceNormalization loses ~1e-3 on large planes with a large mean, where PyTorch keeps 1e-6). Every
intermediate tensor of one verification sample is taken from ONNX Runtime; each op is then evaluated again by
ONNX's reference implementation in float64 *on ONNX Runtime's own inputs to that op*, so an op's error is its
own, not what it inherited. The ops with the largest relative errors are what the report names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHOWN = 3  # ops named in the report
NOTABLE = 1e-5  # a relative error below this is float32 rounding, not a divergence


@dataclass(frozen=True)
class OpError:
    node: str
    op_type: str
    relative_error: float  # max |runtime − float64| / max |float64| of the op's first output

    def describe(self) -> str:
        return f"{self.op_type} '{self.node}' off by {self.relative_error:.2g} (relative, on its own inputs)"


def op_errors(model_path: str | Path, feeds: dict[str, np.ndarray]) -> list[OpError]:
    """Every op's own relative error in ONNX Runtime on ``feeds`` (one sample), largest first."""
    import onnx
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(model_path))
    graph_outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in graph_outputs:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                graph_outputs.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph's own nodes
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, feeds), strict=True))
    values |= feeds | {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    evaluator = ReferenceEvaluator(model)
    errors = []
    for node, op in zip(model.graph.node, evaluator.rt_nodes_, strict=True):
        if not node.output or node.output[0] not in values or any(i and i not in values for i in node.input):
            continue
        error = _own_error(op, [values[i] if i else None for i in node.input], values[node.output[0]])
        if error is not None:
            errors.append(OpError(node.name or node.output[0], node.op_type, error))
    return sorted(errors, key=lambda e: e.relative_error, reverse=True)


def _own_error(op, inputs: list, runtime_output: np.ndarray) -> float | None:
    """The op's relative error: ``runtime_output`` against the op evaluated in float64 on the same inputs."""
    if not np.issubdtype(np.asarray(runtime_output).dtype, np.floating):
        return None
    wide = [x.astype(np.float64) if isinstance(x, np.ndarray) and x.dtype == np.float32 else x for x in inputs]
    try:
        exact = op.run(*wide)[0]
    except Exception:  # an op the reference cannot evaluate in float64: no verdict on it
        return None
    exact = np.asarray(exact, np.float64)
    if exact.shape != runtime_output.shape or not np.isfinite(exact).all():
        return None
    scale = float(np.abs(exact).max()) if exact.size else 0.0
    return float(np.abs(runtime_output.astype(np.float64) - exact).max() / scale) if scale > 0 else None


def divergence_note(variant: str, errors: list[OpError]) -> str:
    """The report's line: the ops whose own error is largest, or that none is beyond float32 rounding."""
    notable = [e for e in errors if e.relative_error > NOTABLE][:SHOWN]
    if not notable:
        return f"{variant} misses, yet no op of it is off by more than {NOTABLE:g} on its own inputs in ONNX Runtime"
    return f"{variant} misses where ONNX Runtime's own kernels diverge from exact arithmetic: " + "; ".join(
        e.describe() for e in notable
    )
