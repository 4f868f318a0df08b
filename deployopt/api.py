"""The Python API: one documented function per CLI verb. The CLI only parses options and calls these.

>>> from deployopt import api
>>> report = api.build("model.pt", api.BuildConfig(arch="torchvision:resnet18"))
>>> report.passed, report.speedup("onnx-fp32", "pytorch", batch=1)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deployopt.accuracy import quantize_int8
from deployopt.bench import BenchConfig, BenchVariant, Measurement, bench
from deployopt.build import BuildConfig, build, reference_spec, require_signature
from deployopt.calibration import Preprocess, as_eval_data, load_calibration
from deployopt.data import dataset_data, generate_data, load_data
from deployopt.demo import run_demo
from deployopt.errors import InputFileError, UsageError
from deployopt.fsutil import atomic_path
from deployopt.onnxutil import describe
from deployopt.runners import RunnerSpec, spec_for_model
from deployopt.sources import SourceKind, SourceOptions, inspect_source
from deployopt.stages.export import ExportConfig, ExportResult, export_onnx
from deployopt.stages.fp16 import Fp16Config, convert_fp16
from deployopt.stages.graph import GraphConfig, GraphResult, optimize_graph
from deployopt.stages.quantize import Int8Config
from deployopt.verify import Budget, VerifyConfig, VerifyResult, budget_for, load_eval_data, verify

__all__ = [
    "BenchConfig",
    "BuildConfig",
    "ExportConfig",
    "GraphConfig",
    "SourceOptions",
    "VerifyConfig",
    "bench_models",
    "build",
    "export",
    "optimize",
    "run_demo",
    "verify_models",
]


def _refuse_overwrite_of_input(source: Path, out: Path) -> None:
    if out.exists() and out.resolve() == source.resolve():
        raise UsageError(f"{out}: the output would overwrite the input model; choose another -o")


def export(
    model: str | Path, out: str | Path, options: SourceOptions = SourceOptions(), config: ExportConfig = ExportConfig()
) -> ExportResult:
    """Export a PyTorch model file to ONNX at ``out`` (written atomically); the result names the exporter used."""
    source = inspect_source(Path(model), options)
    if source.kind is SourceKind.ONNX:
        raise UsageError(f"{model}: already an ONNX model; use `deployopt optimize` to optimise it")
    _refuse_overwrite_of_input(source.path, Path(out))
    signature = require_signature(source)
    with atomic_path(out) as tmp:
        result = export_onnx(source, signature, tmp, config)
    return result


def optimize(model: str | Path, out: str | Path, config: GraphConfig = GraphConfig()) -> GraphResult:
    """Graph-optimise an ONNX model into ``out`` (constant folding, dead code, Conv+BN fusion, ...)."""
    source = inspect_source(Path(model))
    if source.kind is not SourceKind.ONNX:
        raise InputFileError(f"{model}: is a {source.kind.value} file, not ONNX; run `deployopt export` first")
    _refuse_overwrite_of_input(source.path, Path(out))
    with atomic_path(out) as tmp:
        return optimize_graph(source.path, tmp, config)


def verify_models(
    reference: str | Path,
    candidate: str | Path,
    options: SourceOptions = SourceOptions(),
    config: VerifyConfig = VerifyConfig(),
) -> VerifyResult:
    """Run both models on the same inputs and check the candidate against the budget.

    The budget defaults by the candidate's precision (fp32 / fp16 / int8, read from its graph);
    ``config.budget`` overrides individual metrics. Real data comes from ``config.data`` or the
    reference's registered dataset; otherwise seeded generated inputs matching the signature are used.
    """
    ref_source = inspect_source(Path(reference), options)
    cand_source = inspect_source(Path(candidate), options)
    signature = ref_source.signature or cand_source.signature
    if signature is None:
        raise InputFileError(
            f"{reference}: no input signature is saved with this model; pass --input NAME:SHAPE[:DTYPE]"
        )
    precision = describe(cand_source.path)["precision"] if cand_source.kind is SourceKind.ONNX else "fp32"
    budget = budget_for(precision, config.budget.model_dump())
    data = load_eval_data(signature, config, ref_source.dataset)
    cand_spec = spec_for_model(str(cand_source.path), source_options=options.to_json())
    return verify(reference_spec(ref_source), cand_spec, data, budget, config.batch_size)


def bench_models(
    models: list[str | Path],
    options: SourceOptions = SourceOptions(),
    config: BenchConfig = BenchConfig(),
    progress=lambda message: None,
) -> list[Measurement]:
    """Measure every model in one invocation, each in its own worker process, at each batch size."""
    if not models:
        raise UsageError("bench needs at least one model file")
    sources = [inspect_source(Path(m), options) for m in models]
    signature = next((s.signature for s in sources if s.signature is not None), None)
    if signature is None:
        raise InputFileError(
            f"{models[0]}: no input signature is saved with this model; pass --input NAME:SHAPE[:DTYPE]"
        )
    labels = _unique_labels([s.path for s in sources])
    variants = [
        BenchVariant(label, spec_for_model(str(s.path), source_options=options.to_json()))
        for label, s in zip(labels, sources, strict=True)
    ]
    return bench(variants, signature, config, progress)


def _unique_labels(paths: list[Path]) -> list[str]:
    """Short labels for the table: file names, or parent/file when names repeat."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


@dataclass(frozen=True)
class QuantizeData:
    """Where calibration and verification data for ``quantize`` come from (all optional)."""

    calibration: Path | None = None  # .npz / .npy / folder of images
    preprocess: Preprocess | None = None  # for image folders
    dataset: str | None = None  # a registered dataset: calibrate on 'val', verify on 'test'
    data: Path | None = None  # verification inputs (.npz); default: the calibration data
    labels: Path | None = None
    samples: int = 64  # generated verification samples when nothing else is given


@dataclass
class QuantizeOutcome:
    precision: str
    passed: bool
    details: dict  # Int8Result / Fp16Result as JSON
    verify: VerifyResult


def quantize(
    model: str | Path,
    out: str | Path,
    *,
    int8: Int8Config | None = None,
    fp16: Fp16Config | None = None,
    data: QuantizeData = QuantizeData(),
    budget: Budget = Budget(),
    threads: int | None = None,
    progress=lambda message: None,
) -> QuantizeOutcome:
    """Quantize an fp32 ONNX model to int8 (accuracy-aware) or fp16 and verify it against the input.

    ``passed`` is False when the budget could not be met; the best attempt is still written to ``out``.
    """
    if (int8 is None) == (fp16 is None):
        raise UsageError("choose exactly one of --int8 or --fp16")
    source = inspect_source(Path(model))
    if source.kind is not SourceKind.ONNX:
        raise InputFileError(
            f"{model}: is a {source.kind.value} file; quantize takes ONNX — run `deployopt export` "
            "first, or `deployopt build` which does both"
        )
    _refuse_overwrite_of_input(source.path, Path(out))
    signature = require_signature(source)
    calibration = _calibration_source(signature, data)
    verify_data = _verification_data(signature, data, calibration, int8.samples if int8 else data.samples)
    precision = "int8" if int8 else "fp16"
    full_budget = budget_for(precision, budget.model_dump())
    with atomic_path(out) as tmp:
        if int8 is not None:
            details = quantize_int8(
                source.path, tmp, int8, calibration, verify_data, full_budget, threads=threads, progress=progress
            ).to_json()
        else:
            details = convert_fp16(source.path, tmp, fp16).to_json()
        result = verify(
            RunnerSpec("onnxruntime", str(source.path), threads=threads),
            RunnerSpec("onnxruntime", str(tmp), threads=threads),
            verify_data,
            full_budget,
        )
    return QuantizeOutcome(precision, result.passed, details, result)


def _calibration_source(signature, data: QuantizeData):
    if data.calibration is not None:
        return load_calibration(signature, data.calibration, data.preprocess)
    if data.dataset is not None:
        return dataset_data(signature, data.dataset, "val")
    return None


def _verification_data(signature, data: QuantizeData, calibration, limit: int):
    if data.data is not None:
        return load_data(signature, data.data, data.labels)
    if data.dataset is not None:
        return dataset_data(signature, data.dataset, "test")
    if calibration is not None:
        return as_eval_data(calibration, signature, limit)
    return generate_data(signature, data.samples)
