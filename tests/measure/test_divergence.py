"""When the fp32 artifact misses, the report names the runtime op that diverges: each op of the graph is evaluated
again in float64 on ONNX Runtime's own inputs to it (measure.divergence). ONNX Runtime's InstanceNormalization
over a large plane with a large mean is a real case (the issue's keypoint network): PyTorch stays exact, ORT does
not."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deployopt.measure.divergence import NOTABLE, divergence_note, op_errors

rng = np.random.default_rng(0)


def test_each_ops_own_error_is_measured_on_the_runtimes_inputs(tmp_path):
    """Conv → Add 5000 → InstanceNormalization → Relu: only the normalisation is off beyond float32 rounding
    (its error is its own: the Add before it is exact, so nothing is inherited)."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Add", ["c", "offset"], ["a"], name="offset"),
        helper.make_node("InstanceNormalization", ["a", "scale", "bias"], ["n"], name="norm"),
        helper.make_node("Relu", ["n"], ["y"], name="relu"),
    ]
    weights = {
        "w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
        "offset": np.full((1, 4, 1, 1), 5000, np.float32),
        "scale": np.ones(4, np.float32),
        "bias": np.zeros(4, np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 240, 320])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 240, 320])],
        [numpy_helper.from_array(w, n) for n, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "norm.onnx"))
    errors = op_errors(tmp_path / "norm.onnx", {"x": rng.normal(0, 1, (1, 3, 240, 320)).astype(np.float32)})
    assert errors[0].op_type == "InstanceNormalization" and errors[0].relative_error > 1e-4
    assert all(e.relative_error < NOTABLE for e in errors[1:]), errors
    note = divergence_note("onnx-fp32", errors)
    assert note.startswith("onnx-fp32 misses where ONNX Runtime's own kernels diverge from exact arithmetic: ")
    assert "InstanceNormalization 'norm' off by" in note and "Conv" not in note


def test_a_build_whose_fp32_misses_names_the_diverging_op(tmp_path, run_cli):
    """A PyTorch model with InstanceNorm2d over a plane with a large mean: the fp32 ONNX artifact misses in ONNX
    Runtime (exit 1, the metric named) and the report says which op of the runtime is to blame."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.norm = torch.nn.InstanceNorm2d(4, affine=True)

        def forward(self, x):
            return torch.relu(self.norm(self.conv(x) + 5000.0))

    torch.manual_seed(0)
    traced = torch.jit.trace(Net().eval(), torch.zeros(1, 3, 240, 320))
    traced.save(str(tmp_path / "net.pt"))
    np.savez(tmp_path / "data.npz", x=rng.normal(0, 1, (2, 3, 240, 320)).astype(np.float32))
    code, _, err = run_cli(
        "build", tmp_path / "net.pt", "--input", "x:batch,3,240,320", "--data", tmp_path / "data.npz",
        "-o", tmp_path / "run", "--no-int8", "--no-fp16", "--runtime", "onnxruntime", "--no-bench",
    )  # fmt: skip
    assert code == 1 and "FAIL onnx-fp32: output: max_rel_error" in err
    notes = json.loads((tmp_path / "run" / "report.json").read_text())["notes"]
    (note,) = [n for n in notes if n.startswith("onnx-fp32 misses where")]
    assert "InstanceNormalization" in note and "off by" in note


def test_an_original_run_by_onnx_runtime_blames_the_graph_passes_not_a_kernel():
    """When the original is an ONNX file, it runs on ONNX Runtime as well: a kernel's error is on both sides, so the
    note points at the graph step's passes and no per-op comparison runs."""
    from types import SimpleNamespace

    from deployopt.flow.misses import explain_fp32_miss
    from deployopt.measure.budgets import resolve_budget
    from deployopt.measure.verify import VerifyResult
    from deployopt.reports.model import BuildReport, VariantReport
    from deployopt.runners import RunnerSpec

    report = BuildReport("m", "run", {}, "generated", 8, [1], 1)
    verdict = VerifyResult("m.onnx", "model-fp32.onnx", resolve_budget("fp32"), 8, "generated", failures=["y: cosine"])
    report.variants += [VariantReport("onnx-original", "m.onnx", "fp32", 1, role="reference")]
    report.variants += [VariantReport("onnx-fp32", "model-fp32.onnx", "fp32", 1, verify=verdict)]
    ctx = SimpleNamespace(reference=RunnerSpec("onnxruntime", "m.onnx"), progress=print)
    (note,) = explain_fp32_miss(ctx, report)
    assert note.startswith("onnx-fp32 misses against the original, which runs on ONNX Runtime too")
