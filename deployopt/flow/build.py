"""``deployopt build``: model source → export → graph optimisation → verify → bench → report.

Every stage runs through :class:`~deployopt.rundir.RunDirectory`, so finished stages are reused on a
re-run, lineage lands in ``manifest.json``, and the report explains each step. The build fails (the
report says which metric) when an artifact the user asked for misses its budget (:mod:`deployopt.flow.misses`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployopt.data.calibration import Preprocess
from deployopt.data.eval_data import EvalData
from deployopt.data.plan import DataPlan, DataSources
from deployopt.errors import InputFileError, UsageError
from deployopt.flow.misses import explain_fp32_miss, settle_misses
from deployopt.flow.verification import verify_artifacts
from deployopt.fsutil import write_json_atomic, write_text_atomic
from deployopt.measure.bench import BenchConfig, BenchVariant, bench, measurable_batches
from deployopt.measure.verify import VerifyConfig
from deployopt.reports.html import render_html
from deployopt.reports.model import (
    NOT_KEPT,
    REFERENCE,
    BuildReport,
    VariantReport,
    fp16_speed_note,
    render_markdown,
)
from deployopt.reports.recommend import recommend
from deployopt.rundir import RunDirectory
from deployopt.runners import RunnerSpec, reference_spec, spec_for_model
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
from deployopt.stages.base import BuildContext, Progress, Step
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
# The human-readable reports every build writes beside report.json; a new format is one entry here.
REPORT_FILES = {"report.md": render_markdown, "report.html": render_html}
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


def build(model_path: str | Path, config: BuildConfig = BuildConfig(), progress: Progress = _silent) -> BuildReport:
    """Build, verify and benchmark every artifact of ``model_path``; see the module docstring."""
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
    steps = plan(config, source.kind is SourceKind.HUGGINGFACE)
    data = DataPlan(signature, config.data_sources(source))
    data.check()
    run_root = config.out or DEFAULT_OUT_ROOT / model_name(source)
    with RunDirectory(run_root, force=config.force) as run:
        run.manifest["source"] = source.to_json()
        run.manifest["signature"] = signature.to_json()
        run.save()
        ctx = BuildContext(run, source, signature, config, data, progress, engine=config.engine)
        for step in steps:
            step.run(ctx)
        ctx.notes += data.signature_for_generated_inputs.default_sized()
        report = BuildReport(
            model=model_name(source),
            run_dir=str(run.root),
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
        if not config.skip_bench:
            sized = data.signature_for_generated_inputs
            contenders = {v.name for v in report.variants[1:] if v.passed and v.runtime in recommended_runtimes(config)}
            _bench_variants(
                run,
                report,
                reference_spec(source),
                {name: a for name, a in ctx.artifacts.items() if report.variant(name).role != NOT_KEPT},
                sized,
                config.bench,
                progress,
                data.real_inputs,
                contenders,
            )
            report.notes += fp16_speed_note(report)
            report.recommendations = recommend(report, recommended_runtimes(config))
        if config.triton_repo is not None:
            report.notes.append(_triton_repository(report, run.root, config.triton_repo))
        write_json_atomic(run.path("report.json"), report.to_json())
        for filename, render in REPORT_FILES.items():
            write_text_atomic(run.path(filename), render(report))
        run.manifest["result"] = {"passed": report.passed, "failures": report.failures}
        run.save()
    return report


def _triton_repository(report: BuildReport, run_dir: Path, repository: Path) -> str:
    """``--triton-repo``: the recommended artifact as a Triton model folder, only when every budget held."""
    from deployopt.serving.triton import TritonConfig, write_models

    if not report.passed:
        return f"triton: no model repository written to {repository}: the build missed a budget"
    (model,) = write_models(report.to_json(), run_dir, repository, TritonConfig(force=True))
    return (
        f"triton: {model.folder} serves {model.variant} ({model.runtime}); config.pbtxt checked against Triton's schema"
        + (f"; {model.caveat}" if model.caveat else "")
    )


def recommended_runtimes(config: BuildConfig) -> tuple[str, ...]:
    """The runtimes whose artifacts may be recommended: ``--runtime`` narrows the CPU runtimes; TensorRT engines
    (``--target tensorrt``) always compete."""
    cpu = ("onnxruntime", "openvino") if config.runtime == "auto" else (config.runtime,)
    return (*cpu, "tensorrt")


def _bench_variants(
    run: RunDirectory,
    report: BuildReport,
    ref_spec: RunnerSpec,
    artifacts: dict,
    signature: Signature,
    config: BenchConfig,
    progress: Progress,
    real_inputs: EvalData | None,
    contenders: set[str],
) -> None:
    report.batches_not_measured = measurable_batches(signature, config.batch_sizes)[1]
    variants = [BenchVariant(report.variants[0].name, ref_spec)]
    variants += [BenchVariant(name, spec_for_model(str(a.path))) for name, a in artifacts.items()]
    started = time.perf_counter()
    crashes: dict[str, str] = {}
    measurements = bench(variants, signature, config, progress, real_inputs, contenders, crashes)
    for m in measurements:
        report.variant(m.variant).latency[m.batch] = m.to_json()
    for name, crash in crashes.items():  # an artifact its runtime cannot run in service is no artifact to ship
        variant = report.variant(name)
        if variant.role == "artifact":
            variant.role = NOT_KEPT
        report.notes.append(f"{name} not benchmarked: {crash}" + (" — not kept" if variant.role == NOT_KEPT else ""))
    run.manifest["metrics"]["bench"] = {
        "config": config.model_dump(mode="json"),
        "measurements": [m.to_json() for m in measurements],
    }
    run.save()
    rounds = max(m.repeats for m in measurements) if measurements else 0
    summary = (
        f"{len(variants)} variants × batch {list(config.batch_sizes)}, {config.resolved_threads()} threads, "
        f"{config.repeats} interleaved round(s) of one worker process each"
        + (
            f", up to {rounds} for the fastest until their order is clear of the noise"
            if rounds > config.repeats
            else ""
        )
        + ", on "
        + (f"the inputs of {real_inputs.origin}, cycled to each batch" if real_inputs else "generated inputs")
        + "; always re-measured (timings are never cached)"
    )
    report.stages.append(StepRecord("bench", False, round(time.perf_counter() - started, 3), summary))
