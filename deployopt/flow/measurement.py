"""The last part of a build: its judged artifacts benchmarked on the machine this runs on, the recommendation, the
reports. Every latency row carries the machine (and Ray node) that measured it, so a figure is never read as true
for another CPU (``deployopt recommend`` re-measures a finished build elsewhere)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from deployopt.data.eval_data import EvalData
from deployopt.fsutil import write_bytes_atomic, write_json_atomic, write_text_atomic
from deployopt.measure.bench import BenchConfig, BenchVariant, bench, measurable_batches
from deployopt.platform.machine import this_machine
from deployopt.reports.html import render_html
from deployopt.reports.model import NOT_KEPT, BuildReport, fp16_speed_note, render_markdown
from deployopt.reports.recommend import recommend
from deployopt.reports.search import plot_file, plot_png
from deployopt.rundir import RunDirectory
from deployopt.runners import RunnerSpec, reference_spec, spec_for_model
from deployopt.sources.signature import Signature
from deployopt.stages.base import BuildContext, Progress
from deployopt.types import StepRecord

if TYPE_CHECKING:
    from deployopt.flow.build import BuildConfig

# The human-readable reports every build writes beside report.json; a new format is one entry here.
REPORT_FILES = {"report.md": render_markdown, "report.html": render_html}


def measure_artifacts(ctx: BuildContext, report: BuildReport) -> BuildReport:
    """Benchmark the kept artifacts (unless ``skip_bench``), recommend, write report.json/.md/.html."""
    config, data, run = ctx.config, ctx.data, ctx.run
    if not config.skip_bench:
        report.measured_on = this_machine()
        runtimes = recommended_runtimes(config)
        contenders = {v.name for v in report.variants[1:] if v.passed and v.runtime in runtimes}
        _bench_variants(
            run,
            report,
            reference_spec(ctx.source),
            {name: a for name, a in ctx.artifacts.items() if report.variant(name).role != NOT_KEPT},
            data.signature_for_generated_inputs,
            config.bench,
            ctx.progress,
            data.real_inputs,
            contenders,
        )
        report.notes += fp16_speed_note(report)
        report.recommendations = recommend(report, runtimes)
    if config.triton_repo is not None:
        report.notes.append(_triton_repository(report, run.root, config.triton_repo))
    write_reports(run, report)
    run.manifest["result"] = {"passed": report.passed, "failures": report.failures}
    run.save()
    return report


def write_reports(run: RunDirectory, report: BuildReport) -> None:
    """report.json, report.md and report.html, and the search plots report.md shows beside it."""
    write_json_atomic(run.path("report.json"), report.to_json())
    for search in (s.search for s in report.stages if s.search):
        if (png := plot_png(search)) is not None:
            write_bytes_atomic(run.path(plot_file(search)), png)
    for filename, render in REPORT_FILES.items():
        write_text_atomic(run.path(filename), render(report))


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
    for m in measurements:  # every figure names the machine that measured it
        report.variant(m.variant).latency[m.batch] = m.to_json() | {"measured_on": report.measured_on}
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
