"""Output kinds: each output is judged by the checks that mean something for it (measure.kinds), detected from
the graph's head and the reference's values, overridable with --outputs NAME=KIND, and named in the report."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deployopt.errors import UsageError
from deployopt.measure.budgets import Budget, resolve_budget
from deployopt.measure.compare import compare_outputs
from deployopt.measure.kinds import classify_outputs, graph_producers, parse_declared

rng = np.random.default_rng(0)


def _graph(path, nodes, inputs, outputs, weights):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(w, n) for n, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_quality_scores_are_regression_judged_by_error_and_correlation_not_top1():
    """Three quality estimates (non-negative, on their own scale): int8-sized noise that reorders them within a
    sample is harmless — top-1 over the three would have failed it; damage that breaks the correlation is not."""
    scores = rng.uniform(2.5, 4.5, (64, 3)).astype(np.float32)
    noisy = scores + rng.normal(0, 0.02, scores.shape).astype(np.float32)
    (m,), failures, _, _ = compare_outputs([scores], [noisy], ["mos"], None, resolve_budget("int8"))
    assert m.kind == "regression" and m.top1_agreement is None and m.correlation > 0.99
    assert not failures, failures
    flat = np.full_like(scores, 3.5) + rng.normal(0, 0.3, scores.shape).astype(np.float32)
    (m,), failures, _, _ = compare_outputs([scores], [flat], ["mos"], None, resolve_budget("int8"))
    assert any("mos: correlation" in f and "below budget 0.99" in f for f in failures)


def test_bits_from_a_sigmoid_head_are_multilabel_judged_per_element(tmp_path):
    """32 independent bits (MatMul → Sigmoid): the graph's head says multilabel; agreement per element after the
    0.5 threshold, not top-1 over the 32."""
    model = _graph(
        tmp_path / "bits.onnx",
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["bits"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("bits", TensorProto.FLOAT, ["batch", 32])],
        {"w": rng.normal(0, 1, (16, 32)).astype(np.float32)},
    )
    assert graph_producers(model) == {"bits": "Sigmoid"}
    ref = 1 / (1 + np.exp(-rng.normal(0, 3, (64, 32)))).astype(np.float32)
    budget = Budget(**resolve_budget("int8").model_dump(exclude={"output_kinds"}))
    kinds = {name: kind for name, (kind, _) in classify_outputs(["bits"], [ref], {}, model).items()}
    assert kinds == {"bits": "multilabel"}
    judged = budget.model_copy(update={"output_kinds": kinds})
    flipped = ref.copy()
    flipped[:, :4] = 1 - flipped[:, :4]  # four bits of every sample flipped: 12.5% of the elements
    (m,), failures, _, _ = compare_outputs([ref], [flipped], ["bits"], None, judged)
    assert m.kind == "multilabel" and m.top1_agreement is None
    assert any("bits: element_agreement" in f and "below budget 0.98" in f for f in failures)
    (m,), failures, _, _ = compare_outputs([ref], [ref + 1e-4], ["bits"], None, judged)
    assert m.element_agreement > 0.999 and not failures


def test_a_residual_image_is_judged_by_its_residual():
    """output = input + a small residual (a denoiser): a candidate that keeps the input and scrambles the residual
    is within 0.995 of the output by cosine — closeness to the input hides it — and fails on the residual."""
    image = rng.uniform(0, 1, (8, 3, 32, 32)).astype(np.float32)
    residual = 0.02 * np.sin(image * 6).astype(np.float32)
    reference = image + residual
    damaged = image + rng.permutation(residual.ravel()).reshape(residual.shape)
    (m,), failures, _, _ = compare_outputs(
        [reference], [damaged], ["clean"], None, resolve_budget("int8"), {"x": image}
    )
    assert m.kind == "image" and m.cosine > 0.995
    assert m.residual_cosine < 0.5 and any("clean: residual_cosine" in f for f in failures)
    faithful = image + residual * 1.01
    (m,), failures, _, _ = compare_outputs(
        [reference], [faithful], ["clean"], None, resolve_budget("int8"), {"x": image}
    )
    assert not failures and m.psnr > 40 and m.residual_cosine > 0.999


def test_pooled_features_are_an_embedding_even_when_not_unit_norm(tmp_path):
    """Conv → ReLU → GlobalAveragePool → Flatten: a non-normalised embedding (as an EfficientNet's 1280-d
    features) — judged by cosine, never taken for logits."""
    model = _graph(
        tmp_path / "features.onnx",
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["features"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 96])],
        {"w": rng.normal(0, 1, (96, 3, 3, 3)).astype(np.float32)},
    )
    features = np.abs(rng.normal(0, 1, (16, 96))).astype(np.float32)
    ((kind, why),) = classify_outputs(["features"], [features], {}, model).values()
    assert kind == "embedding" and why == "a GlobalAveragePool head"
    signed = rng.normal(0, 3, (16, 10)).astype(np.float32)
    ((kind, _),) = classify_outputs(["y"], [signed], {}, None).values()
    assert kind == "logits"


def test_declared_kinds_win_and_a_wrong_kind_is_one_line():
    assert parse_declared(("regression", "probs=logits")) == {None: "regression", "probs": "logits"}
    scores = rng.normal(0, 1, (8, 5)).astype(np.float32)
    kinds = classify_outputs(["a", "probs"], [scores, scores], {}, None, ("regression", "probs=logits"))
    assert kinds == {"a": ("regression", "--outputs regression"), "probs": ("logits", "--outputs probs=logits")}
    with pytest.raises(UsageError, match="--outputs scores=ranking: the kind must be one of logits, embedding"):
        Budget(outputs=("scores=ranking",))


def test_a_build_names_each_outputs_kind_and_honours_outputs_name_kind(tmp_path, run_cli):
    """A generated regression model (Gemm head, three non-negative scores): the build's note says how each output
    was judged; ``--outputs scores=logits`` makes it class scores, and the report shows the top-1 checks."""
    model = _graph(
        tmp_path / "scores.onnx",
        [helper.make_node("Gemm", ["x", "w", "b"], ["scores"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        {"w": rng.normal(0, 0.05, (8, 3)).astype(np.float32), "b": np.full(3, 3.5, np.float32)},
    )
    common = ("--no-int8", "--no-fp16", "--no-bench", "--runtime", "onnxruntime")
    code, _, err = run_cli("build", model, "-o", tmp_path / "run", *common)
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "outputs judged as: scores → regression (non-negative values" in " ".join(report["notes"])
    fp32 = next(v for v in report["variants"] if v["name"] == "onnx-fp32")
    assert fp32["verify"]["outputs"][0]["kind"] == "regression" and fp32["verify"]["outputs"][0]["correlation"] > 0.9999
    code, _, err = run_cli("build", model, "-o", tmp_path / "run2", *common, "--outputs", "scores=logits")
    report = json.loads((tmp_path / "run2" / "report.json").read_text())
    fp32 = next(v for v in report["variants"] if v["name"] == "onnx-fp32")
    assert code == 0 and fp32["verify"]["outputs"][0]["top1_agreement"] == 1.0
    assert "scores → logits (--outputs scores=logits)" in " ".join(report["notes"])
    code, _, err = run_cli("build", model, "-o", tmp_path / "run3", *common, "--outputs", "scores=ranking")
    assert code == 2 and err.count("\n") == 1 and "the kind must be one of" in err
