"""The training loop on the real digits data: every optimizer and schedule learns, gradient accumulation is
exact, early stopping, mixed precision, a diverging run stops with the step named, resume is exact."""

from __future__ import annotations

import itertools

import pytest

from deployopt.errors import StageError, UsageError
from deployopt.models.digits import INPUT_NAME, DigitsCNN, load_digits_split
from deployopt.training.log import TrainLog
from deployopt.training.loop import TrainRecipe, evaluate, train_classifier


@pytest.fixture(scope="module")
def digits_arrays():
    train, val = load_digits_split("train"), load_digits_split("val")
    return (train[0][INPUT_NAME], train[1]), (val[0][INPUT_NAME], val[1])


def _cnn(seed: int = 0, width: int = 16):
    import torch

    torch.manual_seed(seed)
    return DigitsCNN(width=width)


def _mlp(seed: int = 0):
    """No BatchNorm and no dropout: micro-batching cannot change its gradients."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.mark.parametrize(
    ("optimizer", "schedule", "lr"),
    [
        ("sgd", "constant", 0.05),
        ("momentum", "step", 0.02),
        ("nesterov", "cosine", 0.02),
        ("adam", "plateau", 3e-3),
        ("adamw", "onecycle", 3e-3),
        ("rmsprop", "cosine", 1e-3),
    ],
)
def test_each_optimizer_and_schedule_lowers_the_loss(digits_arrays, optimizer, schedule, lr):
    model = _cnn()
    train, val = digits_arrays
    before = evaluate(model, *val)
    metrics = train_classifier(model, train, val, TrainRecipe(optimizer=optimizer, schedule=schedule, lr=lr, epochs=5))
    losses = [row["train_loss"] for row in metrics["history"]]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.6 * losses[0], losses
    assert metrics["optimizer"] == optimizer and metrics["schedule"] == schedule
    assert metrics["val_accuracy"] > max(80.0, before + 50.0), (before, metrics["val_accuracy"])


def test_gradient_accumulation_equals_the_large_batch(digits_arrays):
    import torch

    train, val = digits_arrays
    recipes = {
        "one batch of 64": TrainRecipe(optimizer="sgd", schedule="constant", lr=0.1, batch_size=64, epochs=2),
        "2 × 32 accumulated": TrainRecipe(
            optimizer="sgd", schedule="constant", lr=0.1, batch_size=32, grad_accum=2, epochs=2
        ),
    }
    weights = {}
    for name, recipe in recipes.items():
        model = _mlp()
        metrics = train_classifier(model, train, val, recipe, augment=None)
        weights[name] = model.state_dict()
        assert metrics["history"][-1]["step"] == 2 * 17  # 1078 samples / 64 per step
    for key, value in weights["one batch of 64"].items():
        torch.testing.assert_close(weights["2 × 32 accumulated"][key], value, rtol=1e-4, atol=1e-5)


def test_early_stop_ends_the_run_after_patience_epochs_without_gain(digits_arrays):
    train, val = digits_arrays
    recipe = TrainRecipe(schedule="constant", lr=0.0, warmup_steps=0, epochs=10, early_stop=2)
    metrics = train_classifier(_mlp(), train, val, recipe)  # frozen weights: no epoch after the first is better
    assert metrics["stopped_early"] and metrics["epochs_run"] == 3
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]


def test_a_diverging_run_stops_naming_the_step_and_the_fix(digits_arrays):
    train, val = digits_arrays
    with pytest.raises(StageError, match=r"loss became nan at epoch 1, step \d+ .*lower --lr \(now 10000\)"):
        train_classifier(_cnn(), train, val, TrainRecipe(optimizer="sgd", schedule="constant", lr=1e4, epochs=1))


def test_bf16_autocast_on_cpu_learns_and_fp16_asks_for_a_gpu(digits_arrays):
    train, val = digits_arrays
    full = train_classifier(_cnn(), train, val, TrainRecipe(epochs=5))
    mixed = train_classifier(_cnn(), train, val, TrainRecipe(amp="bf16", epochs=5))
    assert mixed["amp"] == "bf16" and mixed["val_accuracy"] > 90.0
    assert abs(mixed["val_accuracy"] - full["val_accuracy"]) < 3.0
    with pytest.raises(UsageError, match="--amp fp16 needs a CUDA GPU"):
        train_classifier(_cnn(), train, val, TrainRecipe(amp="fp16", epochs=1))


class _Interrupt(Exception):
    pass


class _StopAfter(TrainLog):
    """Interrupts the run while epoch ``epoch`` is being reported (its state is not yet saved)."""

    def __init__(self, epoch: int) -> None:
        super().__init__(message=lambda text: None)
        self.stop_epoch = epoch

    def epoch(self, row, history, epochs, note=""):
        if row["epoch"] == self.stop_epoch:
            raise _Interrupt
        super().epoch(row, history, epochs, note)


def test_resume_continues_to_exactly_the_uninterrupted_result(digits_arrays, tmp_path):
    import numpy as np
    import torch

    from deployopt.models.digits import shift_augment

    train, val = digits_arrays
    recipe = TrainRecipe(epochs=5, schedule="cosine")
    straight = _cnn()
    expected = train_classifier(straight, train, val, recipe, augment=shift_augment, state_path=tmp_path / "a.pt")

    interrupted = _cnn()
    with pytest.raises(_Interrupt):
        train_classifier(
            interrupted, train, val, recipe, augment=shift_augment, state_path=tmp_path / "b.pt", log=_StopAfter(3)
        )
    resumed_model = _cnn(seed=123)  # fresh weights: everything must come from the saved state
    resumed = train_classifier(
        resumed_model, train, val, recipe, augment=shift_augment, state_path=tmp_path / "b.pt", resume=True
    )
    for key in ("val_accuracy", "best_epoch", "epochs_run"):
        assert resumed[key] == expected[key]
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in expected["history"]]
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    assert np.isfinite(resumed["train_seconds"])


def test_resume_refuses_other_options_and_a_missing_state(digits_arrays, tmp_path):
    train, val = digits_arrays
    state = tmp_path / "state.pt"
    train_classifier(_cnn(), train, val, TrainRecipe(epochs=1), state_path=state)
    with pytest.raises(UsageError, match=r"started with other options \(lr 0.003 → 0.01\)"):
        train_classifier(_cnn(), train, val, TrainRecipe(epochs=1, lr=0.01), state_path=state, resume=True)
    with pytest.raises(UsageError, match="nothing to resume"):
        train_classifier(_cnn(), train, val, TrainRecipe(epochs=1), state_path=tmp_path / "none.pt", resume=True)
