"""The verbs that run whole builds: ``build``, ``run`` (a pipeline file) and ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from deployopt.api import VARIANT_STEPS
from deployopt.cli import console
from deployopt.cli import groups as g


def _variant_flags(func):
    """``--fp16/--no-fp16``, ``--int8/--no-int8``, …: one on/off flag per variant ``build`` can make."""
    for variant in reversed(VARIANT_STEPS):
        flag = f"--{variant}/--no-{variant}"
        func = click.option(
            flag, f"make_{variant}", default=True, show_default=True, help=f"Make the {variant} variant."
        )(func)
    return func


def _variants_made(kw: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The variants to make, and those asked for by name on the command line (``--bf16``): a variant this
    machine cannot make is a note by default, an error when asked for."""
    context = click.get_current_context()
    named = {
        variant
        for variant in VARIANT_STEPS
        if context.get_parameter_source(f"make_{variant}") is click.core.ParameterSource.COMMANDLINE
    }
    made = tuple(variant for variant in VARIANT_STEPS if kw.pop(f"make_{variant}"))
    return {"make": made, "required": tuple(variant for variant in made if variant in named)}


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@g.SOURCE
@g.OUT
@g.TRITON_OUT
@g.EXPORT
@g.GRAPH
@g.DATA
@_variant_flags
@g.CALIBRATION
@g.INT8
@g.FP16
@g.BF16
@g.PRUNE
@g.BUDGET
@g.BENCH
@g.NO_BENCH
@g.BUILD
@g.ENGINE
@g.json_option("report.json")
@click.option(
    "--save-pipeline",
    "pipeline_file",
    type=click.Path(path_type=Path),
    help="Also write this run as a pipeline YAML file.",
)
@g.gate_files
def build(model: Path, as_json: bool, pipeline_file: Path | None, **kw: Any) -> int:
    """Export MODEL to ONNX, optimise the graph, verify and benchmark every artifact, write a report.

    Exits 1 when an artifact misses its accuracy budget.
    """
    from deployopt.api import BuildConfig, QuantizedVariants, save_pipeline
    from deployopt.api import build as run_build

    gate = (kw.pop("baseline"), g.GATE.build(kw), kw.pop("junit"), kw.pop("summary"))
    quantize = QuantizedVariants(
        **_variants_made(kw),
        int8=g.INT8.build(kw),
        fp16=g.FP16.build(kw),
        bf16=g.BF16.build(kw),
        **g.CALIBRATION.values(kw),
    )
    config = BuildConfig(
        **g.SOURCE.values(kw),
        **g.OUT.values(kw),
        **g.TRITON_OUT.values(kw),
        **g.BUILD.values(kw),
        **g.NO_BENCH.values(kw),
        export=g.EXPORT.build(kw, verbose=console.verbose()),
        graph=g.GRAPH.build(kw),
        verify=g.DATA.build(kw, budget=g.BUDGET.build(kw)),
        prune=g.prune_config(kw),
        quantize=quantize,
        engine=g.ENGINE.build(kw),
        bench=g.BENCH.build(kw),
    )
    if pipeline_file:
        save_pipeline(model, config, pipeline_file)
    report = run_build(model, config, progress=console.progress)
    return console.finish_build(report, as_json, *gate)


RAY_OPTIONS = (
    click.option(
        "--ray",
        "ray_address",
        envvar="DEPLOYOPT_RAY_ADDRESS",
        metavar="HOST:PORT",
        help="Run on the Ray cluster at this address (the `ray` extra) [env: DEPLOYOPT_RAY_ADDRESS].",
    ),
    click.option(
        "--bench-on",
        metavar="RESOURCE",
        help="With --ray: verify and benchmark on nodes that advertise this Ray resource (e.g. cpu_amx), one "
        "benchmark at a time per node.",
    ),
)


def _ray_options(func):
    for option in reversed(RAY_OPTIONS):
        func = option(func)
    return func


@click.command()
@click.argument("pipelines", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a pipeline setting, e.g. --set build.bench.repeats=3 (repeatable).",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Build this many models at once (each in its own process); benchmarks still run one model at a time.",
)
@_ray_options
@g.json_option("report.json")
@g.gate_files
def run(pipelines: tuple[Path, ...], overrides: tuple[str, ...], as_json: bool, **kw: Any) -> int:
    """Run YAML PIPELINES (see pipelines/ and `deployopt schema`); each is validated before any work starts.

    Several pipeline files, or one that lists several models, build a fleet: each model into its own run
    directory, one summary, JUnit file and exit code for them all (the first failing model's code).
    With --baseline it is a CI gate: exit 1 on a budget miss or a regression against the earlier report.
    """
    from deployopt.api import fleet_members, run_fleet, run_pipeline
    from deployopt.errors import UsageError

    jobs, ray_address, bench_on, baseline = (
        kw.pop("jobs"),
        kw.pop("ray_address"),
        kw.pop("bench_on"),
        kw.pop("baseline"),
    )
    fleet = ray_address is not None or len(pipelines) > 1 or len(fleet_members(pipelines, list(overrides))) > 1
    if not fleet:
        report = run_pipeline(pipelines[0], list(overrides), progress=console.progress)
        return console.finish_build(report, as_json, baseline, g.GATE.build(kw), kw["junit"], kw["summary"])
    if baseline is not None:
        raise UsageError("--baseline compares one build with its earlier report: give it to a single-model run")
    outcome = run_fleet(
        list(pipelines), list(overrides), jobs=jobs, ray_address=ray_address, bench_on=bench_on,
        progress=console.progress,
    )  # fmt: skip
    return console.finish_fleet(outcome, as_json, kw["junit"], kw["summary"])


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_ray_options
@click.option("--repeats", type=click.IntRange(min=1), help="Interleaved rounds [default: the build's].")
@g.json_option("this machine's recommendation per run directory")
def recommend(run_dirs: tuple[Path, ...], ray_address: str | None, bench_on: str | None, repeats, as_json) -> int:
    """Benchmark finished builds' passing artifacts again on this machine (or a Ray node with --bench-on) and write
    its recommendation beside the build machine's, keyed by CPU (RUN_DIR/recommendations/<cpu>.json, the reports).
    """
    from deployopt.api import recommend as run_recommend

    entries = run_recommend(
        list(run_dirs), ray_address=ray_address, bench_on=bench_on, repeats=repeats, progress=console.progress
    )
    return console.show_recommend(dict(zip(map(str, run_dirs), entries, strict=True)), as_json)


@click.command()
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=Path("deployopt-out"),
    show_default=True,
    help="Where the checkpoint and run directory go.",
)
@g.NO_BENCH
@g.json_option("report.json")
def demo(out: Path, as_json: bool, **kw: Any) -> int:
    """Train the digits CNN (once, ~15 s) and run `build` on it."""
    from deployopt.api import BuildConfig, run_demo

    report = run_demo(out, BuildConfig(skip_bench=kw.pop("skip_bench")), progress=console.progress)
    return console.show_build(report, as_json)
