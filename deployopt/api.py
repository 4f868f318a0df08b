"""The Python API: one documented function per CLI verb. The CLI only parses options and calls these.

>>> from deployopt import api
>>> report = api.build("model.pt", api.BuildConfig(arch="torchvision:resnet18"))
>>> report.passed, report.speedup("onnx-fp32", "pytorch", batch=1)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from deployopt.data.calibration import Preprocess
from deployopt.data.plan import DataPlan, DataSources
from deployopt.errors import InputFileError, UsageError
from deployopt.flow.build import VARIANT_STEPS, BuildConfig, QuantizedVariants, build, require_signature
from deployopt.flow.demo import run_demo
from deployopt.flow.fleet import load_fleet as fleet_members
from deployopt.flow.fleet import run_fleet
from deployopt.flow.pipeline import pipeline_schema, run_pipeline, to_yaml
from deployopt.flow.remeasure import recommend
from deployopt.fsutil import atomic_path, write_json_atomic, write_text_atomic
from deployopt.measure.bench import BenchConfig, BenchVariant, Measurement, bench
from deployopt.measure.budgets import BudgetOverrides, resolve_budget
from deployopt.measure.gate import GateResult, RegressionBudget, compare_reports, load_baseline
from deployopt.measure.verify import Judge, VerifyConfig, VerifyResult
from deployopt.measure.verify import verify as run_verify
from deployopt.platform.doctor import diagnose
from deployopt.platform.tensorrt import EngineSidecar, is_engine_file, read_sidecar, sidecar_path
from deployopt.reports.model import BuildReport
from deployopt.runners import RunnerSpec, reference_spec
from deployopt.runners.options import RuntimeOptions
from deployopt.serving.triton import TritonConfig, TritonModel, write_repository
from deployopt.sources.detect import ModelSource, SourceKind, SourceOptions, artifact_facts, inspect_source
from deployopt.sources.signature import Signature
from deployopt.stages.bf16 import Bf16Config
from deployopt.stages.engine.build import EngineConfig, build_engine
from deployopt.stages.export import ExportConfig, ExportResult, export_onnx
from deployopt.stages.fp16 import Fp16Config, convert_fp16_within_budget
from deployopt.stages.graph import GraphConfig, GraphResult, optimize_graph
from deployopt.stages.int8.quantize import Int8Config
from deployopt.stages.int8.search import quantize_int8
from deployopt.stages.prune.command import PruneOutcome
from deployopt.stages.prune.command import prune as run_prune
from deployopt.stages.prune.methods import PruneConfig
from deployopt.training.command import TrainConfig, train_model
from deployopt.types import Precision

__all__ = [
    "VARIANT_STEPS",
    "BenchConfig",
    "Bf16Config",
    "BudgetOverrides",
    "BuildConfig",
    "EngineConfig",
    "ExportConfig",
    "Fp16Config",
    "GraphConfig",
    "Int8Config",
    "Preprocess",
    "PruneConfig",
    "QuantizeData",
    "QuantizedVariants",
    "RegressionBudget",
    "RuntimeOptions",
    "SourceOptions",
    "TrainConfig",
    "TritonConfig",
    "VerifyConfig",
    "bench_models",
    "build",
    "check_baseline",
    "diagnose",
    "engine",
    "export",
    "fleet_members",
    "inspect_model",
    "load_report",
    "optimize",
    "pipeline_schema",
    "prune",
    "quantize",
    "recommend",
    "run_demo",
    "run_fleet",
    "run_pipeline",
    "save_pipeline",
    "train",
    "triton_repository",
    "verify_models",
]


def triton_repository(
    run_dir: str | Path, repository: str | Path, config: TritonConfig = TritonConfig()
) -> list[TritonModel]:
    """Write a finished build's recommended artifact (``config.all_variants``: every passing variant) as Triton model
    folders ``repository/<name>/config.pbtxt`` + ``1/<model file>``; each config is checked against Triton's
    ModelConfig schema before it is moved into place."""
    return write_repository(run_dir, repository, config)


def save_pipeline(model: str | Path, config: BuildConfig, path: str | Path) -> None:
    """Write ``build model config`` as a pipeline file (only the non-default settings), atomically."""
    write_text_atomic(path, to_yaml(model, config))


def _refuse_overwrite_of_input(source: Path, out: Path) -> None:
    if out.exists() and out.resolve() == source.resolve():
        raise UsageError(f"{out}: the output would overwrite the input model; choose another -o")


def export(
    model: str | Path,
    out: str | Path,
    options: SourceOptions = SourceOptions(),
    config: ExportConfig = ExportConfig(),
    data: str | Path | None = None,
) -> ExportResult:
    """Export a PyTorch model file or Hugging Face folder to ONNX at ``out`` (written atomically); the result names
    the exporter used. With ``data`` (an .npz by input name, or text for a text model) the model is run on its first
    samples instead of generated inputs; a text model without data runs on the built-in sentences."""
    source = inspect_source(Path(model), options)
    if source.kind is SourceKind.ONNX:
        raise UsageError(f"{model}: already an ONNX model; use `deployopt optimize` to optimise it")
    if not source.kind.is_torch:
        raise UsageError(f"{model}: already a {source.kind.value} model; export takes a PyTorch model")
    _refuse_overwrite_of_input(source.path, Path(out))
    signature = require_signature(source)
    real = DataPlan(signature, DataSources(data=Path(data) if data else None, text=source.text)).real_inputs
    example = next(real.batches(2)) if real is not None else None
    with atomic_path(out) as tmp:
        result = export_onnx(source, signature, tmp, config, example)
    return result


def optimize(model: str | Path, out: str | Path, config: GraphConfig = GraphConfig()) -> GraphResult:
    """Graph-optimise an ONNX model into ``out`` (constant folding, dead code, Conv+BN fusion, ...); a pass whose
    result computes other outputs on generated inputs is not kept."""
    from deployopt.data.eval_data import generate_batch

    source = inspect_source(Path(model))
    if source.kind is not SourceKind.ONNX:
        raise InputFileError(f"{model}: is a {source.kind.value} file, not ONNX; run `deployopt export` first")
    _refuse_overwrite_of_input(source.path, Path(out))
    probe = generate_batch(require_signature(source), 2).inputs
    with atomic_path(out) as tmp:
        return optimize_graph(source.path, tmp, config, probe)


@dataclass(frozen=True)
class _Model:
    """A model file as verify and bench see it: its signature, precision and registered dataset."""

    path: Path
    signature: Signature | None
    precision: str
    dataset: str | None = None
    source: ModelSource | None = None  # None for TensorRT engines


def _open_model(path: str | Path, options: SourceOptions) -> _Model:
    if is_engine_file(path):
        sidecar = read_sidecar(path)
        return _Model(Path(path), Signature.from_json(sidecar.signature), sidecar.source_precision)
    source = inspect_source(Path(path), options)
    return _Model(source.path, source.signature, artifact_facts(source.path)["precision"], source.dataset, source)


def inspect_model(model: str | Path, options: SourceOptions = SourceOptions()) -> dict:
    """What deployopt knows about a model file without running it: kind, signature, precision, size, and for
    ONNX the op counts, opset, IR version and external data files; for a TensorRT engine its sidecar."""
    if is_engine_file(model):
        sidecar = read_sidecar(model)
        return {"path": str(model), "kind": "tensorrt-engine", "size_bytes": Path(model).stat().st_size} | {
            "sidecar": sidecar.model_dump(mode="json")
        }
    source = inspect_source(Path(model), options)
    facts = artifact_facts(source.path)
    described = source.to_json() | {"size_bytes": facts["size_bytes"], "precision": str(facts["precision"])}
    if source.kind is SourceKind.ONNX:
        described |= {k: v for k, v in facts.items() if k not in ("precision", "size_bytes")}
    return described


def verify_models(
    reference: str | Path,
    candidate: str | Path,
    options: SourceOptions = SourceOptions(),
    config: VerifyConfig = VerifyConfig(),
    runtime: RuntimeOptions = RuntimeOptions(),
) -> VerifyResult:
    """Run both models on the same inputs and check the candidate against the budget.

    The reference always runs as is (PyTorch eager fp32 on the CPU, or ONNX Runtime CPU); the candidate
    runs where ``runtime`` says, a TensorRT engine on its GPU. The budget defaults by the candidate's
    precision (fp32 / fp16 / int8, read from its graph or engine sidecar); ``config.budget`` overrides
    individual metrics. Real data comes from ``config.data`` or the reference's registered dataset;
    otherwise seeded generated inputs matching the signature are used.
    """
    ref = _open_model(reference, options)
    if ref.source is None:
        raise UsageError(f"{reference}: a TensorRT engine cannot be the reference; pass the PyTorch or ONNX model")
    cand = _open_model(candidate, options)
    signature = ref.signature or cand.signature
    if signature is None:
        raise InputFileError(
            f"{reference}: no input signature is saved with this model; pass --input NAME:SHAPE[:DTYPE]"
        )
    precision = Precision.FP16 if runtime.torch_precision == "fp16" and cand.source is not None else cand.precision
    budget = resolve_budget(precision, config.budget)
    if budget.outputs is None and ref.source.output_kind is not None:  # what the task says its outputs are
        budget = budget.model_copy(update={"outputs": (ref.source.output_kind[0],)})
    data = DataPlan(signature, config.data_sources(ref.dataset, text=ref.source.text)).verification
    return run_verify(reference_spec(ref.source), runtime.spec(cand.path, options), data, budget, config.batch_size)


def bench_models(
    models: list[str | Path],
    options: SourceOptions = SourceOptions(),
    config: BenchConfig = BenchConfig(),
    progress=lambda message: None,
    runtime: RuntimeOptions = RuntimeOptions(),
    data: str | Path | None = None,
) -> list[Measurement]:
    """Measure every model in one invocation, each in its own worker process, at each batch size; on the real
    inputs in ``data`` (cycled to each batch size) when given, else on generated ones."""
    if not models:
        raise UsageError("bench needs at least one model file")
    opened = [_open_model(m, options) for m in models]
    signature = next((m.signature for m in opened if m.signature is not None), None)
    if signature is None:
        raise InputFileError(
            f"{models[0]}: no input signature is saved with this model; pass --input NAME:SHAPE[:DTYPE]"
        )
    text = next((m.source.text for m in opened if m.source is not None and m.source.text is not None), None)
    real = DataPlan(signature, DataSources(data=Path(data) if data else None, text=text)).real_inputs
    labels = _unique_labels([m.path for m in opened])
    variants = [BenchVariant(label, runtime.spec(m.path, options)) for label, m in zip(labels, opened, strict=True)]
    return bench(variants, signature, config, progress, real)


def _unique_labels(paths: list[Path]) -> list[str]:
    """Short labels for the table: file names, or parent/file when names repeat."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def engine(
    model: str | Path,
    out: str | Path | None = None,
    config: EngineConfig = EngineConfig(),
    options: SourceOptions = SourceOptions(),
) -> EngineSidecar:
    """Build a TensorRT engine from an ONNX model; writes ``out`` (default: MODEL with .plan) and its sidecar.

    Precision follows the ONNX graph (fp32, fp16-converted, or Q/DQ int8 from ``quantize --target
    tensorrt``). Without TensorRT or a GPU this raises :class:`BackendUnavailableError` (exit 5).
    """
    source = inspect_source(Path(model), options)
    if source.kind is not SourceKind.ONNX:
        raise InputFileError(
            f"{model}: is a {source.kind.value} file; engine takes ONNX — run `deployopt export` first"
        )
    out = Path(out) if out is not None else source.path.with_suffix(".plan")
    _refuse_overwrite_of_input(source.path, out)
    sidecar = build_engine(source.path, out, require_signature(source), config)
    write_json_atomic(sidecar_path(out), sidecar.model_dump(mode="json"))
    return sidecar


def check_baseline(
    report: BuildReport, baseline: str | Path, budget: RegressionBudget = RegressionBudget()
) -> GateResult:
    """Compare a build with the ``report.json`` of an earlier one (accuracy, size, noise-aware latency).

    The result is also written to ``baseline-check.json`` in the build's run directory.
    """
    gate = compare_reports(report.to_json(), load_baseline(baseline), budget, str(baseline))
    if Path(report.run_dir).is_dir():
        write_json_atomic(Path(report.run_dir) / "baseline-check.json", gate.to_json())
    return gate


def load_report(path: str | Path) -> BuildReport:
    """A finished build's report.json, for ``verify --baseline`` on reports CI kept as artifacts."""
    return BuildReport.from_json(load_baseline(path))


def prune(
    model: str | Path,
    out: str | Path,
    config: PruneConfig = PruneConfig(),
    options: SourceOptions = SourceOptions(),
    bench_config: BenchConfig | None = BenchConfig(),
    progress=lambda message: None,
) -> PruneOutcome:
    """Prune a PyTorch model (channels, 2:4 or magnitude), optionally fine-tune it, save it as TorchScript.

    ``passed`` is False when the test-split accuracy dropped more than ``config.max_accuracy_drop``.
    """
    source = inspect_source(Path(model), options)
    _refuse_overwrite_of_input(source.path, Path(out))
    return run_prune(source, Path(out), config, bench_config, progress)


class QuantizeData(BaseModel):
    """Where ``quantize`` calibrates (verification data is :class:`VerifyConfig`'s; see :mod:`deployopt.data.plan`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calibration: Path | None = Field(None, description="Calibration data: .npz/.npy or a folder of images.")
    preprocess: Preprocess | None = Field(None, description="For image folders, e.g. resize=256,crop=224.")
    dataset: str | None = Field(
        None, description="Registered dataset or a user dataset: calibrate on its 'val' split, verify on 'test'."
    )


@dataclass
class QuantizeOutcome:
    precision: str
    passed: bool
    details: dict  # Int8Result / Fp16Result as JSON
    verify: VerifyResult

    def to_json(self) -> dict:
        return {
            "precision": self.precision,
            "passed": self.passed,
            "details": self.details,
            "verify": self.verify.to_json(),
        }


def train(
    model_name: str, out: str | Path, config: TrainConfig = TrainConfig(), *, resume: bool = False, log=print
) -> dict:
    """``deployopt train``: train registered ``model_name`` into the checkpoint ``out`` (build takes it with no
    flags); returns the metrics, including one row per epoch. ``resume`` continues an interrupted run."""
    return train_model(model_name, out, config, log, resume=resume)


def quantize(
    model: str | Path,
    out: str | Path,
    *,
    int8: Int8Config | None = None,
    fp16: Fp16Config | None = None,
    data: QuantizeData = QuantizeData(),
    verify: VerifyConfig = VerifyConfig(),
    threads: int | None = None,
    progress=lambda message: None,
    options: SourceOptions = SourceOptions(),
) -> QuantizeOutcome:
    """Quantize an fp32 ONNX model to int8 (accuracy-aware) or fp16 and verify it against the input.

    ``passed`` is False when the budget could not be met; the best attempt is still written to ``out``.
    """
    if (int8 is None) == (fp16 is None):
        raise UsageError("choose exactly one of --int8 or --fp16")
    source = inspect_source(Path(model), options)
    if source.kind is not SourceKind.ONNX:
        raise InputFileError(
            f"{model}: is a {source.kind.value} file; quantize takes ONNX — run `deployopt export` "
            "first, or `deployopt build` which does both"
        )
    _refuse_overwrite_of_input(source.path, Path(out))
    signature = require_signature(source)
    calibration_samples = int8.samples if int8 else verify.samples
    sources = verify.data_sources(
        data.dataset, calibration=data.calibration, preprocess=data.preprocess, calibration_samples=calibration_samples
    )
    plan = DataPlan(signature, sources)
    calibration, verify_data = (plan.calibration if int8 else None), plan.verification
    precision = Precision.INT8 if int8 else Precision.FP16
    reference = RunnerSpec("onnxruntime", str(source.path), threads=threads)
    judge = Judge(reference, verify_data, resolve_budget(precision, verify.budget), verify.batch_size)
    with atomic_path(out) as tmp:
        if int8 is not None:
            samples = calibration.num_samples if calibration is not None else None
            details = quantize_int8(
                source.path, tmp, int8, calibration, judge, threads=threads, progress=progress,
                calibration_samples=samples,
            ).to_json()  # fmt: skip
            details["notes"] += [note] if (note := plan.calibration_overlap_note()) else []
        else:
            details = convert_fp16_within_budget(source.path, tmp, fp16, judge, threads, progress).to_json()
        result = judge(RunnerSpec("onnxruntime", str(tmp), threads=threads))
    return QuantizeOutcome(precision, result.passed, details, result)
