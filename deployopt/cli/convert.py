"""The verbs that turn one model file into another: ``export``, ``optimize`` and ``quantize``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from deployopt.cli import console
from deployopt.cli import groups as g
from deployopt.errors import EXIT_BUDGET, EXIT_OK

_OUT = click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="ONNX file to write.")


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@_OUT
@g.SOURCE
@g.EXPORT
@g.EXPORT_DATA
@g.json_option("the result")
def export(model: Path, out: Path, as_json: bool, **kw: Any) -> int:
    """Export a PyTorch MODEL or Hugging Face folder to ONNX (dynamic batch, checked with onnx.checker)."""
    from deployopt.api import export as run_export

    data = g.EXPORT_DATA.build(kw).data
    config = g.EXPORT.build(kw, verbose=console.verbose())
    result = run_export(model, out, g.source_options(kw), config, data)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    click.echo(
        f"{out}: exported with the {result.exporter} exporter, opset {result.opset}, "
        f"outputs {result.output_names} in {result.seconds:.1f} s"
    )
    if result.fallback_reason:
        click.echo(f"note: fell back because the {result.fallback_reason}", err=True)
    return EXIT_OK


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@_OUT
@g.GRAPH
@g.json_option("the result")
def optimize(model: Path, out: Path, as_json: bool, **kw: Any) -> int:
    """Graph-optimise an ONNX MODEL: folding, dead code, Identity/Dropout removal, Conv+BN fusion."""
    from deployopt.api import optimize as run_optimize

    result = run_optimize(model, out, g.GRAPH.build(kw))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    click.echo(
        f"{out}: {result.nodes_before} → {result.nodes_after} nodes, "
        f"{result.size_before:,} → {result.size_after:,} bytes (passes: {', '.join(result.passes) or 'none'})"
    )
    return EXIT_OK


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@_OUT
@g.INPUT
@click.option("--int8", "make_int8", is_flag=True, help="Quantize to int8 (accuracy-aware).")
@click.option("--fp16", "make_fp16", is_flag=True, help="Convert to float16.")
@g.QUANTIZE_DATA
@g.DATA
@g.INT8_VERB
@g.FP16
@g.THREADS
@g.BUDGET
@g.json_option("the result")
def quantize(model: Path, out: Path, make_int8: bool, make_fp16: bool, as_json: bool, **kw: Any) -> int:
    """Quantize an ONNX MODEL to int8 or fp16, verify it against MODEL, exit 1 when outside the budget.

    Calibration: --calibration, else --dataset's 'val' split. Verification: --data, else --dataset's 'test'
    split, else the calibration data, else generated inputs.
    """
    from deployopt.api import quantize as run_quantize
    from deployopt.errors import UsageError

    if make_int8 == make_fp16:
        raise UsageError("choose one of --int8 or --fp16")
    int8, fp16 = g.INT8_VERB.build(kw), g.FP16.build(kw)
    outcome = run_quantize(
        model,
        out,
        int8=int8 if make_int8 else None,
        fp16=fp16 if make_fp16 else None,
        data=g.QUANTIZE_DATA.build(kw),
        verify=g.DATA.build(kw, budget=g.BUDGET.build(kw)),
        threads=g.THREADS.values(kw).get("threads"),
        progress=console.progress,
        options=g.source_options(kw, g.INPUT),
    )
    if as_json:
        click.echo(json.dumps(outcome.to_json(), indent=2))
    else:
        console.show_quantize(out, outcome)
    return EXIT_OK if outcome.passed else EXIT_BUDGET
