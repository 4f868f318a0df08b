"""One supervised training loop for classifiers, shared by the demo recipe, pruning's fine-tune and distillation.

AdamW with a one-cycle schedule, optional label smoothing and augmentation, and the best epoch on the
validation split kept. Two hooks make it serve pruning: ``masks`` (zeros that must stay zero — 2:4 and
magnitude sparsity are re-applied after every step) and ``teacher`` (knowledge distillation: KL divergence
on temperature-softened logits mixed with the hard-label loss).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Optimizer = Literal["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]
Schedule = Literal["constant", "step", "cosine", "onecycle"]  # all but onecycle: linear warm-up first


@dataclass(frozen=True)
class TrainRecipe:
    optimizer: Optimizer = "adamw"
    schedule: Schedule = "onecycle"
    epochs: int = 40
    lr: float = 3e-3
    weight_decay: float = 5e-4
    batch_size: int = 64
    label_smoothing: float = 0.05
    warmup_fraction: float = 0.2
    seed: int = 0
    distill_temperature: float = 4.0
    distill_alpha: float = 0.5  # weight of the distillation term; 1 − alpha goes to the hard labels


def evaluate(model: Any, inputs: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent."""
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            logits = model(torch.from_numpy(inputs[start : start + batch_size]))
            correct += int((logits.argmax(1).numpy() == labels[start : start + batch_size]).sum())
    return 100.0 * correct / len(labels)


def apply_masks(model: Any, masks: dict[str, Any]) -> None:
    """Zero the pruned weights again (an optimizer step moves them)."""
    import torch

    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name].mul_(mask)


def make_optimizer(model: Any, recipe: TrainRecipe, total_steps: int) -> tuple[Any, Any]:
    """The optimizer and a per-batch learning-rate schedule named by ``recipe``."""
    import math

    import torch

    params, lr, decay = model.parameters(), recipe.lr, recipe.weight_decay
    optimizer = {
        "sgd": lambda: torch.optim.SGD(params, lr=lr, weight_decay=decay),
        "momentum": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=decay),
        "nesterov": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=decay),
        "adam": lambda: torch.optim.Adam(params, lr=lr, weight_decay=decay),
        "adamw": lambda: torch.optim.AdamW(params, lr=lr, weight_decay=decay),
        "rmsprop": lambda: torch.optim.RMSprop(params, lr=lr, weight_decay=decay),
    }[recipe.optimizer]()
    if recipe.schedule == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total_steps, pct_start=recipe.warmup_fraction
        )
        return optimizer, schedule
    warmup = max(1, int(recipe.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if recipe.schedule == "step":
            return 0.1 ** int(progress * 3)  # ÷10 at one and two thirds of training
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_classifier(
    model: Any,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    recipe: TrainRecipe = TrainRecipe(),
    *,
    augment: Callable[[Any, np.random.Generator], Any] | None = None,
    teacher: Any = None,
    masks: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train in place; load the best-validation weights at the end; return metrics."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    x_train, y_train = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    steps_per_epoch = (len(x_train) + recipe.batch_size - 1) // recipe.batch_size
    optimizer, schedule = make_optimizer(model, recipe, recipe.epochs * steps_per_epoch)
    if teacher is not None:
        teacher.eval()
    started = time.perf_counter()
    best_val, best_state, loss = -1.0, None, torch.tensor(float("nan"))
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x_train)))
        for start in range(0, len(order), recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            batch = augment(x_train[idx], rng) if augment else x_train[idx]
            logits = model(batch)
            loss = F.cross_entropy(logits, y_train[idx], label_smoothing=recipe.label_smoothing)
            if teacher is not None:
                with torch.no_grad():
                    soft_targets = F.log_softmax(teacher(batch) / recipe.distill_temperature, dim=1)
                distill = F.kl_div(
                    F.log_softmax(logits / recipe.distill_temperature, dim=1), soft_targets, log_target=True,
                    reduction="batchmean",
                ) * recipe.distill_temperature**2  # fmt: skip
                loss = recipe.distill_alpha * distill + (1 - recipe.distill_alpha) * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if masks:
                apply_masks(model, masks)
        val_acc = evaluate(model, *val)
        if val_acc >= best_val:
            best_val = val_acc
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if (epoch + 1) % 10 == 0 or epoch == recipe.epochs - 1:
            log(f"  epoch {epoch + 1:3d}/{recipe.epochs}  loss {loss.item():.3f}  val {val_acc:.2f}%")
    if best_state is not None:
        model.load_state_dict(best_state)
    return {
        "optimizer": recipe.optimizer,
        "schedule": recipe.schedule,
        "val_accuracy": best_val,
        "train_seconds": round(time.perf_counter() - started, 2),
        "epochs": recipe.epochs,
        "seed": recipe.seed,
    }
