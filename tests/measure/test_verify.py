"""Verification metrics and budgets, on synthetic arrays and on the real digits model."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deployopt.data.eval_data import dataset_data
from deployopt.measure.budgets import Budget, BudgetOverrides, resolve_budget
from deployopt.measure.compare import compare_outputs
from deployopt.measure.verify import verify
from deployopt.runners import RunnerSpec


def test_identical_outputs_have_zero_error():
    ref = np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32)
    metrics, failures, _, _ = compare_outputs([ref], [ref.copy()], ["logits"], None, resolve_budget("fp32"))
    assert failures == []
    m = metrics[0]
    assert m.max_abs_error == 0 and m.max_rel_error == 0 and m.cosine == pytest.approx(1.0)
    assert m.top1_agreement == 1.0


def test_metrics_have_the_documented_meaning():
    ref = np.array([[1.0, 4.0], [2.0, -2.0]], np.float32)
    cand = np.array([[1.0, 3.0], [2.5, -2.0]], np.float32)
    (m,), _, _, _ = compare_outputs([ref], [cand], ["y"], None, Budget())
    assert m.max_abs_error == pytest.approx(1.0)
    assert m.max_rel_error == pytest.approx(0.25)  # 1.0 / max|ref| = 1/4
    assert m.top1_agreement == 1.0
    cos0 = (1 * 1 + 4 * 3) / (np.hypot(1, 4) * np.hypot(1, 3))
    cos1 = (2 * 2.5 + 4) / (np.hypot(2, 2) * np.hypot(2.5, 2))
    assert m.cosine == pytest.approx((cos0 + cos1) / 2, rel=1e-6)


def test_numerically_empty_samples_do_not_decide_the_cosine():
    """rapidocr's text detector on a photo crop without text: a probability map of ~1e-5 beside one of ~7.
    Float rounding (ORT's own optimisation levels differ as much) points the empty map elsewhere; its cosine
    is noise, and the max abs / rel error judge it. A candidate that is large where the reference is empty is
    not empty, and its cosine counts."""
    rng = np.random.default_rng(0)
    text = rng.random((1, 1, 8, 8)).astype(np.float32)  # [N, 1, H, W] maps, as the detector outputs
    empty = (1e-6 * rng.random((1, 1, 8, 8))).astype(np.float32)
    ref = np.concatenate([text, empty])
    rounded = np.concatenate([text, empty[..., ::-1].copy()])  # same magnitude, another direction
    (m,), failures, _, _ = compare_outputs([ref], [rounded], ["maps"], None, resolve_budget("fp32"))
    assert m.cosine == pytest.approx(1.0) and failures == []
    spurious = np.concatenate([text, text])  # detects text where the reference found none
    (m,), failures, _, _ = compare_outputs([ref], [spurious], ["maps"], None, resolve_budget("fp32"))
    assert m.cosine < 0.9 and any("cosine" in f for f in failures)


def test_budget_misses_name_metric_value_and_limit():
    ref = np.eye(4, dtype=np.float32) * 4 - 1  # logits (signed rows, not unit-norm)
    cand = ref[::-1].copy()  # every top-1 flips
    _, failures, _, _ = compare_outputs(
        [ref], [cand], ["logits"], None, Budget(min_top1_agreement=0.9, max_abs_error=0.5)
    )
    assert any("top1_agreement 0 below budget 0.9" in f for f in failures)
    assert any("max_abs_error 4 above budget 0.5" in f for f in failures)


def test_accuracy_drop_with_labels():
    ref = np.eye(4, dtype=np.float32) * 4 - 1  # logits (signed rows, not unit-norm)
    cand = ref.copy()
    cand[0] = [0, 3, 0, 0]
    labels = np.arange(4)
    _, failures, ref_acc, cand_acc = compare_outputs([ref], [cand], ["y"], labels, Budget(max_accuracy_drop=10))
    assert (ref_acc, cand_acc) == (100.0, 75.0)
    assert failures == ["accuracy drop 25.00 points > budget 10 (75.00% vs 100.00%)"]


def test_shape_mismatch_and_nan_fail():
    ref = np.ones((2, 3), np.float32)
    _, failures, _, _ = compare_outputs([ref], [np.ones((2, 4), np.float32)], ["y"], None, Budget())
    assert "shape [2, 4] differs" in failures[0]
    bad = ref.copy()
    bad[0, 0] = np.nan
    _, failures, _, _ = compare_outputs([ref], [bad], ["y"], None, Budget())
    assert "NaN" in failures[0]


def test_defaults_loosen_with_precision_and_overrides_apply():
    assert resolve_budget("fp32").max_rel_error < resolve_budget("fp16").max_rel_error
    assert resolve_budget("fp32").min_cosine > resolve_budget("fp16").min_cosine > resolve_budget("int8").min_cosine
    assert resolve_budget("int8", BudgetOverrides(min_cosine=0.5, max_abs_error=None)).min_cosine == 0.5


def test_digits_onnx_verifies_against_pytorch_on_real_data(digits_checkpoint, digits_onnx, digits_signature):
    data = dataset_data(digits_signature, "digits", "test")
    result = verify(
        RunnerSpec("torch", str(digits_checkpoint)),
        RunnerSpec("onnxruntime", str(digits_onnx)),
        data,
        resolve_budget("fp32"),
    )
    assert result.passed, result.failures
    assert result.samples == 360
    assert result.reference_accuracy == result.candidate_accuracy >= 98.0
    assert result.outputs[0].top1_agreement == 1.0 and result.outputs[0].max_rel_error < 1e-4


def test_damaged_weights_fail_verification(digits_checkpoint, digits_onnx, digits_signature, tmp_path):
    model = onnx.load(str(digits_onnx))
    weight = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    array = numpy_helper.to_array(weight).copy()
    array += np.random.default_rng(0).standard_normal(array.shape).astype(np.float32) * array.std() * 0.5
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    data = dataset_data(digits_signature, "digits", "test")
    result = verify(
        RunnerSpec("torch", str(digits_checkpoint)),
        RunnerSpec("onnxruntime", str(damaged)),
        data,
        resolve_budget("fp32"),
    )
    assert not result.passed
    assert any("max_rel_error" in f for f in result.failures)


def test_top1_checks_apply_to_logits_not_embeddings():
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((16, 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    noisy = embeddings + rng.standard_normal(embeddings.shape) * 0.05
    (auto,), failures, _, _ = compare_outputs([embeddings], [noisy], ["emb"], None, Budget(min_top1_agreement=1.0))
    assert auto.top1_agreement is None and failures == []  # unit-norm rows: an embedding, argmax is meaningless
    (forced,), _, _, _ = compare_outputs([embeddings], [noisy], ["emb"], None, Budget(outputs="logits"))
    assert forced.top1_agreement is not None
    logits = rng.standard_normal((16, 8)) * 5
    (plain,), _, _, _ = compare_outputs([logits], [logits], ["y"], None, Budget())
    assert plain.top1_agreement == 1.0
    (declared,), _, _, _ = compare_outputs([logits], [logits], ["y"], None, Budget(outputs="embedding"))
    assert declared.top1_agreement is None


def _logits_with_margins(rng, samples: int, classes: int, decisive: int) -> np.ndarray:
    """Class scores whose first ``decisive`` samples lead clearly (probability margin ≫ 0.1) and the rest are
    near-ties between classes 0 and 1 (margin ≪ 0.1)."""
    logits = rng.standard_normal((samples, classes)).astype(np.float32)
    logits[:decisive, 2] += 6.0
    logits[decisive:, :2] += 5.0
    logits[decisive:, 1] = logits[decisive:, 0] + 0.01
    return logits


def test_near_tie_flips_are_not_damage_but_decisive_flips_and_spread_damage_are():
    """A candidate that only flips near-ties (what bf16 does on an undecided model) keeps decisive agreement and
    KL within the low-precision budget although raw top-1 agreement drops; one that flips decisive samples, or
    moves every probability, misses — the metric, its value and its limit named."""
    rng = np.random.default_rng(0)
    ref = _logits_with_margins(rng, 100, 10, decisive=60)
    ties_flipped = ref.copy()
    ties_flipped[60:, 0] += 0.02  # each near-tie's top-1 flips to class 0; the probabilities barely move
    budget = resolve_budget("bf16")
    (m,), failures, _, _ = compare_outputs([ref], [ties_flipped], ["logits"], None, budget)
    assert m.top1_agreement == pytest.approx(0.6) and m.decisive_samples == 60 and m.decisive_agreement == 1.0
    assert m.top5_containment == 1.0 and m.mean_kl < 1e-3 and failures == []
    assert (
        "top1_agreement" in compare_outputs([ref], [ties_flipped], ["l"], None, Budget(min_top1_agreement=0.98))[1][0]
    )
    damaged = ref.copy()
    damaged[:5, 2] -= 12.0  # five decisive samples lose their class
    (m,), failures, _, _ = compare_outputs([ref], [damaged], ["logits"], None, budget)
    assert m.decisive_agreement == pytest.approx(55 / 60) and any("decisive_agreement" in f for f in failures)
    smeared = ref * 0.3  # every sample's probabilities flattened: no top-1 changes, the distribution does
    (m,), failures, _, _ = compare_outputs([ref], [smeared], ["logits"], None, budget)
    assert m.top1_agreement == 1.0 and m.mean_kl > 0.01 and any("mean_kl" in f for f in failures)


def test_probability_outputs_are_read_as_probabilities_and_the_margin_is_a_budget_setting():
    """A model ending in Softmax: its rows are used as they are (a second softmax would squash every margin);
    --decisive-margin moves the line between decisive and near-tie."""
    from deployopt.measure.classes import class_probabilities

    probs = np.array([[0.7, 0.2, 0.1], [0.45, 0.4, 0.15], [0.1, 0.3, 0.6]], np.float32)
    assert np.allclose(class_probabilities(probs), probs)
    assert np.allclose(class_probabilities(np.log(probs)), probs, atol=1e-6)  # logits → their softmax
    (m,), _, _, _ = compare_outputs([probs], [probs], ["p"], None, Budget(decisive_margin=0.1))
    assert m.decisive_samples == 2  # margins 0.5, 0.05, 0.3
    (m,), _, _, _ = compare_outputs([probs], [probs], ["p"], None, Budget(decisive_margin=0.04))
    assert m.decisive_samples == 3 and m.mean_kl == pytest.approx(0.0, abs=1e-9)


def test_budget_slack_is_the_judge_verdict_as_one_number():
    """1 for a copy of the original, 0 at a limit, negative on a miss; a miss no metric measures is -1."""
    from deployopt.measure.compare import budget_slack

    rng = np.random.default_rng(0)
    ref = _logits_with_margins(rng, 50, 10, decisive=50)
    budget = resolve_budget("int8")

    def slack(cand):
        metrics, failures, ref_acc, cand_acc = compare_outputs([ref], [cand], ["l"], None, budget)
        return budget_slack(metrics, failures, budget, ref_acc, cand_acc), failures

    assert slack(ref.copy()) == (pytest.approx(1.0), [])
    value, failures = slack(ref * 0.3)
    assert value < 0 and failures
    value, failures = slack(ref + 0.01 * rng.standard_normal(ref.shape).astype(np.float32))
    assert 0 < value < 1 and not failures
    bad = ref.copy()
    bad[0, 0] = np.nan
    assert slack(bad)[0] == -1.0
