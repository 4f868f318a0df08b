"""Verification: run a reference and a candidate on the same inputs and hold the differences to a budget.

Per output (matched by position) it reports the max absolute error, the max error relative to the
reference's range (``max|c−r| / max|r|``, a scale-free figure that does not explode near zero), the mean
per-sample cosine similarity and, for classifier scores (2-D, more than one class), four views of the decision:
raw top-1 agreement, agreement on the *decisive* samples (the reference's top-1 leads its runner-up by a margin
of probability; a near-tie that any rounding flips does not count), whether the reference's top-1 stays in the
candidate's top-5, and the mean KL divergence between the two class distributions (damage spread over every
sample). With labels, both models' task accuracy. Budgets default by the candidate's precision and every field
can be overridden; a miss names the metric, its value and its limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployopt.data.eval_data import EvalData
from deployopt.data.plan import DataSources
from deployopt.errors import DeployoptError, InputFileError, StageError, UsageError, error_reason
from deployopt.measure.budgets import DECISIVE_MARGIN, Budget, BudgetOverrides
from deployopt.measure.classes import are_class_scores, decision_metrics
from deployopt.runners import Runner, RunnerSpec, create_runner

# The cosine budget holds the mean cosine less two standard errors: a mean that clears its limit by less than the
# sampling error of its data is as likely as not to miss it on another sample of the same kind of input (an
# accuracy search that stops at the budget's edge would otherwise ship exactly such candidates).
SAMPLING_MARGIN = 2.0


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

    @property
    def cosine_bound(self) -> float:
        """The mean cosine less :data:`SAMPLING_MARGIN` standard errors: what the cosine budget holds."""
        return self.cosine - SAMPLING_MARGIN * (self.cosine_stderr or 0.0)


@dataclass
class VerifyResult:
    reference: str
    candidate: str
    budget: Budget
    samples: int
    data_origin: str
    outputs: list[OutputMetrics] = field(default_factory=list)
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None
    failures: list[str] = field(default_factory=list)
    seconds: float | None = None  # how long verification took (build records it)
    cached: bool = False  # reused from the run directory instead of run again

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def accuracy_drop(self) -> float | None:
        if self.reference_accuracy is None or self.candidate_accuracy is None:
            return None
        return self.reference_accuracy - self.candidate_accuracy

    def to_json(self) -> dict:
        return (
            {
                "reference": self.reference,
                "candidate": self.candidate,
                "passed": self.passed,
                "failures": self.failures,
                "samples": self.samples,
                "data": self.data_origin,
                "budget": self.budget.model_dump(),
                "reference_accuracy": self.reference_accuracy,
                "candidate_accuracy": self.candidate_accuracy,
                "accuracy_drop": self.accuracy_drop,
                "outputs": [vars(o) for o in self.outputs],
            }
            | ({"seconds": self.seconds} if self.seconds is not None else {})
            | ({"cached": True} if self.cached else {})
        )

    @classmethod
    def from_json(cls, data: dict) -> VerifyResult:
        return cls(
            reference=data["reference"],
            candidate=data["candidate"],
            budget=Budget(**data["budget"]),
            samples=data["samples"],
            data_origin=data["data"],
            outputs=[OutputMetrics(**o) for o in data["outputs"]],
            reference_accuracy=data["reference_accuracy"],
            candidate_accuracy=data["candidate_accuracy"],
            failures=list(data["failures"]),
            seconds=data.get("seconds"),
            cached=bool(data.get("cached", False)),
        )

    def summary(self) -> str:
        """One line per build step: each output's errors, the accuracies, the data, the verdict."""
        parts = []
        for o in self.outputs:
            text = f"{o.name}: max abs {o.max_abs_error:.3g}, max rel {o.max_rel_error:.3g}, cosine {o.cosine:.6f}"
            if o.cosine_stderr:
                text += f" ±{o.cosine_stderr:.2g} (s.e.)"
            if o.worst_cosine is not None:
                text += f" (worst sample {o.worst_cosine:.6f})"
            if o.top1_agreement is not None:
                text += f", top-1 agreement {o.top1_agreement * 100:.2f}%"
            if o.decisive_samples is not None:
                decisive = f"{o.decisive_agreement * 100:.2f}%" if o.decisive_agreement is not None else "–"
                text += f" ({decisive} on {o.decisive_samples} decisive samples)"
            if o.top5_containment is not None:
                text += f", top-5 containment {o.top5_containment * 100:.2f}%, mean KL {o.mean_kl:.3g}"
            parts.append(text)
        if self.candidate_accuracy is not None:
            parts.append(f"accuracy {self.candidate_accuracy:.2f}% vs reference {self.reference_accuracy:.2f}%")
        return f"{'; '.join(parts)} on {self.samples} samples of {self.data_origin} → {self.verdict}"

    def headline(self) -> dict[str, float]:
        """The judge's numbers in brief, worst over the outputs: what a search's attempt table shows."""
        worst = {
            "cosine": min,
            "worst_cosine": min,
            "top1_agreement": min,
            "decisive_agreement": min,
            "top5_containment": min,
            "mean_kl": max,
        }
        numbers = {}
        for metric, pick in worst.items():
            values = [getattr(o, metric) for o in self.outputs if getattr(o, metric) is not None]
            if values:
                numbers[metric] = pick(values)
        if self.candidate_accuracy is not None:
            numbers["accuracy"] = self.candidate_accuracy
        return numbers

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "FAIL: " + "; ".join(self.failures)


@dataclass
class CollectedOutputs:
    names: list[str]
    arrays: list[np.ndarray]


def collect_outputs(runner: Runner, data: EvalData, batch_size: int, reference: bool = True) -> CollectedOutputs:
    """Run every batch of ``data`` and concatenate each output along the batch axis."""
    names: list[str] = []
    chunks: list[list[np.ndarray]] = []
    for feeds in data.batches(batch_size):
        try:
            outputs = runner.infer(feeds)
        except DeployoptError:
            raise
        except Exception as exc:  # the runtime's own error types: ORT's Fail/InvalidArgument, torch's RuntimeError
            raise inference_failure(runner.spec.path, data.origin, exc, reference) from exc
        if not chunks:
            names = list(outputs)
            chunks = [[] for _ in outputs]
        for store, value in zip(chunks, outputs.values(), strict=False):
            store.append(np.asarray(value))
    return CollectedOutputs(names, [np.concatenate(parts) if parts[0].ndim else parts[0] for parts in chunks])


def inference_failure(path: str, origin: str, exc: Exception, reference: bool) -> DeployoptError:
    """The one-line error for a model that raised on the data: whose fault it is decides the exit code."""
    why = error_reason(exc)
    if not reference:  # the original ran on the same data: the artifact deployopt made is broken
        return StageError(f"{path}: this artifact fails on {origin} inputs the original runs ({why})")
    if origin.startswith("generated"):
        return UsageError(
            f"{path}: the model fails on generated inputs ({why}); its inputs need meaningful values "
            "(scales, indices, masks): pass real inputs with --data FILE.npz"
        )
    return InputFileError(f"{path}: the model fails on the inputs in {origin} ({why}); check the data")


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
) -> tuple[list[OutputMetrics], list[str], float | None, float | None]:
    """Metrics per output, the budget failures, and the reference/candidate accuracy when labels exist."""
    failures: list[str] = []
    metrics: list[OutputMetrics] = []
    ref_acc = cand_acc = None
    if len(reference) != len(candidate):
        return [], [f"output count differs: reference has {len(reference)}, candidate {len(candidate)}"], None, None
    for name, ref, cand in zip(names, reference, candidate, strict=True):
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
        item = OutputMetrics(name, max_abs, rel, float(cosines.mean()), worst_cosine=float(cosines.min()))
        if cosines.size > 1:
            item.cosine_stderr = float(cosines.std(ddof=1) / np.sqrt(cosines.size))
        if are_class_scores(ref, budget.outputs or "auto"):
            ref_top, cand_top = ref.argmax(1), cand.argmax(1)
            item.top1_agreement = float((ref_top == cand_top).mean())
            for metric, value in decision_metrics(ref, cand, budget.decisive_margin or DECISIVE_MARGIN).items():
                setattr(item, metric, value)
            if labels is not None and ref_acc is None:
                ref_acc = float((ref_top == labels).mean() * 100)
                cand_acc = float((cand_top == labels).mean() * 100)
        metrics.append(item)
        failures.extend(_budget_misses(item, budget))
    if budget.max_accuracy_drop is not None and ref_acc is not None and ref_acc - cand_acc > budget.max_accuracy_drop:
        failures.append(
            f"accuracy drop {ref_acc - cand_acc:.2f} points > budget {budget.max_accuracy_drop:g} "
            f"({cand_acc:.2f}% vs {ref_acc:.2f}%)"
        )
    return metrics, failures, ref_acc, cand_acc


# Each per-output check: the metric, the budget field that limits it, and the side of the limit that misses.
CHECKS = (
    ("max_abs_error", "max_abs_error", "above"),
    ("max_rel_error", "max_rel_error", "above"),
    ("cosine_bound", "min_cosine", "below"),
    ("worst_cosine", "min_worst_cosine", "below"),
    ("top1_agreement", "min_top1_agreement", "below"),
    ("decisive_agreement", "min_decisive_agreement", "below"),
    ("mean_kl", "max_mean_kl", "above"),
)


def _budget_misses(item: OutputMetrics, budget: Budget) -> list[str]:
    misses = []
    for metric, limit_field, bad_side in CHECKS:
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
        for metric, limit_field, bad_side in CHECKS:
            toward(getattr(m, metric), getattr(budget, limit_field), 0.0 if bad_side == "above" else 1.0)
    if reference_accuracy is not None and candidate_accuracy is not None:
        toward(reference_accuracy - candidate_accuracy, budget.max_accuracy_drop, 0.0)
    slack = min(margins, default=1.0)
    return min(slack, -1.0) if failures and slack >= 0 else slack


def verify(
    reference: RunnerSpec,
    candidate: RunnerSpec,
    data: EvalData,
    budget: Budget,
    batch_size: int = 32,
    reference_outputs: CollectedOutputs | None = None,
) -> VerifyResult:
    """Compare ``candidate`` with ``reference`` on ``data``; pass precomputed reference outputs to reuse them."""
    if reference_outputs is None:
        with create_runner(reference) as ref_runner:
            reference_outputs = collect_outputs(ref_runner, data, batch_size)
    with create_runner(candidate) as cand_runner:
        candidate_outputs = collect_outputs(cand_runner, data, batch_size, reference=False)
    metrics, failures, ref_acc, cand_acc = compare_outputs(
        reference_outputs.arrays, candidate_outputs.arrays, candidate_outputs.names, data.labels, budget
    )
    return VerifyResult(
        reference.path, candidate.path, budget, data.num_samples, data.origin, metrics, ref_acc, cand_acc, failures
    )


@dataclass
class Judge:
    """One verification, applied to any number of candidates: the reference runs once on ``data`` and every
    candidate is compared with those very outputs under ``budget``. The accuracy searches (fp16, int8) and the
    final check of an artifact use the same judge, so a candidate a search accepts cannot fail the final check.

    ``shared_outputs`` supplies the reference's outputs from a cache shared with other judges (a build runs its
    original once for every precision); without it the judge runs the reference itself, on first use."""

    reference: RunnerSpec
    data: EvalData
    budget: Budget
    batch_size: int = 32
    shared_outputs: Callable[[], CollectedOutputs] | None = None
    _outputs: CollectedOutputs | None = field(default=None, repr=False)

    def reference_outputs(self) -> CollectedOutputs:
        if self._outputs is None:
            if self.shared_outputs is not None:
                self._outputs = self.shared_outputs()
            else:
                with create_runner(self.reference) as runner:
                    self._outputs = collect_outputs(runner, self.data, self.batch_size)
        return self._outputs

    def detached(self) -> Judge:
        """This judge with the reference's outputs in hand and no tie to the build: what a candidate's own
        process (:mod:`deployopt.isolation`) receives, so it judges with the very same numbers."""
        return dataclasses.replace(self, shared_outputs=None, _outputs=self.reference_outputs())

    def __call__(self, candidate: RunnerSpec) -> VerifyResult:
        outputs = self.reference_outputs()
        return verify(self.reference, candidate, self.data, self.budget, self.batch_size, outputs)

    def in_own_process(self, candidate: RunnerSpec, label: str, progress) -> VerifyResult:
        """This judgement with the candidate run in a process of its own (:mod:`deployopt.isolation`): a runtime
        that crashes on it makes a failing verdict that names the signal, instead of ending the build."""
        from deployopt.errors import RuntimeCrashError
        from deployopt.isolation import run_isolated

        try:
            return run_isolated(label, _judge, {"judge": self.detached(), "candidate": candidate}, progress)
        except RuntimeCrashError as exc:
            failure = f"crashed: {exc}"
            return VerifyResult(
                self.reference.path, candidate.path, self.budget, self.data.num_samples, self.data.origin,
                failures=[failure],
            )  # fmt: skip


def _judge(judge: Judge, candidate: RunnerSpec) -> VerifyResult:
    return judge(candidate)


class VerifyConfig(BaseModel):
    """Which data to verify on and the budget overrides (``None`` fields keep the precision's default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path | None = Field(
        None,
        description="verification inputs: .npz with one array per input name (and 'labels'); for a text model also "
        ".txt (one example per line) or .jsonl (text, label)",
    )
    labels: Path | None = Field(None, description=".npz/.npy with integer labels, one per sample")
    dataset_split: str = Field("test", description="split of the model's registered dataset, when it has one")
    samples: int = Field(64, ge=1, description="number of generated samples when no real data is given")
    batch_size: int = Field(32, ge=1, description="batch size the verification runs at")
    seed: int = Field(0, description="seed of generated inputs and dataset splits")
    budget: BudgetOverrides = BudgetOverrides()

    def data_sources(self, dataset: str | None = None, **calibration) -> DataSources:
        """This config's verification data, with the model's dataset and any calibration settings
        (``calibration``, ``preprocess``, ``calibration_samples``), for :class:`~deployopt.data.plan.DataPlan`."""
        return DataSources(
            data=self.data,
            labels=self.labels,
            dataset=dataset,
            samples=self.samples,
            split=self.dataset_split,
            seed=self.seed,
            **calibration,
        )
