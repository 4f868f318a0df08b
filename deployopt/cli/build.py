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


@click.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a pipeline setting, e.g. --set build.bench.repeats=3 (repeatable).",
)
@g.json_option("report.json")
@g.gate_files
def run(pipeline: Path, overrides: tuple[str, ...], as_json: bool, **kw: Any) -> int:
    """Run a YAML PIPELINE (see pipelines/ and `deployopt schema`); it is validated before any work starts.

    With --baseline it is a CI gate: exit 1 on a budget miss or a regression against the earlier report.
    """
    from deployopt.api import run_pipeline

    report = run_pipeline(pipeline, list(overrides), progress=console.progress)
    return console.finish_build(report, as_json, kw.pop("baseline"), g.GATE.build(kw), kw["junit"], kw["summary"])


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
