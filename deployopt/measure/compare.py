"""The judge's comparison: one candidate's outputs against the reference's, held to a budget.

Per output (matched by name, else by position) it reports the max absolute error, the max error relative to
the reference's range (``max|c−r| / max|r|``, a scale-free figure that does not explode near zero), the mean
per-sample cosine similarity, and the checks of the output's kind (:mod:`.kinds`): for class scores four views
of the decision — raw top-1 agreement, agreement on the *decisive* samples (the reference's top-1 leads its
runner-up by a margin of probability; a near-tie that any rounding flips does not count), whether the
reference's top-1 stays in the candidate's top-5, and the mean KL divergence between the two class distributions;
for regression outputs the correlation; for multilabel outputs the agreement per element; for images the PSNR
and, for a residual on an input, the cosine of the residual. With labels, both models' task accuracy. A miss
names the metric, its value and its limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deployopt.measure.budgets import DECISIVE_MARGIN, Budget
from deployopt.measure.classes import decision_metrics
from deployopt.measure.kinds import correlation, element_agreement, psnr, residual_source, resolve_kinds

# The cosine budget holds the mean cosine less two standard errors: a mean that clears its limit by less than the
# sampling error of its data is as likely as not to miss it on another sample of the same kind of input (an
# accuracy search that stops at the budget's edge would otherwise ship exactly such candidates).
SAMPLING_MARGIN = 2.0

# the metrics of regression, multilabel and image outputs as a summary shows them
KIND_METRICS = (
    ("correlation", "correlation", lambda v: f"{v:.6f}"),
    ("element_agreement", "element agreement", lambda v: f"{v * 100:.2f}%"),
    ("psnr", "PSNR", lambda v: f"{v:.1f} dB"),
    ("residual_cosine", "residual cosine", lambda v: f"{v:.6f}"),
)


@dataclass
class OutputMetrics:
    name: str
    max_abs_error: float
    max_rel_error: float
    cosine: float  # mean over samples
    top1_agreement: float | None = None
    worst_cosine: float | None = None  # the least similar sample (None in results saved before it was measured)
    decisive_agreement: float | None = None  # top-1 agreement where the reference leads by the decisive margin
    decisive_samples: int | None = None  # how many samples were decisive
    top5_containment: float | None = None  # the reference's top-1 among the candidate's five best
    mean_kl: float | None = None  # mean KL(reference ‖ candidate) of the class probabilities
    cosine_stderr: float | None = None  # standard error of the mean cosine over the samples
    kind: str | None = None  # what the output is (measure.kinds); None in results saved before kinds
    correlation: float | None = None  # regression: Pearson correlation with the reference's values
    element_agreement: float | None = None  # multilabel: share of elements on the same side of the threshold
    psnr: float | None = None  # image: dB against the reference
    residual_cosine: float | None = None  # image residual on an input: mean cosine of (output − input)

    @property
    def cosine_bound(self) -> float:
        """The mean cosine less :data:`SAMPLING_MARGIN` standard errors: what the cosine budget holds."""
        return self.cosine - SAMPLING_MARGIN * (self.cosine_stderr or 0.0)

    def describe(self) -> str:
        """This output's numbers in one phrase: its kind, errors, cosine and the checks of its kind."""
        kind = f" ({self.kind})" if self.kind else ""
        errors = f"max abs {self.max_abs_error:.3g}, max rel {self.max_rel_error:.3g}"
        text = f"{self.name}{kind}: {errors}, cosine {self.cosine:.6f}"
        if self.cosine_stderr:
            text += f" ±{self.cosine_stderr:.2g} (s.e.)"
        if self.worst_cosine is not None:
            text += f" (worst sample {self.worst_cosine:.6f})"
        if self.top1_agreement is not None:
            text += f", top-1 agreement {self.top1_agreement * 100:.2f}%"
        if self.decisive_samples is not None:
            decisive = f"{self.decisive_agreement * 100:.2f}%" if self.decisive_agreement is not None else "–"
            text += f" ({decisive} on {self.decisive_samples} decisive samples)"
        if self.top5_containment is not None:
            text += f", top-5 containment {self.top5_containment * 100:.2f}%, mean KL {self.mean_kl:.3g}"
        text += "".join(
            f", {label} {fmt(getattr(self, metric))}"
            for metric, label, fmt in KIND_METRICS
            if getattr(self, metric, None) is not None
        )
        return text


# A sample whose output is this small against the output's largest sample (a text detector's probability map
# of an image without text) is numerically empty: float rounding alone turns its direction around, so its
# cosine says nothing; its errors are judged by the max abs / relative error, on the output's own scale.
EMPTY_SAMPLE_FRACTION = 1e-3


def _per_sample_cosine(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """The cosine between reference and candidate, per sample; empty samples (both below
    :data:`EMPTY_SAMPLE_FRACTION` of the largest reference sample's norm) count as matching."""
    r = ref.reshape(ref.shape[0], -1).astype(np.float64) if ref.ndim else ref.reshape(1, 1).astype(np.float64)
    c = cand.reshape(r.shape).astype(np.float64)
    ref_norms, cand_norms = np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1)
    floor = EMPTY_SAMPLE_FRACTION * ref_norms.max(initial=0.0)
    empty = (ref_norms * cand_norms == 0) | ((ref_norms < floor) & (cand_norms < floor))
    return np.where(empty, 1.0, (r * c).sum(axis=1) / np.where(empty, 1.0, ref_norms * cand_norms))


def compare_outputs(
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    names: list[str],
    labels: np.ndarray | None,
    budget: Budget,
    inputs: dict[str, np.ndarray] | None = None,
) -> tuple[list[OutputMetrics], list[str], float | None, float | None]:
    """Metrics per output, the budget failures, and the reference/candidate accuracy when labels exist.
    ``inputs``: the data both ran on (an image output that is a residual on an input is judged by the residual)."""
    failures: list[str] = []
    metrics: list[OutputMetrics] = []
    ref_acc = cand_acc = None
    if len(reference) != len(candidate):
        return [], [f"output count differs: reference has {len(reference)}, candidate {len(candidate)}"], None, None
    inputs = inputs or {}
    kinds = _kinds_by_position(budget, names, reference, inputs)
    for name, ref, cand, kind in zip(names, reference, candidate, kinds, strict=True):
        if ref.shape != cand.shape:
            failures.append(f"{name}: shape {list(cand.shape)} differs from the reference's {list(ref.shape)}")
            continue
        finite = np.isfinite(ref) & np.isfinite(cand)
        # NaN and inf must sit where the reference has them (an op's own NaN, e.g. log of a negative input)
        special = ~finite & ~((np.isnan(ref) & np.isnan(cand)) | (np.isinf(ref) & (ref == cand)))
        if special.any():
            failures.append(f"{name}: NaN or infinite values differ from the reference's ({int(special.sum())} values)")
            continue
        ref, cand = np.where(finite, ref, 0), np.where(finite, cand, 0)
        diff = np.abs(cand.astype(np.float64) - ref.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        cosines = _per_sample_cosine(ref, cand)
        rel = max_abs / scale if scale > 0 else max_abs
        item = OutputMetrics(name, max_abs, rel, float(cosines.mean()), worst_cosine=float(cosines.min()), kind=kind)
        if cosines.size > 1:
            item.cosine_stderr = float(cosines.std(ddof=1) / np.sqrt(cosines.size))
        if kind == "logits" and ref.ndim == 2 and ref.shape[1] > 1:
            ref_top, cand_top = ref.argmax(1), cand.argmax(1)
            item.top1_agreement = float((ref_top == cand_top).mean())
            for metric, value in decision_metrics(ref, cand, budget.decisive_margin or DECISIVE_MARGIN).items():
                setattr(item, metric, value)
            if labels is not None and ref_acc is None:
                ref_acc = float((ref_top == labels).mean() * 100)
                cand_acc = float((cand_top == labels).mean() * 100)
        _kind_metrics(item, ref, cand, inputs)
        metrics.append(item)
        failures.extend(_budget_misses(item, budget))
    if budget.max_accuracy_drop is not None and ref_acc is not None and ref_acc - cand_acc > budget.max_accuracy_drop:
        failures.append(
            f"accuracy drop {ref_acc - cand_acc:.2f} points > budget {budget.max_accuracy_drop:g} "
            f"({cand_acc:.2f}% vs {ref_acc:.2f}%)"
        )
    return metrics, failures, ref_acc, cand_acc


def _kinds_by_position(budget: Budget, names: list[str], reference: list[np.ndarray], inputs) -> list[str]:
    """Each output's kind as the build resolved it (by name, else by position: a PyTorch reference may name its
    outputs differently), or resolved here from ``--outputs`` and the values."""
    resolved = budget.output_kinds
    if resolved and len(resolved) == len(names):
        return [resolved.get(name, kind) for name, kind in zip(names, resolved.values(), strict=True)]
    return list(resolve_kinds(names, reference, inputs, None, budget.outputs or ()).values())


def _kind_metrics(item: OutputMetrics, ref: np.ndarray, cand: np.ndarray, inputs: dict[str, np.ndarray]) -> None:
    """The checks of regression, multilabel and image outputs (class scores are done by the caller)."""
    if item.kind == "regression":
        item.correlation = correlation(ref, cand)
    elif item.kind == "multilabel":
        item.element_agreement = element_agreement(ref, cand)
    elif item.kind == "image":
        item.psnr = psnr(ref, cand)
        base = residual_source(ref, inputs)
        if base is not None:
            item.residual_cosine = float(_per_sample_cosine(ref - base, cand - base).mean())


# Each per-output check: the metric, the budget field that limits it, the side of the limit that misses, and the
# metric's perfect value (where budget_slack measures the margin from).
CHECKS = (
    ("max_abs_error", "max_abs_error", "above", 0.0),
    ("max_rel_error", "max_rel_error", "above", 0.0),
    ("cosine_bound", "min_cosine", "below", 1.0),
    ("worst_cosine", "min_worst_cosine", "below", 1.0),
    ("top1_agreement", "min_top1_agreement", "below", 1.0),
    ("decisive_agreement", "min_decisive_agreement", "below", 1.0),
    ("mean_kl", "max_mean_kl", "above", 0.0),
    ("correlation", "min_correlation", "below", 1.0),
    ("element_agreement", "min_element_agreement", "below", 1.0),
    ("psnr", "min_psnr", "below", 100.0),
    ("residual_cosine", "min_cosine", "below", 1.0),
)


def _budget_misses(item: OutputMetrics, budget: Budget) -> list[str]:
    misses = []
    for metric, limit_field, bad_side, _ in CHECKS:
        value, limit = getattr(item, metric), getattr(budget, limit_field)
        if value is None or limit is None:
            continue
        if (bad_side == "above" and value > limit) or (bad_side == "below" and value < limit):
            if metric == "cosine_bound":
                measured = f"cosine {item.cosine:.6g} (less {SAMPLING_MARGIN:g} standard errors: {value:.6g})"
            else:
                measured = f"{metric} {value:.6g}"
            misses.append(f"{item.name}: {measured} {bad_side} budget {limit:g}")
    return misses


def budget_slack(
    metrics: list[OutputMetrics],
    failures: list[str],
    budget: Budget,
    reference_accuracy: float | None,
    candidate_accuracy: float | None,
) -> float:
    """The judge's verdict as one number: the smallest margin to a budget limit over every checked metric, as a
    fraction of the way from a perfect value (1, or 0 for an error) to the limit. 1: as the original; 0: exactly
    at a limit; negative: a miss (-1 for a miss no metric measures, such as a shape or NaN mismatch)."""
    margins = []

    def toward(value: float | None, limit: float | None, perfect: float) -> None:
        if value is not None and limit is not None and limit != perfect:
            margins.append((value - limit) / (perfect - limit))

    for m in metrics:
        for metric, limit_field, _, perfect in CHECKS:
            toward(getattr(m, metric), getattr(budget, limit_field), perfect)
    if reference_accuracy is not None and candidate_accuracy is not None:
        toward(reference_accuracy - candidate_accuracy, budget.max_accuracy_drop, 0.0)
    slack = min(margins, default=1.0)
    return min(slack, -1.0) if failures and slack >= 0 else slack
