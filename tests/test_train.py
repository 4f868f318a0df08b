"""deployopt train: every optimizer and schedule lowers the loss; the checkpoint builds with no flags."""

from __future__ import annotations

import json

import pytest

from deployopt.models.digits import INPUT_NAME, load_digits_split
from deployopt.training import TrainRecipe, evaluate, train_classifier


@pytest.fixture(scope="module")
def digits_arrays():
    train, val = load_digits_split("train"), load_digits_split("val")
    return (train[0][INPUT_NAME], train[1]), (val[0][INPUT_NAME], val[1])


@pytest.mark.parametrize(
    ("optimizer", "schedule", "lr"),
    [
        ("sgd", "constant", 0.05),
        ("momentum", "step", 0.02),
        ("nesterov", "cosine", 0.02),
        ("adam", "constant", 3e-3),
        ("adamw", "onecycle", 3e-3),
        ("rmsprop", "cosine", 1e-3),
    ],
)
def test_each_optimizer_and_schedule_learns(digits_arrays, optimizer, schedule, lr):
    import torch

    from deployopt.models.digits import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN(width=8)
    train, val = digits_arrays
    before = evaluate(model, *val)
    recipe = TrainRecipe(optimizer=optimizer, schedule=schedule, lr=lr, epochs=3)
    metrics = train_classifier(model, train, val, recipe, log=lambda message: None)
    assert metrics["optimizer"] == optimizer and metrics["schedule"] == schedule
    assert metrics["val_accuracy"] > max(60.0, before + 30.0), (before, metrics["val_accuracy"])


def test_train_cli_writes_a_checkpoint_build_takes_without_flags(run_cli, tmp_path):
    out = tmp_path / "cnn.pt"
    code, stdout, err = run_cli("train", "digits-cnn", "-o", out, "--epochs", "3", "--optimizer", "adam", "--json")
    assert code == 0, err
    assert json.loads(stdout)["optimizer"] == "adam"
    code, _, err = run_cli("build", out, "--no-int8", "--no-fp16", "--no-bench", "-o", tmp_path / "run")
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown model 'nope'; registered models: digits-cnn"),
        (["digits-cnn", "--dataset", "nope"], "unknown dataset 'nope'; registered datasets: digits"),
        (["digits-cnn", "--teacher", "missing.pt"], "teacher model not found"),
    ],
)
def test_bad_train_input_is_one_clear_line(run_cli, tmp_path, args, message):
    code, _, err = run_cli("train", *args, "-o", tmp_path / "x.pt")
    assert code in (2, 3) and message in err and "Traceback" not in err
