"""The verbs that work on PyTorch models: ``train`` and ``prune`` (apart from :mod:`deployopt.cli` for size)."""

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
@click.option(
    "--round-to",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="channels: keep channel counts multiples of N (kernels work in blocks of 8; 1 = exact amount).",
)
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


@click.command()
@click.argument("model_name")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Checkpoint to write.")
@click.option("--dataset", help="Registered dataset [default: the model's own].")
@click.option("--epochs", type=click.IntRange(min=1), help="[default: the model's registered recipe]")
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]),
    default="adamw",
    show_default=True,
)
@click.option(
    "--schedule", type=click.Choice(["constant", "step", "cosine", "onecycle"]), default="onecycle", show_default=True
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Peak learning rate (one-cycle AdamW).")
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--label-smoothing", type=float, default=0.05, show_default=True)
@click.option("--teacher", type=click.Path(path_type=Path), help="Distil from this model (soft targets + labels).")
@click.option("--distill-temperature", type=float, default=4.0, show_default=True)
@click.option("--distill-alpha", type=float, default=0.5, show_default=True, help="Weight of the distillation loss.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def train(model_name: str, out: Path, as_json: bool, **kw: Any) -> int:
    """Train registered MODEL_NAME into a checkpoint that `deployopt build` takes with no other flags."""
    from deployopt.train import TrainConfig, train_model

    metrics = train_model(model_name, out, TrainConfig(**kw), log=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        extra = f" (teacher {metrics['teacher_test_accuracy']:.2f}%)" if "teacher_test_accuracy" in metrics else ""
        click.echo(
            f"{out}: {model_name}, {metrics['epochs']} epochs in {metrics['train_seconds']:.0f} s, "
            f"val {metrics['val_accuracy']:.2f}%, test {metrics['test_accuracy']:.2f}%{extra}"
        )
    return EXIT_OK
