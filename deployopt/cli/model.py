"""The verbs that work on PyTorch models: ``train`` and ``prune`` (apart from :mod:`deployopt.cli` for size)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from deployopt.cli import options
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
    from deployopt.cli.console import show_prune

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
@click.option("--dataset", help="Registered dataset, .npz (inputs, labels) or image folder [default: the model's].")
@click.option("--epochs", type=click.IntRange(min=1), help="[default: the model's registered recipe]")
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]),
    default="adamw",
    show_default=True,
)
@click.option(
    "--schedule",
    type=click.Choice(["constant", "step", "cosine", "onecycle", "plateau"]),
    default="onecycle",
    show_default=True,
    help="plateau: lr ÷10 after --plateau-patience epochs without a better val accuracy.",
)
@click.option("--plateau-patience", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Peak learning rate.")
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--warmup-steps", type=click.IntRange(min=0), help="Linear warm-up [default: 20 % of the steps].")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Global batch size.")
@click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True, help="Batches per step.")
@click.option("--label-smoothing", type=float, default=0.05, show_default=True)
@click.option("--augment", metavar="SPEC", help="e.g. 'crop:1,rotate:10,jitter:0.2'; 'none' [default: the model's].")
@click.option(
    "--amp",
    type=click.Choice(["off", "bf16", "fp16"]),
    default="off",
    show_default=True,
    help="Mixed precision: bf16 autocast (CPU or CUDA), fp16 with gradient scaling (CUDA).",
)
@click.option("--early-stop", type=click.IntRange(min=1), metavar="PATIENCE", help="Stop after N epochs w/o gain.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--arch-arg", "arch_args", multiple=True, metavar="KEY=VALUE", help="Model factory argument (YAML).")
@click.option("--teacher", type=click.Path(path_type=Path), help="Distil from this model (soft targets + labels).")
@click.option("--distill-temperature", type=float, default=4.0, show_default=True)
@click.option("--distill-alpha", type=float, default=0.5, show_default=True, help="Weight of the distillation loss.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tensorboard", is_flag=True, help="Also write TensorBoard logs to OUT-stem.train/tensorboard.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run from OUT-stem.train/state.pt.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def train(model_name: str, out: Path, as_json: bool, resume: bool, arch_args: tuple[str, ...], **kw: Any) -> int:
    """Train registered MODEL_NAME into a checkpoint that `deployopt build` takes with no other flags.

    Under `torchrun --nproc-per-node N -m deployopt train ...` the run is data-parallel (gloo on CPU,
    NCCL on CUDA). Metrics per epoch go to OUT-stem.train/metrics.csv.
    """
    from deployopt.api import TrainConfig
    from deployopt.api import train as run_train
    from deployopt.training.command import train_dir
    from deployopt.training.distributed import is_main_process

    config = TrainConfig(arch_kwargs=_key_values(arch_args), **kw)
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
