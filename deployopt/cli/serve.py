"""The serving verb of the command line: ``triton`` (a finished build as a Triton model repository)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from deployopt.cli import groups as g
from deployopt.errors import EXIT_OK


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("repository", type=click.Path(path_type=Path))
@g.TRITON
@g.json_option("the models written")
def triton(run_dir: Path, repository: Path, as_json: bool, **kw: Any) -> int:
    """Write RUN_DIR's recommended artifact as a Triton model in REPOSITORY (REPOSITORY/<name>/config.pbtxt and
    1/<model file>); --all writes every passing variant. Each config.pbtxt is checked against Triton's schema."""
    from deployopt.api import triton_repository

    models = triton_repository(run_dir, repository, g.TRITON.build(kw))
    if as_json:
        click.echo(json.dumps([m.to_json() for m in models], indent=2))
        return EXIT_OK
    for model in models:
        files = sorted(str(p.relative_to(repository)) for p in model.folder.rglob("*") if p.is_file())
        click.echo(f"{model.name}: {model.variant} on {model.runtime} → {', '.join(files)}")
        if model.caveat:
            click.echo(f"note: {model.caveat}", err=True)
    return EXIT_OK
