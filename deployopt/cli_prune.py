"""The ``prune`` verb of the command line (kept apart from :mod:`deployopt.cli` to keep files small)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from deployopt import cli_options as options
from deployopt.errors import EXIT_BUDGET, EXIT_OK


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@options.source_options
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Pruned model (TorchScript).")
@click.option("--method", type=click.Choice(["channels", "2:4", "magnitude"]), default="channels", show_default=True)
@click.option("--amount", type=float, help="channels: fraction of channels removed per layer [0.3]; magnitude [0.5].")
@click.option("--importance", type=click.Choice(["l1", "l2", "bn", "taylor"]), default="l2", show_default=True)
@click.option("--exclude", multiple=True, metavar="LAYER", help="Module name to leave unpruned (repeatable).")
@click.option("--round-to", type=click.IntRange(min=1), help="channels: keep channel counts multiples of N.")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--finetune-lr", type=float, default=1e-3, show_default=True)
@click.option("--distill", is_flag=True, help="Fine-tune against the unpruned model's logits too.")
@click.option("--train-data", type=click.Path(path_type=Path), help=".npz with inputs and labels [default: dataset].")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True, help="Points vs the unpruned model.")
@click.option("--no-bench", is_flag=True, help="Skip the latency comparison.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def prune(model: Path, out: Path, as_json: bool, no_bench: bool, **kw: Any) -> int:
    """Prune a PyTorch MODEL (structured channels, 2:4 or magnitude) and save it as TorchScript.

    The result is a normal model source for build / export / quantize. Exits 1 when the test accuracy
    drops more than --max-accuracy-drop.
    """
    from deployopt.api import BenchConfig, PruneConfig
    from deployopt.api import prune as run_prune
    from deployopt.console import show_prune

    source = options.source(kw.pop("arch"), kw.pop("inputs"), kw.pop("trust_pickle"))
    config = PruneConfig(exclude=tuple(kw.pop("exclude")), **kw)
    outcome = run_prune(model, out, config, source, None if no_bench else BenchConfig(batch_sizes=(1, 32)))
    if as_json:
        click.echo(json.dumps(outcome.to_json(), indent=2))
    else:
        show_prune(out, outcome)
    return EXIT_OK if outcome.passed else EXIT_BUDGET
