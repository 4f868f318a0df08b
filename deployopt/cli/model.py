"""The verbs that work on PyTorch models: ``train`` and ``prune`` (apart from :mod:`deployopt.cli` for size)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from deployopt.cli import console
from deployopt.cli import groups as g
from deployopt.errors import EXIT_BUDGET, EXIT_OK


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@g.SOURCE
@g.json_option("the description")
def inspect(model: Path, as_json: bool, **kw: Any) -> int:
    """Describe MODEL without running it: kind, signature, precision, size, op counts, opset, external data."""
    from deployopt.api import inspect_model

    info = inspect_model(model, g.source_options(kw))
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(console.describe_model(info))
    return EXIT_OK


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@g.SOURCE
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Pruned model (TorchScript).")
@g.PRUNE_VERB
@g.NO_BENCH
@g.json_option("the result")
def prune(model: Path, out: Path, as_json: bool, **kw: Any) -> int:
    """Prune a PyTorch MODEL (structured channels, 2:4 or magnitude) and save it as TorchScript.

    The result is a normal model source for build / export / quantize. Exits 1 when the test accuracy
    drops more than --prune-max-accuracy-drop.
    """
    from deployopt.api import BenchConfig
    from deployopt.api import prune as run_prune

    source, config = g.source_options(kw), g.PRUNE_VERB.build(kw)
    bench = None if g.NO_BENCH.values(kw).get("skip_bench") else BenchConfig(batch_sizes=(1, 32))
    outcome = run_prune(model, out, config, source, bench)
    if as_json:
        click.echo(json.dumps(outcome.to_json(), indent=2))
    else:
        console.show_prune(out, outcome)
    return EXIT_OK if outcome.passed else EXIT_BUDGET


@click.command()
@click.argument("model_name")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Checkpoint to write.")
@g.TRAIN
@click.option("--arch-arg", "arch_args", multiple=True, metavar="KEY=VALUE", help="Model factory argument (YAML).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run from OUT-stem.train/state.pt.")
@g.json_option("the metrics")
def train(model_name: str, out: Path, as_json: bool, resume: bool, arch_args: tuple[str, ...], **kw: Any) -> int:
    """Train registered MODEL_NAME into a checkpoint that `deployopt build` takes with no other flags.

    Under `torchrun --nproc-per-node N -m deployopt train ...` the run is data-parallel (gloo on CPU,
    NCCL on CUDA). Metrics per epoch go to OUT-stem.train/metrics.csv.
    """
    from deployopt.api import train as run_train
    from deployopt.training.command import train_dir
    from deployopt.training.distributed import is_main_process

    config = g.TRAIN.build(kw, arch_kwargs=_key_values(arch_args))
    try:
        metrics = run_train(model_name, out, config, resume=resume, log=lambda m: click.echo(m, err=True))
    except KeyboardInterrupt:
        state = train_dir(out) / "state.pt"
        if state.exists() and is_main_process():
            click.echo(f"\ntrain: the last finished epoch is saved in {state}; add --resume to continue", err=True)
        raise
    if not is_main_process():
        return EXIT_OK  # under torchrun only rank 0 reports
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        click.echo(_train_summary(model_name, out, metrics))
        click.echo(f"metrics per epoch: {train_dir(out) / 'metrics.csv'}")
    return EXIT_OK


def _key_values(pairs: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    from deployopt.errors import UsageError

    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--arch-arg '{pair}': expected KEY=VALUE, e.g. --arch-arg width=16")
        values[key] = yaml.safe_load(text)
    return values


def _train_summary(model_name: str, out: Path, metrics: dict) -> str:
    teacher = ""
    if "teacher_test_accuracy" in metrics:
        ratio = f", {metrics['teacher_macs'] / metrics['macs']:.1f}× its MACs" if "teacher_macs" in metrics else ""
        teacher = f"; teacher {metrics['teacher_test_accuracy']:.2f}%{ratio}"
    stopped = f" (early stop, best epoch {metrics['best_epoch']})" if metrics["stopped_early"] else ""
    return (
        f"{out}: {model_name}, {metrics['epochs_run']} epochs{stopped} in {metrics['train_seconds']:.0f} s "
        f"({metrics['optimizer']}, {metrics['schedule']}, amp {metrics['amp']}, {metrics['world_size']} process(es)), "
        f"val {metrics['val_accuracy']:.2f}%, test {metrics['test_accuracy']:.2f}%, "
        f"{metrics['macs'] / 1e6:.2f} M MACs, {metrics['params'] / 1e3:.1f} k params{teacher}"
    )
