"""Verification: run a reference and a candidate on the same inputs and hold the differences to a budget.

Both run batch by batch (:func:`collect_outputs`); the comparison itself, output by output and by each output's
kind, is :mod:`.compare`. :class:`Judge` is the one verification a build applies to every candidate, in every
search and in the final check. Budgets default by the candidate's precision and every field can be overridden.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployopt.data.eval_data import EvalData
from deployopt.data.plan import DataSources
from deployopt.errors import DeployoptError, InputFileError, StageError, UsageError, error_reason
from deployopt.measure.budgets import Budget, BudgetOverrides
from deployopt.measure.compare import OutputMetrics, budget_slack, compare_outputs
from deployopt.measure.kinds import resolve_kinds
from deployopt.runners import Runner, RunnerSpec, create_runner


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
        parts = [o.describe() for o in self.outputs]
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
            "correlation": min,
            "element_agreement": min,
            "psnr": min,
            "residual_cosine": min,
        }
        # the element-wise errors only where the budget bounds them (they always are measured)
        worst |= {error: max for error in ("max_abs_error", "max_rel_error") if getattr(self.budget, error) is not None}
        numbers = {}
        for metric, pick in worst.items():
            values = [getattr(o, metric) for o in self.outputs if getattr(o, metric) is not None]
            if values:
                numbers[metric] = pick(values)
        if self.candidate_accuracy is not None:
            numbers["accuracy"] = self.candidate_accuracy
        return numbers

    @property
    def slack(self) -> float:
        """The judge's margin to the budget as one number (:func:`~.compare.budget_slack`): what a search's plot
        puts against speed, with the budget's line at 0."""
        return budget_slack(self.outputs, self.failures, self.budget, self.reference_accuracy, self.candidate_accuracy)

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
    if not budget.output_kinds:  # not resolved by a build: from an ONNX graph of the two, and the values
        graph = next((p for p in (reference.path, candidate.path) if str(p).endswith(".onnx")), None)
        kinds = resolve_kinds(
            reference_outputs.names, reference_outputs.arrays, data.inputs, graph, budget.outputs or ()
        )
        budget = budget.model_copy(update={"output_kinds": kinds})
    metrics, failures, ref_acc, cand_acc = compare_outputs(
        reference_outputs.arrays, candidate_outputs.arrays, candidate_outputs.names, data.labels, budget, data.inputs
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


def judge_in_own_process(judgements: dict[str, tuple[Judge, RunnerSpec]], progress) -> dict[str, VerifyResult]:
    """Each judgement (a label → its judge and candidate) with the candidates run outside this process
    (:mod:`deployopt.isolation`): all in one process first, one start-up for a build's artifacts; when that process
    dies, each again in its own, so a runtime that crashes makes a failing verdict — naming the signal — for the
    artifact it crashed on, instead of ending the build."""
    from deployopt.errors import RuntimeCrashError
    from deployopt.isolation import run_isolated

    jobs = {label: (judge.detached(), candidate) for label, (judge, candidate) in judgements.items()}
    if not jobs:
        return {}
    if len(jobs) > 1:
        try:
            return run_isolated("verify " + ", ".join(jobs), _judge_all, {"jobs": jobs}, progress)
        except RuntimeCrashError:
            pass  # find the artifact it crashed on
    results = {}
    for label, (judge, candidate) in jobs.items():
        try:
            results |= run_isolated(f"verify {label}", _judge_all, {"jobs": {label: (judge, candidate)}}, progress)
        except RuntimeCrashError as exc:
            data = judge.data
            results[label] = VerifyResult(
                judge.reference.path, candidate.path, judge.budget, data.num_samples, data.origin,
                failures=[f"crashed: {exc}"],
            )  # fmt: skip
    return results


def _judge_all(jobs: dict[str, tuple[Judge, RunnerSpec]]) -> dict[str, VerifyResult]:
    results = {}
    for label, (judge, candidate) in jobs.items():
        started = time.perf_counter()
        results[label] = judge(candidate)
        results[label].seconds = round(time.perf_counter() - started, 3)
    return results


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
