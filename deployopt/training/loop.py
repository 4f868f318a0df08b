"""One supervised training loop for classifiers: the demo recipe, pruning's fine-tune, distillation, ``train``.

The recipe names the optimizer and schedule (:mod:`deployopt.training.optim`), mixed precision (bf16 autocast on
CPU, fp16 with gradient scaling on CUDA), gradient accumulation and early stopping; the best epoch on
the validation split is kept. Hooks serve the other stages: ``masks`` (zeros that must stay zero — 2:4
and magnitude sparsity are re-applied after every step), ``teacher`` (knowledge distillation: KL
divergence on temperature-softened logits mixed with the hard-label loss) and ``group`` (data-parallel
across torchrun processes, :mod:`deployopt.training.distributed`). With ``state_path`` the full state — weights,
optimizer, schedule, scaler and both random generators — is written atomically after every epoch, so
``resume=True`` continues an interrupted run to the same result as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deployopt.errors import BackendUnavailableError, StageError, UsageError
from deployopt.fsutil import atomic_path
from deployopt.training.distributed import ProcessGroup
from deployopt.training.log import TrainLog, quiet_log
from deployopt.training.optim import LearningRate, Optimizer, Schedule, make_optimizer

Amp = Literal["off", "bf16", "fp16"]
STATE_FORMAT = "deployopt.train-state/1"


@dataclass(frozen=True)
class TrainRecipe:
    optimizer: Optimizer = "adamw"
    schedule: Schedule = "onecycle"
    epochs: int = 40
    lr: float = 3e-3
    weight_decay: float = 5e-4
    batch_size: int = 64  # global: split across processes under torchrun
    label_smoothing: float = 0.05
    warmup_steps: int | None = None  # optimizer steps; default: warmup_fraction of all steps
    warmup_fraction: float = 0.2
    grad_accum: int = 1  # micro-batches of batch_size per optimizer step
    amp: Amp = "off"
    early_stop: int | None = None  # stop after this many epochs without a better validation accuracy
    plateau_patience: int = 2  # schedule "plateau": epochs without a better validation accuracy before lr ÷ 10
    seed: int = 0
    device: str = "cpu"
    distill_temperature: float = 4.0
    distill_alpha: float = 0.5  # weight of the distillation term; 1 − alpha goes to the hard labels


@dataclass
class Progress:
    """Where a run stands; saved with the weights so ``--resume`` continues exactly."""

    epoch: int = 0
    step: int = 0
    best_val: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    epochs_without_gain: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def evaluate(model: Any, inputs: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent (fp32, on the model's device)."""
    import torch

    device = next(iter(model.parameters()), torch.empty(0)).device
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            logits = model(torch.from_numpy(inputs[start : start + batch_size]).to(device))
            correct += int((logits.argmax(1).cpu().numpy() == labels[start : start + batch_size]).sum())
    return 100.0 * correct / len(labels)


def apply_masks(model: Any, masks: dict[str, Any]) -> None:
    """Zero the pruned weights again (an optimizer step moves them)."""
    import torch

    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name].mul_(mask.to(parameters[name].device))


def _device(recipe: TrainRecipe) -> Any:
    import torch

    if recipe.device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("--device cuda: PyTorch sees no CUDA GPU here; train with --device cpu")
    if recipe.amp == "fp16" and recipe.device != "cuda":
        raise UsageError("--amp fp16 needs a CUDA GPU (gradient scaling); on CPU use --amp bf16")
    return torch.device(recipe.device)


def _loss(logits: Any, labels: Any, soft_targets: Any, recipe: TrainRecipe) -> Any:
    import torch.nn.functional as F

    loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
    if soft_targets is None:
        return loss
    temperature = recipe.distill_temperature
    distill = F.kl_div(
        F.log_softmax(logits.float() / temperature, dim=1), soft_targets, log_target=True, reduction="batchmean"
    ) * temperature**2  # fmt: skip
    return recipe.distill_alpha * distill + (1 - recipe.distill_alpha) * loss


class _Run:
    """The mutable parts of one training run, gathered so they can be saved and restored as one."""

    def __init__(self, model: Any, recipe: TrainRecipe, steps_per_epoch: int, device: Any) -> None:
        import torch

        total_steps = recipe.epochs * steps_per_epoch
        warmup = recipe.warmup_steps if recipe.warmup_steps is not None else int(recipe.warmup_fraction * total_steps)
        self.model, self.recipe, self.device = model, recipe, device
        self.optimizer = make_optimizer(model.parameters(), recipe.optimizer, recipe.lr, recipe.weight_decay)
        self.lr = LearningRate(self.optimizer, recipe.schedule, total_steps, warmup, recipe.plateau_patience)
        self.scaler = torch.amp.GradScaler(device.type, enabled=recipe.amp == "fp16")
        self.rng = np.random.default_rng(recipe.seed)
        self.progress = Progress()

    def save(self, path: Path) -> None:
        import torch

        payload = {
            "format": STATE_FORMAT,
            "recipe": asdict(self.recipe),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.state_dict(),
            "scaler": self.scaler.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            "progress": asdict(self.progress),
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    def restore(self, path: Path) -> None:
        import torch

        if not path.exists():
            raise UsageError(f"{path}: nothing to resume (no saved training state); run without --resume")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise UsageError(f"{path}: not a deployopt training state; run without --resume to start over")
        saved = state["recipe"]
        changed = [f"{k} {saved.get(k)!r} → {v!r}" for k, v in asdict(self.recipe).items() if saved.get(k) != v]
        if changed:
            listing = ", ".join(changed)
            raise UsageError(
                f"{path}: the run was started with other options ({listing}); resume with the same options "
                "or drop --resume to start over"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr.load_state_dict(state["lr"])
        self.scaler.load_state_dict(state["scaler"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"])
        self.progress = Progress(**state["progress"])


def train_classifier(
    model: Any,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    recipe: TrainRecipe = TrainRecipe(),
    *,
    augment: Callable[[Any, np.random.Generator], Any] | None = None,
    teacher: Any = None,
    masks: dict[str, Any] | None = None,
    log: TrainLog | None = None,
    state_path: Path | None = None,
    resume: bool = False,
    group: ProcessGroup | None = None,
) -> dict:
    """Train in place; load the best-validation weights at the end; return metrics with the epoch history."""
    import torch

    log = log or quiet_log()
    device = _device(recipe)
    torch.manual_seed(recipe.seed)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    x_train, y_train = torch.from_numpy(train[0]).to(device), torch.from_numpy(train[1]).to(device)
    batches_per_epoch = math.ceil(len(x_train) / recipe.batch_size)
    run = _Run(model, recipe, math.ceil(batches_per_epoch / recipe.grad_accum), device)
    if resume and state_path is not None:
        run.restore(state_path)
        log.message(f"  resuming after epoch {run.progress.epoch}/{recipe.epochs}")
    net = model
    if group is not None:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[group.local_rank] if device.type == "cuda" else None)
    progress = run.progress
    while progress.epoch < recipe.epochs and not progress.stopped_early:
        started = time.perf_counter()
        totals = _train_epoch(run, net, x_train, y_train, augment, teacher, masks, log, group)
        if group is not None:
            group.broadcast_buffers(model)
        val_accuracy = evaluate(model, *val)
        progress.epoch += 1
        progress.seconds += time.perf_counter() - started
        run.lr.end_epoch(val_accuracy)
        note = _record_epoch(progress, model, val_accuracy, recipe)
        row = {
            "epoch": progress.epoch,
            "step": progress.step,
            "lr": run.lr.current,
            "train_loss": round(totals[0] / totals[2], 6),
            "train_accuracy": round(100.0 * totals[1] / totals[2], 4),
            "val_accuracy": round(val_accuracy, 4),
            "seconds": round(progress.seconds, 3),
        }
        progress.history.append(row)
        if group is None or group.is_main:
            log.epoch(row, progress.history, recipe.epochs, note)
            if state_path is not None:
                run.save(state_path)
        if group is not None:
            group.barrier()
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    return {
        "optimizer": recipe.optimizer,
        "schedule": recipe.schedule,
        "lr": recipe.lr,
        "batch_size": recipe.batch_size,
        "grad_accum": recipe.grad_accum,
        "amp": recipe.amp,
        "device": recipe.device,
        "world_size": 1 if group is None else group.world_size,
        "epochs": recipe.epochs,
        "epochs_run": progress.epoch,
        "stopped_early": progress.stopped_early,
        "best_epoch": progress.best_epoch,
        "val_accuracy": progress.best_val,
        "train_seconds": round(progress.seconds, 2),
        "seed": recipe.seed,
        "history": progress.history,
    }


def _train_epoch(run: _Run, net, x_train, y_train, augment, teacher, masks, log: TrainLog, group) -> tuple:
    """One pass over the shuffled training set; returns (summed loss, correct, samples) over all ranks."""
    import torch
    import torch.nn.functional as F

    recipe, progress = run.recipe, run.progress
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.amp)
    net.train()
    order = torch.from_numpy(run.rng.permutation(len(x_train))).to(x_train.device)
    batches = list(torch.split(order, recipe.batch_size))
    loss_sum, correct, seen = 0.0, 0, 0
    for index, indices in enumerate(batches):
        if group is not None:
            indices = group.shard(indices)
        group_start = index - index % recipe.grad_accum
        accumulated = batches[group_start : group_start + recipe.grad_accum]
        steps_now = index == group_start + len(accumulated) - 1
        share = len(batches[index]) / sum(len(b) for b in accumulated)  # accumulated = one batch's mean
        inputs, labels = x_train[indices], y_train[indices]
        if augment is not None:
            inputs = augment(inputs, run.rng)
        soft_targets = None
        if teacher is not None:
            with torch.no_grad():
                soft_targets = F.log_softmax(teacher(inputs).float() / recipe.distill_temperature, dim=1)
        sync = contextlib.nullcontext() if group is None or steps_now else net.no_sync()
        with sync:
            with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = net(inputs)
            loss = _loss(logits, labels, soft_targets, recipe)
            if not torch.isfinite(loss):
                raise StageError(
                    f"training diverged: the loss became {loss.item()} at epoch {progress.epoch + 1}, step "
                    f"{progress.step + 1} (lr {run.lr.current:.3g}); lower --lr (now {recipe.lr:g}), e.g. to "
                    f"{recipe.lr / 10:g}"
                )
            run.scaler.scale(loss * share).backward()
        if steps_now:
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.optimizer.zero_grad(set_to_none=True)
            run.lr.step()
            progress.step += 1
            if masks:
                apply_masks(run.model, masks)
        loss_sum += loss.item() * len(indices)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(indices)
        log.batch(progress.epoch + 1, recipe.epochs, index + 1, len(batches), loss_sum / seen, 100.0 * correct / seen)
    totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64)
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(totals)
    return tuple(totals.tolist())


def _record_epoch(progress: Progress, model: Any, val_accuracy: float, recipe: TrainRecipe) -> str:
    """Keep the best weights (ties go to the later epoch); decide early stopping. Returns a note for the log."""
    if val_accuracy > progress.best_val:
        progress.epochs_without_gain = 0
    else:
        progress.epochs_without_gain += 1
    if val_accuracy >= progress.best_val:
        progress.best_val, progress.best_epoch = val_accuracy, progress.epoch
        progress.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if recipe.early_stop and progress.epochs_without_gain >= recipe.early_stop:
        progress.stopped_early = True
        return f"  (early stop: no better val accuracy in {recipe.early_stop} epochs; best epoch {progress.best_epoch})"
    return ""
