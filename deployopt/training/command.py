"""``deployopt train``: train a registered model on a dataset into a deployopt checkpoint.

The checkpoint names its architecture and arguments, signature, dataset and preprocessing, and carries
its metrics, so ``deployopt build CHECKPOINT`` needs no other flag. The dataset is a registered name or
a user's ``.npz`` / image folder (:mod:`deployopt.data.user_data`). ``teacher`` distils from another model (a
checkpoint or any model source with the same inputs and classes). Beside the checkpoint ``OUT``, the
folder ``OUT-stem.train/`` holds ``metrics.csv``, the resumable ``state.pt`` and TensorBoard logs.
Launched by ``torchrun`` the run is data-parallel (:mod:`deployopt.training.distributed`); rank 0 writes files.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deployopt.errors import InputFileError, UsageError
from deployopt.training.loop import Amp
from deployopt.training.optim import Optimizer, Schedule


class TrainConfig(BaseModel):
    """Options of ``deployopt train``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str | None = Field(None, description="registered dataset, .npz file or image folder; default: model's")
    optimizer: Optimizer = Field("adamw", description="optimizer")
    schedule: Schedule = Field(
        "onecycle", description="learning-rate schedule; plateau: lr ÷ 10 after --plateau-patience epochs w/o gain"
    )
    epochs: int | None = Field(None, ge=1, description="default: the model's registered recipe")
    batch_size: int = Field(64, ge=1, description="global batch (split across torchrun processes)")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(5e-4, ge=0, description="decoupled weight decay (adamw) or L2 penalty")
    warmup_steps: int | None = Field(None, ge=0, description="linear warm-up; default 20 % of optimizer steps")
    label_smoothing: float = Field(0.05, ge=0, lt=1, description="cross-entropy label smoothing")
    augment: str | None = Field(None, description="spec like 'crop:1,rotate:10'; 'none'; default: the model's")
    amp: Amp = Field(
        "off", description="mixed precision: bf16 autocast (CPU or CUDA), fp16 with gradient scaling (CUDA)"
    )
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    early_stop: int | None = Field(None, ge=1, description="stop after N epochs without a better val accuracy")
    plateau_patience: int = Field(2, ge=1, description="schedule plateau: epochs without gain before lr ÷ 10")
    device: Literal["cpu", "cuda"] = Field("cpu", description="device to train on")
    seed: int = Field(0, description="seed for weights, data order and augmentation")
    arch_kwargs: dict[str, Any] = Field(default_factory=dict, description="arguments for the model factory")
    teacher: Path | None = Field(None, description="distil from this model (soft targets + hard labels)")
    distill_temperature: float = Field(4.0, gt=0, description="softmax temperature of the distillation loss")
    distill_alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation loss")
    tensorboard: bool = Field(False, description="also write TensorBoard logs (needs the tensorboard package)")


def train_dir(out: str | Path) -> Path:
    """Where a run's metrics.csv, resumable state and TensorBoard logs go: ``model.pt`` → ``model.train/``."""
    out = Path(out)
    return out.parent / f"{out.stem}.train"


def _entries(name: str, dataset: str | None):
    from deployopt import models
    from deployopt.data.user_data import is_dataset_path

    entry = models.get_model(name)
    if entry is None:
        raise UsageError(f"unknown model '{name}'; registered models: {', '.join(models.model_names())}")
    dataset = dataset or entry.dataset
    if dataset is None:
        raise UsageError(
            f"model '{name}' has no registered dataset; pass --dataset ({', '.join(models.dataset_names())}, "
            "an .npz file or an image folder)"
        )
    if is_dataset_path(dataset):
        return entry, str(Path(dataset).resolve())
    if models.get_dataset(dataset) is None:
        raise UsageError(
            f"unknown dataset '{dataset}'; registered datasets: {', '.join(models.dataset_names())} "
            "(or pass an .npz file or an image folder)"
        )
    return entry, dataset


def _load_splits(signature, dataset: str) -> tuple[dict, dict]:
    """The fixed train/val/test split (seed 0, whatever the training seed) and the preprocessing used."""
    from deployopt import models
    from deployopt.data.eval_data import dataset_data
    from deployopt.data.user_data import is_dataset_path, load_user_dataset

    splits = {}
    for split in ("train", "val", "test"):
        data = dataset_data(signature, dataset, split, seed=0)
        splits[split] = (data.inputs[signature.names[0]], data.labels)
    if is_dataset_path(dataset):
        return splits, load_user_dataset(dataset, signature, 0).preprocessing
    return splits, {"source": "registered", "description": models.get_dataset(dataset).description}


def _model_kwargs(entry, config: TrainConfig, num_classes: int) -> dict:
    """Registered defaults, then the user's; ``num_classes`` follows the dataset unless given."""
    kwargs = {**entry.default_kwargs, **config.arch_kwargs}
    if "num_classes" in inspect.signature(entry.factory).parameters and "num_classes" not in config.arch_kwargs:
        kwargs["num_classes"] = num_classes
    return kwargs


def _check_outputs(model, name: str, example, num_classes: int, dataset: str) -> None:
    import torch

    with torch.no_grad():
        outputs = model.eval()(example).shape[-1]
    if outputs < num_classes:
        raise UsageError(
            f"dataset {dataset} has {num_classes} classes but model '{name}' gives {outputs} outputs; "
            f"pass --arch-arg num_classes={num_classes}"
        )


def train_model(
    name: str,
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    log=print,
    *,
    resume: bool = False,
    logs: Path | None = None,
) -> dict:
    """Train registered model ``name`` and write the checkpoint atomically to ``out``; return its metrics.

    ``logs`` (default :func:`train_dir`) receives metrics.csv, the resumable state.pt and TensorBoard logs.
    """
    import torch

    from deployopt.measure.macs import count_macs_and_params
    from deployopt.sources.checkpoint import save_checkpoint
    from deployopt.sources.signature import Signature
    from deployopt.training.distributed import join_from_environment, leave
    from deployopt.training.log import TrainLog, quiet_log
    from deployopt.training.loop import TrainRecipe, evaluate, train_classifier

    entry, dataset = _entries(name, config.dataset)
    signature = Signature.parse(entry.signature)
    if len(signature.inputs) != 1:
        raise UsageError(f"model '{name}' has {len(signature.inputs)} inputs; training supports one")
    splits, preprocessing = _load_splits(signature, dataset)
    num_classes = int(max(labels.max() for _, labels in splits.values())) + 1
    teacher = _load_teacher(config.teacher)
    augment = _augment(entry, config, splits["train"][0].shape[1:])
    group = join_from_environment(config.device)
    try:
        if group is not None and config.device == "cuda":
            torch.cuda.set_device(group.local_rank)
        torch.manual_seed(config.seed)
        kwargs = _model_kwargs(entry, config, num_classes)
        model = entry.factory(**kwargs)
        example = torch.from_numpy(splits["val"][0][:1])
        _check_outputs(model, name, example, num_classes, dataset)
        shared = {f.name for f in fields(TrainRecipe)} & set(TrainConfig.model_fields) - {"epochs"}
        recipe = TrainRecipe(
            epochs=config.epochs or entry.train_epochs, **{name: getattr(config, name) for name in shared}
        )
        main = group is None or group.is_main
        logs = Path(logs) if logs is not None else train_dir(out)
        train_log = quiet_log()
        if main:  # files appear in `logs` only once an epoch has finished (no empty folder after bad input)
            tensorboard = logs / "tensorboard" if config.tensorboard else None
            train_log = TrainLog(csv_path=logs / "metrics.csv", tensorboard_dir=tensorboard, message=log)
        try:
            metrics = train_classifier(
                model, splits["train"], splits["val"], recipe, augment=augment, teacher=teacher,
                log=train_log, state_path=logs / "state.pt", resume=resume, group=group,
            )  # fmt: skip
        finally:
            train_log.close()
        model.cpu()
        metrics["test_accuracy"] = evaluate(model, *splits["test"])
        metrics["macs"], metrics["params"] = count_macs_and_params(model, example)
        metrics["augment"] = config.augment or ("default" if augment else "none")
        metrics["dataset"] = dataset
        if teacher is not None:
            teacher.cpu()
            metrics["teacher_test_accuracy"] = evaluate(teacher, *splits["test"])
            if isinstance(teacher, torch.jit.ScriptModule):
                log("  teacher is TorchScript: its MACs cannot be counted (forward hooks), so no MACs ratio")
            else:
                metrics["teacher_macs"], _ = count_macs_and_params(teacher, example)
        if main:
            save_checkpoint(
                out, model, arch=name, arch_kwargs=kwargs, signature=signature, dataset=dataset,
                metrics=metrics, preprocessing=preprocessing,
            )  # fmt: skip
        if group is not None:
            group.barrier()
        return metrics
    finally:
        leave(group)


def _load_teacher(path: Path | None):
    if path is None:
        return None
    from deployopt.sources.detect import inspect_source
    from deployopt.sources.loading import load_torch_model

    if not Path(path).exists():
        raise InputFileError(f"{path}: teacher model not found; pass a trained checkpoint")
    return load_torch_model(inspect_source(Path(path)))


def _augment(entry, config: TrainConfig, sample_shape: tuple[int, ...]):
    """``--augment`` spec, else the model's registered augmentation; ``none`` turns it off."""
    if config.augment is None or config.augment == "default":
        return entry.augment
    from deployopt.training.augment import build_augment

    return build_augment(config.augment, tuple(sample_shape))
