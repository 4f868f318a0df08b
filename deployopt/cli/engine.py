"""The GPU verbs of the command line: ``engine`` (TensorRT) and ``doctor`` (what runs on this machine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from deployopt.cli import groups as g
from deployopt.errors import EXIT_OK


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Engine file [default: MODEL with .plan].")
@g.INPUT
@g.ENGINE
@g.json_option("the sidecar")
def engine(model: Path, out: Path | None, as_json: bool, **kw: Any) -> int:
    """Build a TensorRT engine from an ONNX MODEL and write its sidecar (MODEL.plan.json).

    Precision follows the graph: convert with `quantize --fp16`, or `quantize --int8 --target tensorrt`
    for Q/DQ int8. Exits 5 when TensorRT, the CUDA driver or a GPU is missing.
    """
    from deployopt.api import engine as build_engine

    config = g.ENGINE.build(kw)
    sidecar = build_engine(model, out, config, g.source_options(kw, g.INPUT))
    if as_json:
        click.echo(json.dumps(sidecar.model_dump(mode="json"), indent=2))
        return EXIT_OK
    target = out or Path(model).with_suffix(".plan")
    click.echo(
        f"{target}: TensorRT {sidecar.tensorrt_version} engine on {sidecar.gpu.name}, "
        f"{sidecar.source_precision} graph, flags {sidecar.builder_flags or 'none'}, "
        f"{sidecar.engine_bytes / 1e6:.2f} MB, built in {sidecar.build_seconds:.1f} s"
    )
    for name, (low, opt, high) in sidecar.profiles.items():
        click.echo(f"  profile {name}: min {low}  opt {opt}  max {high}")
    return EXIT_OK


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json: bool) -> int:
    """List which backends, providers and GPU paths work on this machine, and why the others do not."""
    from deployopt.api import diagnose

    checks = diagnose()
    if as_json:
        click.echo(json.dumps([c.to_json() for c in checks], indent=2))
        return EXIT_OK
    width = max(len(c.name) for c in checks)
    for check in checks:
        click.echo(f"{'ok  ' if check.usable else 'no  '}{check.name:<{width}}  {check.detail}")
    return EXIT_OK
