"""The verbs that measure: ``verify`` (accuracy budgets, and the baseline gate) and ``bench`` (speed, memory)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from deployopt.cli import console
from deployopt.cli import groups as g
from deployopt.errors import EXIT_BUDGET, EXIT_OK


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@g.SOURCE
@g.DATA
@g.BUDGET
@g.RUNTIME
@g.gate_files
@g.json_option("the result")
def verify(models: tuple[Path, ...], **kw: Any) -> int:
    """Compare CANDIDATE (PyTorch, ONNX or a TensorRT engine) with REFERENCE; exit 1 when outside the budget.

    \b
    deployopt verify REFERENCE CANDIDATE
    deployopt verify CURRENT/report.json --baseline PREVIOUS/report.json   # the CI gate on finished builds
    """
    from deployopt.api import load_report, verify_models
    from deployopt.errors import UsageError

    as_json, baseline = kw.pop("as_json"), kw.pop("baseline")
    if baseline is not None:
        if len(models) != 1:
            raise UsageError(
                "with --baseline, pass one report.json: deployopt verify NEW/report.json --baseline OLD/report.json"
            )
        return console.finish_build(
            load_report(models[0]), as_json, baseline, g.GATE.build(kw), kw["junit"], kw["summary"]
        )
    if len(models) != 2:
        raise UsageError("pass REFERENCE and CANDIDATE (or one report.json with --baseline)")
    if kw["junit"] or kw["summary"]:
        raise UsageError("--junit / --summary describe builds: use them with build, run or verify --baseline")
    config = g.DATA.build(kw, budget=g.BUDGET.build(kw))
    result = verify_models(models[0], models[1], g.source_options(kw), config, g.RUNTIME.build(kw))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        console.show_verify(result)
    return EXIT_OK if result.passed else EXIT_BUDGET


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@g.SOURCE
@g.BENCH
@g.BENCH_DATA
@g.RUNTIME
@g.json_option("the measurements")
def bench(models: tuple[Path, ...], **kw: Any) -> int:
    """Measure latency (p50/p90/p99), throughput and peak memory of MODELS, each in its own process.

    On a GPU (TensorRT engines, --provider cuda, --device cuda) the device compute time is reported too.
    """
    from deployopt.api import bench_models

    as_json = kw.pop("as_json")
    config, runtime, data = g.BENCH.build(kw), g.RUNTIME.build(kw), g.BENCH_DATA.build(kw).data
    measurements = bench_models(list(models), g.source_options(kw), config, console.progress, runtime, data)
    if as_json:
        click.echo(json.dumps([m.to_json() for m in measurements], indent=2))
        return EXIT_OK
    console.show_bench(measurements, list(models))
    return EXIT_OK
