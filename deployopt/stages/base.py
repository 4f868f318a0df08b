"""The stage interface: what one step of ``build`` receives, and what it must leave behind.

A build is a loop over a plan of :class:`Step` objects (:func:`deployopt.flow.build.plan`). Every step reads
what earlier steps produced from the shared :class:`BuildContext`, runs its transform through the run
directory (so it is cached by content and recorded in the manifest), registers the artifacts it made, and
appends a :class:`~deployopt.types.StepRecord` that says in one line what it did. A step that cannot run
here records why (``skip``) instead of failing silently. Adding a stage is one step class and one plan entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from deployopt.data.eval_data import data_fingerprint
from deployopt.data.memory import MemoryBudget, MemoryPlan, activation_bytes_per_sample
from deployopt.measure.budgets import resolve_budget
from deployopt.measure.kinds import classify_outputs, kinds_note
from deployopt.measure.verify import CollectedOutputs, Judge, collect_outputs
from deployopt.platform.machine import cpu_key, this_machine
from deployopt.rundir import RunDirectory, StageOutcome
from deployopt.runners import RunnerSpec, create_runner, reference_spec
from deployopt.stages.precision_search import AttemptTiming
from deployopt.types import ONNX_FP32, PrecisionSearch, StepRecord

if TYPE_CHECKING:
    from deployopt.data.plan import DataPlan
    from deployopt.flow.build import BuildConfig
    from deployopt.sources.detect import ModelSource
    from deployopt.sources.signature import Signature
    from deployopt.stages.engine.build import EngineConfig

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Artifact:
    """A file a step produced, by the variant name the report shows."""

    path: Path
    sha256: str


@dataclass
class BuildContext:
    """Everything steps share during one build."""

    run: RunDirectory
    source: ModelSource  # the original: every artifact is verified against it
    signature: Signature
    config: BuildConfig
    data: DataPlan
    progress: Progress
    engine: EngineConfig  # a 2:4 check may switch on sparse kernels for the engine steps
    export_source: ModelSource | None = None  # what the export step exports (the pruned model after a prune step)
    exported: Artifact | None = None  # the raw ONNX graph (the source itself when it is ONNX)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    # an int8 variant → its kept settings in Q/DQ form, which OpenVINO converts (the variant may be QOperator)
    qdq_graphs: dict[str, Artifact] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    _reference_outputs: CollectedOutputs | None = field(default=None, repr=False)
    _output_kinds: dict[str, str] | None = field(default=None, repr=False)
    _memory: tuple[MemoryPlan | None, Artifact | None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.export_source is None:
            self.export_source = self.source

    @property
    def reference(self) -> RunnerSpec:
        """The original, as every artifact is judged against it."""
        return reference_spec(self.source)

    def attempt_timing(self) -> AttemptTiming | None:
        """How a precision search times its attempts: beside the optimised fp32 graph on ONNX Runtime at the smallest
        benchmarked batch, with the benchmark's threads; None under ``--no-bench`` (nothing is timed)."""
        if self.config.skip_bench or ONNX_FP32 not in self.artifacts:
            return None
        bench = self.config.bench
        fp32 = RunnerSpec("onnxruntime", str(self.artifacts[ONNX_FP32].path), threads=bench.threads)
        return AttemptTiming(fp32, min(bench.batch_sizes), bench.threads)

    def memory(self) -> MemoryPlan | None:
        """The build's memory budget (resolved once) with the bytes of activations one sample makes in the fp32
        graph (estimated once that graph exists, from the export before); None where no budget can be known."""
        graph = self.artifacts.get(ONNX_FP32, self.exported)
        if self._memory is None or self._memory[1] != graph:
            plan = self._memory[0] if self._memory else None
            budget = plan.budget if plan else MemoryBudget.resolve(self.config.memory_budget_mb)
            per_sample = None
            if budget is not None and graph is not None and graph.path.suffix == ".onnx":
                per_sample = activation_bytes_per_sample(graph.path, self.data.verification.take(range(1)))
            self._memory = (MemoryPlan(budget, per_sample) if budget else None, graph)
        return self._memory[0]

    def batch_within_memory(self, wanted: int, what: str | None, copies: int = 1) -> int:
        """``wanted``, or the largest batch whose activations fit the memory budget; the notes say so once for
        ``what`` (None: an analysis that may not run at all)."""
        plan = self.memory()
        batch = plan.batch(wanted, copies) if plan is not None else wanted
        if batch < wanted and what is not None:
            note = f"{what} runs at batch {batch} instead of {wanted}: {plan.describe()}"
            if note not in self.notes:
                self.notes.append(note)
                self.progress(note)
        return batch

    def reference_outputs(self) -> CollectedOutputs:
        """The original's outputs on the verification data, run once per build: the fp16 search and the
        final verification judge with the very same numbers."""
        if self._reference_outputs is None:
            self.progress("verify: running the reference on the verification data")
            with create_runner(self.reference) as runner:
                batch = self.batch_within_memory(self.config.verify.batch_size, "verification")
                self._reference_outputs = collect_outputs(runner, self.data.verification, batch)
        return self._reference_outputs

    def judge(self, precision: str) -> Judge:
        """The final verification of an artifact of ``precision``: the original's outputs on the verification
        data, the precision's budget (relaxed for a pruned model, with the user's overrides), the same batch."""
        verify = self.config.verify
        budget = resolve_budget(precision, verify.budget, pruned=self.config.prune)
        budget = budget.model_copy(update={"output_kinds": self.output_kinds()})
        batch = self.batch_within_memory(verify.batch_size, "verification")
        return Judge(self.reference, self.data.verification, budget, batch, self.reference_outputs)

    def output_kinds(self) -> dict[str, str]:
        """Each output's kind (:mod:`deployopt.measure.kinds`), resolved once per build — from ``--outputs``, the
        fp32 graph's heads and the original's outputs — so every judge applies the same checks to every artifact."""
        if self._output_kinds is None:
            outputs, graph = self.reference_outputs(), self.artifacts.get(ONNX_FP32, self.exported)
            declared = self.config.verify.budget.outputs or ()
            inputs = self.data.verification.inputs
            path = graph.path if graph else None
            kinds = classify_outputs(outputs.names, outputs.arrays, inputs, path, declared, self.source.output_kind)
            self._output_kinds = {name: kind for name, (kind, _) in kinds.items()}
            if (note := kinds_note(kinds)) not in self.notes:  # a later part of the build, in another process
                self.notes.append(note)
        return self._output_kinds

    def verification_key(self, artifact_sha256: str, judge: Judge) -> dict:
        """What a verification result depends on: the original, the artifact's bytes, the data, the budget and
        the batch, and the CPU (its kernels are the ones judged) — the cache key of ``verify:<variant>``."""
        return {
            "cpu": cpu_key(this_machine()),
            "reference": self.source.sha256,
            "candidate": artifact_sha256,
            "data": data_fingerprint(judge.data),
            "budget": judge.budget.model_dump(),
            "batch": judge.batch_size,
        }

    def add_artifact(self, name: str, outcome: StageOutcome, label: str = "model") -> Artifact:
        artifact = Artifact(outcome.output(label), outcome.record["outputs"][label]["sha256"])
        self.artifacts[name] = artifact
        return artifact

    def record(self, stage: str, outcome: StageOutcome, summary: str, search: PrecisionSearch | None = None) -> None:
        self.steps.append(StepRecord(stage, outcome.cached, outcome.record["seconds"], summary, search))
        if outcome.cached:
            self.progress(f"{stage}: reused from the run directory (same inputs, config and tool versions)")

    def skip(self, stage: str, reason: str) -> None:
        """A step that cannot run here: the report's step list and notes say why, and so does the terminal."""
        self.steps.append(StepRecord.skipped(stage, reason))
        note = f"{stage} skipped: {reason}"
        self.notes.append(note)
        self.progress(note)


class Step(Protocol):
    """One stage of a build. ``name`` is its run-directory stage key and its line in the report."""

    name: str

    def run(self, ctx: BuildContext) -> None: ...
