"""``deployopt build``: model source → export → graph optimisation → verify → bench → report.

Every stage runs through :class:`~deployopt.rundir.RunDirectory`, so finished stages are reused on a
re-run, lineage lands in ``manifest.json``, and the report explains each step. The build fails (the
report says which metric) when any artifact misses its accuracy budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deployopt.errors import InputFileError
from deployopt.flow.variants import QuantizedVariants, make_fp16, make_int8
from deployopt.fsutil import sha256_json, write_json_atomic, write_text_atomic
from deployopt.measure.bench import BenchConfig, BenchVariant, bench
from deployopt.measure.verify import (
    CollectedOutputs,
    VerifyConfig,
    VerifyResult,
    budget_for,
    collect_outputs,
    data_fingerprint,
    load_eval_data,
    verify,
)
from deployopt.reports.html import render_html
from deployopt.reports.model import (
    ONNX_FP32,
    REFERENCE,
    BuildReport,
    VariantReport,
    fp16_speed_note,
    graph_summary,
    render_markdown,
    verify_summary,
)
from deployopt.rundir import RunDirectory
from deployopt.runners import RunnerSpec, create_runner, spec_for_model
from deployopt.sources.detect import ModelSource, SourceKind, SourceOptions, artifact_facts, inspect_source, model_name
from deployopt.sources.signature import Signature
from deployopt.stages.engine.build import EngineConfig
from deployopt.stages.export import ExportConfig, export_onnx
from deployopt.stages.graph import GraphConfig, optimize_graph
from deployopt.stages.prune.command import check_sparsity
from deployopt.stages.prune.methods import PruneConfig

DEFAULT_OUT_ROOT = Path("deployopt-out")
Progress = Callable[[str], None]


def _silent(message: str) -> None:
    """Default progress sink for library callers that want no output."""


class BuildConfig(BaseModel):
    """Everything ``deployopt build`` does, as one typed config (also the shape of a pipeline file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str | None = Field(None, description="architecture for state_dict checkpoints")
    inputs: tuple[str, ...] = Field((), description="input signature, NAME:SHAPE[:DTYPE] each")
    trust_pickle: bool = False
    out: Path | None = Field(None, description="run directory; default deployopt-out/<model name>")
    export: ExportConfig = ExportConfig()
    graph: GraphConfig = GraphConfig()
    verify: VerifyConfig = VerifyConfig()
    prune: PruneConfig | None = Field(None, description="prune the PyTorch model before export")
    quantize: QuantizedVariants = QuantizedVariants()
    target: Literal["cpu", "tensorrt"] = Field("cpu", description="tensorrt: also build, verify and bench engines")
    engine: EngineConfig = EngineConfig()
    bench: BenchConfig = BenchConfig()
    skip_bench: bool = False
    force: bool = Field(False, description="redo every stage even when a cached result exists")

    @property
    def source_options(self) -> SourceOptions:
        return SourceOptions(arch=self.arch, inputs=self.inputs, trust_pickle=self.trust_pickle)


def require_signature(source: ModelSource) -> Signature:
    if source.signature is None:
        raise InputFileError(
            f"{source.path}: no input signature is saved with this model; pass --input NAME:SHAPE[:DTYPE] "
            "(e.g. --input input:batch,3,224,224)"
        )
    return source.signature


def reference_spec(source: ModelSource, threads: int | None = None) -> RunnerSpec:
    """The runner for the original: PyTorch eager, or ONNX Runtime when the source is already ONNX."""
    backend = "onnxruntime" if source.kind is SourceKind.ONNX else "torch"
    return RunnerSpec(backend=backend, path=str(source.path), threads=threads, source_options=source.options.to_json())


def build(model_path: str | Path, config: BuildConfig = BuildConfig(), progress: Progress = _silent) -> BuildReport:
    """Build, verify and benchmark every artifact of ``model_path``; see the module docstring."""
    source = inspect_source(Path(model_path), config.source_options)
    signature = require_signature(source)
    if config.target == "tensorrt":
        from deployopt.stages.engine.variants import require_tensorrt_target

        require_tensorrt_target(config.engine)
    run_root = config.out or DEFAULT_OUT_ROOT / model_name(source)
    with RunDirectory(run_root, force=config.force) as run:
        run.manifest["source"] = source.to_json()
        run.manifest["signature"] = signature.to_json()
        run.save()
        report = BuildReport(
            model=model_name(source),
            run_dir=str(run.root),
            source=source.to_json(),
            data="",
            samples=0,
            batch_sizes=list(config.bench.batch_sizes),
            threads=config.bench.resolved_threads(),
        )
        artifacts: dict[str, Path] = {}
        export_source = source
        if config.prune is not None:
            from deployopt.stages.prune.command import prune_stage

            progress(f"prune: {config.prune.method}")
            export_source, entry = prune_stage(run, source, config.prune)
            report.stages.append(entry)
            artifacts["pytorch-pruned"] = export_source.path
        fp32_path = _produce_fp32(run, export_source, signature, config, report, progress)
        engine_config = check_sparsity(run, fp32_path, config.prune, config.engine, report.stages)

        data = _verification_data(signature, config, source.dataset)
        report.data, report.samples = data.origin, data.num_samples
        ref_spec = reference_spec(source)
        report.variants.append(
            VariantReport(
                REFERENCE if source.kind.is_torch else "onnx-original",
                str(source.path),
                "fp32",
                source.path.stat().st_size,
                role="reference",
            )
        )
        artifacts[ONNX_FP32] = fp32_path
        fp32_hash = run.manifest["stages"]["graph"]["outputs"]["model"]["sha256"]
        made = []
        if "fp16" in config.quantize.make:
            progress("fp16: converting")
            made.append(("onnx-fp16", make_fp16(run, fp32_path, fp32_hash, config.quantize.fp16)))
        if "int8" in config.quantize.make:
            made.append(
                (
                    "onnx-int8",
                    make_int8(
                        run,
                        fp32_path,
                        fp32_hash,
                        signature,
                        config.quantize,
                        source.dataset,
                        data,
                        config.verify.budget,
                        config.bench.batch_sizes,
                        config.bench.threads,
                        progress,
                    ),
                )
            )

        def add(name: str, outcome) -> None:
            report.stages.append(outcome.stage)
            if outcome.path is None:
                report.notes.append(outcome.skipped)
                progress(outcome.skipped)
            else:
                artifacts[name] = outcome.path

        for name, outcome in made:
            add(name, outcome)
        if config.target == "tensorrt":
            from deployopt.stages.engine.variants import tensorrt_variants

            for name, outcome in tensorrt_variants(
                run,
                fp32_path,
                fp32_hash,
                artifacts.get("onnx-fp16"),
                signature,
                config.quantize,
                source.dataset,
                data,
                config.verify.budget,
                config.bench,
                engine_config,
                progress,
            ):
                add(name, outcome)
        reference_outputs: list[CollectedOutputs] = []  # computed at most once, only if some result is not cached

        def reference() -> CollectedOutputs:
            if not reference_outputs:
                progress("verify: running the reference on the verification data")
                with create_runner(ref_spec) as runner:
                    reference_outputs.append(collect_outputs(runner, data, config.verify.batch_size))
            return reference_outputs[0]

        for name, path in artifacts.items():
            facts = artifact_facts(path)
            run.record_artifact(name, path, precision=facts["precision"])
            variant = VariantReport(name, str(path), facts["precision"], facts["size_bytes"])
            result = _verify_variant(run, name, ref_spec, path, facts["precision"], source, data, config, reference)
            variant.verify = result
            variant.accuracy = result["candidate_accuracy"]
            report.variants[0].accuracy = result["reference_accuracy"]
            report.variants.append(variant)
            verdict = "pass" if result["passed"] else "FAIL: " + "; ".join(result["failures"])
            report.stages.append(
                {
                    "stage": f"verify {name}",
                    "cached": result.get("cached", False),
                    "seconds": result.get("seconds", 0.0),
                    "summary": verify_summary(result, verdict),
                }
            )
            progress(f"verify {name}: {verdict}")

        if not config.skip_bench:
            _bench_variants(run, report, ref_spec, artifacts, signature, config.bench, progress)
            report.notes += fp16_speed_note(report)
        write_json_atomic(run.path("report.json"), report.to_json())
        write_text_atomic(run.path("report.md"), render_markdown(report))
        write_text_atomic(run.path("report.html"), render_html(report))
        run.manifest["result"] = {"passed": report.passed, "failures": report.failures}
        run.save()
    return report


def _produce_fp32(
    run: RunDirectory,
    source: ModelSource,
    signature: Signature,
    config: BuildConfig,
    report: BuildReport,
    progress: Progress,
) -> Path:
    """Export (PyTorch sources) then optimise the graph; returns the fp32 ONNX artifact."""
    if source.kind is SourceKind.ONNX:
        onnx_path, onnx_hash = source.path, source.sha256
        report.stages.append(
            {
                "stage": "export",
                "cached": False,
                "seconds": 0.0,
                "summary": "skipped: the source is already ONNX (it is also the reference)",
            }
        )
    else:
        progress("export: PyTorch → ONNX")

        def do_export(out: dict[str, Path]) -> dict:
            result = export_onnx(source, signature, out["model"], config.export)
            out["log"].write_text(result.log, encoding="utf-8")
            return result.to_json()

        outcome = run.run_stage(
            "export",
            config.export,
            {
                "source": source.sha256,
                "signature": sha256_json(signature.to_json()),
                "source_options": sha256_json(source.options.to_json()),
            },
            {"model": "model.onnx", "log": "logs/export.log"},
            do_export,
        )
        details = outcome.record["details"]
        summary = f"{details['exporter']} exporter, opset {details['opset']}, outputs {details['output_names']}"
        if details.get("fallback_reason"):
            summary += f"; fell back because the {details['fallback_reason']}"
        report.stages.append(
            {
                "stage": "export",
                "cached": outcome.cached,
                "seconds": outcome.record["seconds"],
                "summary": summary + "; exporter log in logs/export.log",
            }
        )
        onnx_path = outcome.output("model")
        onnx_hash = outcome.record["outputs"]["model"]["sha256"]

    progress("graph: optimising the ONNX graph")
    outcome = run.run_stage(
        "graph",
        config.graph,
        {"model": onnx_hash},
        {"model": "model-fp32.onnx"},
        lambda out: optimize_graph(onnx_path, out["model"], config.graph).to_json(),
    )
    details = outcome.record["details"]
    report.stages.append(
        {
            "stage": "graph",
            "cached": outcome.cached,
            "seconds": outcome.record["seconds"],
            "summary": graph_summary(details),
        }
    )
    return outcome.output("model")


def _verification_data(signature: Signature, config: BuildConfig, dataset: str | None):
    """--data, else the registered dataset, else the --calibration data (int8 must be judged on the inputs it
    will see; generated noise lies outside every calibrated range), else seeded generated inputs."""
    if config.verify.data is None and dataset is None and config.quantize.calibration is not None:
        from deployopt.data.calibration import as_eval_data, load_calibration

        calibration = load_calibration(signature, config.quantize.calibration, config.quantize.preprocess)
        return as_eval_data(calibration, signature, max(config.verify.samples, config.quantize.int8.samples))
    return load_eval_data(signature, config.verify, dataset)


def _verify_variant(
    run: RunDirectory,
    name: str,
    ref_spec: RunnerSpec,
    path: Path,
    precision: str,
    source: ModelSource,
    data,
    config: BuildConfig,
    reference,
) -> dict:
    overrides = config.verify.budget.model_dump()
    budget = budget_for(precision, overrides)
    if config.prune is not None:
        from deployopt.stages.prune.command import pruned_budget

        budget = pruned_budget(budget, config.prune).model_copy(
            update={k: v for k, v in overrides.items() if v is not None}
        )
    candidate = spec_for_model(str(path))
    key = {
        "reference": source.sha256,
        "candidate": run.manifest["artifacts"][name]["sha256"],
        "data": data_fingerprint(data),
        "budget": budget.model_dump(),
        "batch": config.verify.batch_size,
    }
    cached = run.cached_result(f"verify:{name}", key)
    if cached is not None:
        return cached | {"cached": True}
    started = time.perf_counter()
    result: VerifyResult = verify(ref_spec, candidate, data, budget, config.verify.batch_size, reference())
    payload = result.to_json() | {"seconds": round(time.perf_counter() - started, 3)}
    run.record_result(f"verify:{name}", key, payload)
    return payload


def _bench_variants(
    run: RunDirectory,
    report: BuildReport,
    ref_spec: RunnerSpec,
    artifacts: dict[str, Path],
    signature: Signature,
    config: BenchConfig,
    progress: Progress,
) -> None:
    variants = [BenchVariant(report.variants[0].name, ref_spec)]
    variants += [BenchVariant(name, spec_for_model(str(path))) for name, path in artifacts.items()]
    started = time.perf_counter()
    measurements = bench(variants, signature, config, progress)
    for m in measurements:
        report.variant(m.variant).latency[m.batch] = m.to_json()
    run.manifest["metrics"]["bench"] = {
        "config": config.model_dump(mode="json"),
        "measurements": [m.to_json() for m in measurements],
    }
    run.save()
    report.stages.append(
        {
            "stage": "bench",
            "cached": False,
            "seconds": round(time.perf_counter() - started, 3),
            "summary": f"{len(variants)} variants × batch {list(config.batch_sizes)}, "
            f"{config.resolved_threads()} threads, {config.repeats} worker process(es) each; "
            "always re-measured (timings are never cached)",
        }
    )
