"""``deployopt build``: model source → export → graph optimisation → verify → bench → report.

Every stage runs through :class:`~deployopt.rundir.RunDirectory`, so finished stages are reused on a
re-run, lineage lands in ``manifest.json``, and the report explains each step. The build fails (the
report says which metric) when an artifact the user asked for misses its budget (:mod:`deployopt.flow.misses`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployopt.data.calibration import Preprocess
from deployopt.data.plan import DataPlan, DataSources
from deployopt.errors import InputFileError, UsageError
from deployopt.flow.measurement import measure_artifacts
from deployopt.flow.misses import explain_fp32_miss, settle_misses
from deployopt.flow.verification import verify_artifacts
from deployopt.measure.bench import BenchConfig
from deployopt.measure.verify import VerifyConfig
from deployopt.platform.machine import this_machine
from deployopt.reports.model import REFERENCE, BuildReport, VariantReport
from deployopt.rundir import RunDirectory
from deployopt.sources.detect import (
    ModelSource,
    SourceKind,
    SourceOptions,
    artifact_facts,
    inspect_source,
    model_name,
)
from deployopt.sources.huggingface import TASKS
from deployopt.sources.signature import Signature
from deployopt.stages.base import Artifact, BuildContext, Progress, Step
from deployopt.stages.bf16 import Bf16Config, Bf16Step
from deployopt.stages.engine.build import EngineConfig
from deployopt.stages.export import ExportConfig, ExportStep
from deployopt.stages.fp16 import Fp16Config, Fp16Step
from deployopt.stages.graph import GraphConfig, GraphStep
from deployopt.stages.huggingface_files import HuggingFaceFilesStep
from deployopt.stages.int8 import Int8Step
from deployopt.stages.int8.quantize import Int8Config
from deployopt.stages.openvino import OpenVinoStep, Runtime
from deployopt.stages.prune import PruneStep, SparsityCheckStep
from deployopt.stages.prune.methods import PruneConfig
from deployopt.stages.transformer_fusion import TransformerFusionStep
from deployopt.types import StepRecord

DEFAULT_OUT_ROOT = Path("deployopt-out")
# The low-precision variants a build can make beside fp32, each one step; a new variant is one entry here.
VARIANT_STEPS: dict[str, type] = {"fp16": Fp16Step, "int8": Int8Step, "bf16": Bf16Step}
Variant = Literal[tuple(VARIANT_STEPS)]  # type: ignore[valid-type]
HfTask = Literal[TASKS]  # type: ignore[valid-type]


def _silent(message: str) -> None:
    """Default progress sink for library callers that want no output."""


class QuantizedVariants(BaseModel):
    """Which quantized variants ``build`` makes, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    make: tuple[Variant, ...] = Field(
        tuple(VARIANT_STEPS),
        description="variants beside fp32; those this machine cannot make are skipped with the reason",
    )
    required: tuple[Variant, ...] = Field(
        (),
        description="variants asked for by name: one this machine cannot make (bf16 on a CPU without it) stops "
        "the build before it starts, and one that misses its budget fails it (unless another artifact of its "
        "precision passes), where either would otherwise be a note [on the command line: those named, --int8; "
        "in a pipeline: the make list when it is written out]",
    )
    fp16: Fp16Config = Fp16Config()
    int8: Int8Config = Int8Config()
    bf16: Bf16Config = Bf16Config()
    calibration: Path | None = Field(
        None,
        description="int8 calibration data: .npz/.npy, an image folder, or text (.txt/.jsonl) for a text model "
        "[default: the model's dataset; the built-in sentences for a text model]",
    )
    preprocess: Preprocess | None = Field(
        None, description="for an image-folder calibration, e.g. resize=256,crop=224,mean=0.485:0.456:0.406"
    )

    @model_validator(mode="before")
    @classmethod
    def _a_list_names_its_variants(cls, data: Any) -> Any:
        """A variant list written out (a pipeline's ``make: [int8]``) asks for each variant by name."""
        if isinstance(data, dict) and "make" in data and "required" not in data:
            return {**data, "required": data["make"]}
        return data

    def check_required(self, config: BuildConfig) -> None:
        """Stop before anything runs when a variant asked for by name cannot be made on this machine."""
        for variant in self.required:
            if variant not in self.make:
                raise UsageError(f"--{variant} is required but left out of the variants to make (--no-{variant})")
            check = getattr(VARIANT_STEPS[variant], "check_available", None)  # only some depend on the machine
            if check is not None:
                check(config)


class BuildConfig(BaseModel):
    """Everything ``deployopt build`` does, as one typed config (also the shape of a pipeline file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str | None = Field(
        None,
        description="architecture for a state_dict: registered name, torchvision model name (resnet18 or "
        "torchvision:resnet18) or pkg.module:factory",
    )
    inputs: tuple[str, ...] = Field(
        (), description="input signature, repeatable; symbolic dims (batch, seq=128) are dynamic"
    )
    trust_pickle: bool = Field(False, description="allow loading a whole pickled nn.Module (runs code from the file)")
    task: HfTask | None = Field(
        None, description="Hugging Face folders: the task to export for [default: from config.json]"
    )
    max_length: int | None = Field(
        None, ge=1, description="Hugging Face text models: tokens per example [default: the model's limit, at most 256]"
    )
    out: Path | None = Field(None, description="run directory [default: deployopt-out/<model name>]")
    triton_repo: Path | None = Field(
        None, description="also write the recommended artifact as a Triton model repository here (deployopt triton)"
    )
    export: ExportConfig = ExportConfig()
    graph: GraphConfig = GraphConfig()
    transformer_fusion: bool = Field(
        True,
        description="Hugging Face transformers: try ONNX Runtime's attention/LayerNorm/GELU fusions as "
        "onnx-fp32-fused, kept only when faster at every benchmarked batch and within the fp32 budget",
    )
    verify: VerifyConfig = VerifyConfig()
    prune: PruneConfig | None = Field(None, description="prune the PyTorch model before export")
    quantize: QuantizedVariants = QuantizedVariants()
    target: Literal["cpu", "tensorrt"] = Field("cpu", description="tensorrt: also build, verify and bench engines")
    runtime: Runtime = Field(
        "auto",
        description="CPU runtimes to build for and recommend from: auto = ONNX Runtime, and OpenVINO when installed",
    )
    engine: EngineConfig = EngineConfig()
    bench: BenchConfig = BenchConfig()
    skip_bench: bool = Field(False, description="skip benchmarking")
    force: bool = Field(False, description="redo every stage even when a cached result exists")
    memory_budget_mb: int | None = Field(
        None,
        ge=16,
        description="memory the build's own batches may take: int8 calibration and verification run in batches "
        "that fit it, timing does not [default: a quarter of the memory free at the start]",
    )
    strict: bool = Field(
        False,
        description="every artifact that misses its budget fails the build, also the candidates deployopt tries on "
        "its own (by default those are not kept, with the reason)",
    )

    @property
    def source_options(self) -> SourceOptions:
        return SourceOptions(
            arch=self.arch,
            inputs=self.inputs,
            trust_pickle=self.trust_pickle,
            task=self.task,
            max_length=self.max_length,
        )

    def data_sources(self, source: ModelSource) -> DataSources:
        """Where this build's data comes from (see :mod:`deployopt.data.plan` for the precedence)."""
        q = self.quantize
        processor = source.huggingface.image_preprocess if source.huggingface else None
        return self.verify.data_sources(
            source.dataset,
            calibration=q.calibration,
            preprocess=q.preprocess or (Preprocess(**processor) if processor else None),
            calibration_samples=q.int8.samples,
            text=source.text,
        )


def require_signature(source: ModelSource) -> Signature:
    if source.signature is None and source.kind is SourceKind.CHECKPOINT and source.arch is None:
        raise InputFileError(
            f"{source.path}: a state_dict holds weights only; pass its architecture with --arch (a registered or "
            "torchvision name, or package.module:Class) and its inputs with --input NAME:SHAPE[:DTYPE]"
        )
    if source.signature is None:
        raise InputFileError(
            f"{source.path}: no input signature is saved with this model; pass --input NAME:SHAPE[:DTYPE] "
            "(e.g. --input input:batch,3,224,224)"
        )
    return source.signature


def plan(config: BuildConfig, huggingface: bool = False) -> list[Step]:
    """The steps of a build, in order; verification and benchmarking of every artifact follow them. A Hugging Face
    folder adds the copy of its tokenizer/processor files and the transformer-fusion candidate."""
    steps: list[Step] = [PruneStep()] if config.prune is not None else []
    steps += [HuggingFaceFilesStep()] if huggingface else []
    steps += [ExportStep(), GraphStep()]
    steps += [TransformerFusionStep()] if huggingface and config.transformer_fusion else []
    if config.prune is not None and config.prune.method == "2:4":
        steps.append(SparsityCheckStep())
    steps += [step() for variant, step in VARIANT_STEPS.items() if variant in config.quantize.make]
    steps.append(OpenVinoStep())
    if config.target == "tensorrt":
        from deployopt.stages.engine import tensorrt_steps

        steps += tensorrt_steps("int8" in config.quantize.make)
    return steps


@dataclass
class BuildState:
    """What one part of a build hands the next: picklable, so the next part may run in another process (``run
    --jobs``) or on another machine (a Ray node that carries the target's label, :mod:`deployopt.flow.fleet`)."""

    model: Path
    config: BuildConfig
    run_root: Path
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report: BuildReport | None = None  # once the artifacts are judged

    def context(self, run: RunDirectory, progress: Progress) -> BuildContext:
        """The build's context in this process, with what the earlier parts made."""
        source = inspect_source(self.model, self.config.source_options)
        data = DataPlan(require_signature(source), self.config.data_sources(source))
        ctx = BuildContext(run, source, data.signature, self.config, data, progress, engine=self.config.engine)
        ctx.artifacts, ctx.steps, ctx.notes = dict(self.artifacts), list(self.steps), list(self.notes)
        return ctx

    def after(self, ctx: BuildContext, report: BuildReport | None = None) -> BuildState:
        return dataclasses.replace(
            self, artifacts=dict(ctx.artifacts), steps=list(ctx.steps), notes=list(ctx.notes), report=report
        )


def prepare(model_path: str | Path, config: BuildConfig = BuildConfig()) -> BuildState:
    """Every check a build can make before it runs (the model, its signature, the data, what was asked for by name):
    a fleet makes them for all its models before any of them starts."""
    source = inspect_source(Path(model_path), config.source_options)
    if source.kind is SourceKind.OPENVINO_IR:
        raise InputFileError(
            f"{source.path}: an OpenVINO IR is already a deployable artifact; build starts from the PyTorch or ONNX "
            "model it came from (deployopt verify / bench take the IR as it is)"
        )
    signature = require_signature(source)
    if config.target == "tensorrt":
        from deployopt.stages.engine import require_tensorrt_target

        require_tensorrt_target(config.engine)
    if config.triton_repo is not None:  # asked for: a missing schema package is an error now, not after the build
        from deployopt.serving.triton import model_config_pb2

        model_config_pb2()
    if config.runtime == "openvino":  # asked for by name: missing is an error now, not a skipped step later
        from deployopt.runners.openvino_runner import import_openvino

        import_openvino()
    config.quantize.check_required(config)
    DataPlan(signature, config.data_sources(source)).check()
    return BuildState(source.path, config, config.out or DEFAULT_OUT_ROOT / model_name(source))


def build(model_path: str | Path, config: BuildConfig = BuildConfig(), progress: Progress = _silent) -> BuildReport:
    """Build, verify and benchmark every artifact of ``model_path``; see the module docstring."""
    state = prepare(model_path, config)
    with RunDirectory(state.run_root, force=config.force) as run:
        ctx = state.context(run, progress)
        _make(ctx)
        return measure_artifacts(ctx, _judge(ctx))


def make_artifacts(state: BuildState, progress: Progress = _silent) -> BuildState:
    """The first part of a build on its own: every step of the plan, each artifact made (or reused)."""
    with RunDirectory(state.run_root, force=state.config.force) as run:
        ctx = state.context(run, progress)
        _make(ctx)
        return state.after(ctx)


def judge_artifacts(state: BuildState, progress: Progress = _silent, *, make: bool = False) -> BuildState:
    """The second part on its own (``make``: the first too, in one context): every artifact verified against the
    original, on the CPU this runs on."""
    with RunDirectory(state.run_root, force=state.config.force) as run:
        ctx = state.context(run, progress)
        if make:
            _make(ctx)
        return state.after(ctx, _judge(ctx))


def complete_build(state: BuildState, progress: Progress = _silent) -> BuildReport:
    """The last part on its own: the judged artifacts benchmarked on this machine, the reports written."""
    with RunDirectory(state.run_root, force=state.config.force) as run:
        return measure_artifacts(state.context(run, progress), state.report)


def _make(ctx: BuildContext) -> None:
    ctx.run.manifest["source"] = ctx.source.to_json()
    ctx.run.manifest["signature"] = ctx.signature.to_json()
    ctx.run.save()
    for step in plan(ctx.config, ctx.source.kind is SourceKind.HUGGINGFACE):
        step.run(ctx)


def _judge(ctx: BuildContext) -> BuildReport:
    """The report so far: every artifact verified, the fp32 miss explained, the miss policy applied."""
    source, data, config = ctx.source, ctx.data, ctx.config
    ctx.notes += [n for n in data.signature_for_generated_inputs.default_sized() if n not in ctx.notes]
    report = BuildReport(
        model=model_name(source),
        run_dir=str(ctx.run.root),
        source=source.to_json(),
        data=data.verification.origin,
        samples=data.verification.num_samples,
        batch_sizes=list(config.bench.batch_sizes),
        threads=config.bench.resolved_threads(),
        stages=ctx.steps,
        notes=ctx.notes,
    )
    facts = artifact_facts(source.path)
    reference = VariantReport(
        REFERENCE if source.kind.is_torch else "onnx-original",
        str(source.path),
        facts["precision"],
        facts["size_bytes"],
        role="reference",
        runtime=ctx.reference.backend,
    )
    report.variants.append(reference)
    verify_artifacts(ctx, report)
    report.notes += explain_fp32_miss(ctx, report)
    settle_misses(report, config)
    report.verified_on = this_machine()
    return report
