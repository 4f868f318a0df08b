"""``deployopt train``: train a registered model on a registered dataset into a deployopt checkpoint.

The checkpoint names its architecture and arguments, signature and dataset, and carries its metrics, so
``deployopt build CHECKPOINT`` needs no other flag. ``teacher`` distils from another model (a checkpoint
or any model source with the same inputs and classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployopt.errors import InputFileError, UsageError
from deployopt.training import Optimizer, Schedule


class TrainConfig(BaseModel):
    """Options of ``deployopt train``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str | None = Field(None, description="registered dataset; default: the model's own")
    optimizer: Optimizer = "adamw"
    schedule: Schedule = "onecycle"
    epochs: int | None = Field(None, ge=1, description="default: the model's registered recipe")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    seed: int = 0
    arch_kwargs: dict[str, Any] = Field(default_factory=dict, description="arguments for the model factory")
    teacher: Path | None = Field(None, description="distil from this model (soft targets + hard labels)")
    distill_temperature: float = Field(4.0, gt=0)
    distill_alpha: float = Field(0.5, ge=0, le=1)


def _entries(name: str, dataset: str | None):
    from deployopt import models

    entry = models.get_model(name)
    if entry is None:
        raise UsageError(f"unknown model '{name}'; registered models: {', '.join(models.model_names())}")
    dataset = dataset or entry.dataset
    if dataset is None:
        raise UsageError(
            f"model '{name}' has no registered dataset; pass --dataset ({', '.join(models.dataset_names())})"
        )
    if models.get_dataset(dataset) is None:
        raise UsageError(f"unknown dataset '{dataset}'; registered datasets: {', '.join(models.dataset_names())}")
    return entry, dataset


def train_model(name: str, out: str | Path, config: TrainConfig = TrainConfig(), log=print) -> dict:
    """Train registered model ``name`` and write the checkpoint atomically to ``out``; return its metrics."""
    import torch

    from deployopt.checkpoint import save_checkpoint
    from deployopt.data import dataset_data
    from deployopt.signature import Signature
    from deployopt.training import TrainRecipe, evaluate, train_classifier

    entry, dataset = _entries(name, config.dataset)
    signature = Signature.parse(entry.signature)
    if len(signature.inputs) != 1:
        raise UsageError(f"model '{name}' has {len(signature.inputs)} inputs; training supports one")
    splits = {}
    for split in ("train", "val", "test"):
        data = dataset_data(signature, dataset, split)
        splits[split] = (data.inputs[signature.names[0]], data.labels)
    teacher = None
    if config.teacher is not None:
        from deployopt.loading import load_torch_model
        from deployopt.sources import inspect_source

        if not Path(config.teacher).exists():
            raise InputFileError(f"{config.teacher}: teacher model not found; pass a trained checkpoint")
        teacher = load_torch_model(inspect_source(Path(config.teacher)))
    torch.manual_seed(config.seed)
    kwargs = {**entry.default_kwargs, **config.arch_kwargs}
    model = entry.factory(**kwargs)
    recipe = TrainRecipe(
        optimizer=config.optimizer,
        schedule=config.schedule,
        epochs=config.epochs or entry.train_epochs,
        lr=config.lr,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        label_smoothing=config.label_smoothing,
        seed=config.seed,
        distill_temperature=config.distill_temperature,
        distill_alpha=config.distill_alpha,
    )
    metrics = train_classifier(
        model, splits["train"], splits["val"], recipe, augment=entry.augment, teacher=teacher, log=log
    )
    metrics["test_accuracy"] = evaluate(model, *splits["test"])
    if teacher is not None:
        metrics["teacher_test_accuracy"] = evaluate(teacher, *splits["test"])
    save_checkpoint(out, model, arch=name, arch_kwargs=kwargs, signature=signature, dataset=dataset, metrics=metrics)
    return metrics
