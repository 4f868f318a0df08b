"""Optimizers and learning-rate schedules by name, with the state a resumed run needs.

Every schedule but one-cycle starts with a linear warm-up (``warmup_steps``); ``plateau`` then holds the
peak rate and divides it by 10 whenever validation accuracy has not improved for ``plateau_patience``
epochs. Steps are optimizer steps (after gradient accumulation), so a recipe means the same thing at any
``grad_accum``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Optimizer = Literal["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]
Schedule = Literal["constant", "step", "cosine", "onecycle", "plateau"]
PLATEAU_FACTOR = 0.1


def make_optimizer(parameters: Any, name: Optimizer, lr: float, weight_decay: float) -> Any:
    import torch

    return {
        "sgd": lambda: torch.optim.SGD(parameters, lr=lr, weight_decay=weight_decay),
        "momentum": lambda: torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay),
        "nesterov": lambda: torch.optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay),
        "adam": lambda: torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay),
        "adamw": lambda: torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay),
        "rmsprop": lambda: torch.optim.RMSprop(parameters, lr=lr, weight_decay=weight_decay),
    }[name]()


class LearningRate:
    """A per-step schedule plus the per-epoch plateau rule; ``state_dict`` round-trips for ``--resume``."""

    def __init__(
        self, optimizer: Any, schedule: Schedule, total_steps: int, warmup_steps: int, plateau_patience: int = 2
    ) -> None:
        import torch

        self.schedule = schedule
        self.plateau_patience = plateau_patience
        self.best_val = -math.inf
        self.epochs_without_gain = 0
        if schedule == "onecycle":
            peak = optimizer.param_groups[0]["lr"]
            pct_start = min(0.5, max(1, warmup_steps) / max(1, total_steps))
            self._scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=peak, total_steps=max(1, total_steps), pct_start=pct_start
            )
            return
        warmup = max(1, warmup_steps)
        decay_steps = max(1, total_steps - warmup)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / decay_steps)
            if schedule == "cosine":
                return 0.5 * (1 + math.cos(math.pi * progress))
            if schedule == "step":
                return 0.1 ** min(2, int(progress * 3))  # ÷10 at one and two thirds of training
            return 1.0  # constant; plateau scales base_lrs instead (see end_epoch)

        self._scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    @property
    def current(self) -> float:
        return float(self._scheduler.get_last_lr()[0])

    def step(self) -> None:
        self._scheduler.step()

    def end_epoch(self, val_accuracy: float) -> None:
        """The plateau rule: after ``plateau_patience`` epochs without a better validation accuracy, lr ÷ 10."""
        if self.schedule != "plateau":
            return
        if val_accuracy > self.best_val:
            self.best_val, self.epochs_without_gain = val_accuracy, 0
            return
        self.epochs_without_gain += 1
        if self.epochs_without_gain >= self.plateau_patience:
            self._scheduler.base_lrs = [lr * PLATEAU_FACTOR for lr in self._scheduler.base_lrs]
            self.epochs_without_gain = 0

    def state_dict(self) -> dict:
        return {
            "scheduler": self._scheduler.state_dict(),
            "best_val": self.best_val,
            "epochs_without_gain": self.epochs_without_gain,
        }

    def load_state_dict(self, state: dict) -> None:
        self._scheduler.load_state_dict(state["scheduler"])
        self.best_val, self.epochs_without_gain = state["best_val"], state["epochs_without_gain"]
