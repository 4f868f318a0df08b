"""deployopt train end to end: checkpoints ``build`` takes without flags, kill and ``--resume``, two-process
DDP under torchrun, distillation to a smaller student, a user's own .npz / image folder, clear errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs_torchvision


def _checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True)


def _csv_rows(out: Path) -> list[dict]:
    with open(out.parent / f"{out.stem}.train" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_train_cli_writes_a_checkpoint_build_takes_without_flags(run_cli, tmp_path):
    out = tmp_path / "cnn.pt"
    code, stdout, err = run_cli(
        "train", "digits-cnn", "-o", out, "--epochs", "3", "--optimizer", "adam", "--arch-arg", "width=16", "--json"
    )
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["optimizer"] == "adam" and metrics["epochs_run"] == 3 and metrics["macs"] > 0
    saved = _checkpoint(out)
    assert saved["arch_kwargs"]["width"] == 16 and saved["dataset"] == "digits"
    assert saved["preprocessing"]["source"] == "registered"
    rows = _csv_rows(out)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    code, _, err = run_cli("build", out, "--no-int8", "--no-fp16", "--no-bench", "-o", tmp_path / "run")
    assert code == 0, err


def _train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "deployopt", "train", "digits-cnn", *args]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    import torch

    common = ["--epochs", "12", "--arch-arg", "width=16"]
    straight = tmp_path / "straight.pt"
    subprocess.run(_train_command("-o", str(straight), *common), check=True, capture_output=True)

    out = tmp_path / "killed.pt"
    process = subprocess.Popen(_train_command("-o", str(out), *common), stderr=subprocess.DEVNULL)
    metrics_csv = tmp_path / "killed.train" / "metrics.csv"
    deadline = time.monotonic() + 120
    while not (metrics_csv.exists() and len(metrics_csv.read_text().splitlines()) >= 4):  # header + 3 epochs
        assert process.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL and not out.exists()

    subprocess.run(_train_command("-o", str(out), *common, "--resume"), check=True, capture_output=True)
    expected, resumed = _checkpoint(straight), _checkpoint(out)
    for key in ("val_accuracy", "test_accuracy", "best_epoch"):
        assert resumed["metrics"][key] == expected["metrics"][key]
    for key, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert [row["train_loss"] for row in _csv_rows(out)] == [row["train_loss"] for row in _csv_rows(straight)]


def test_ctrl_c_says_how_to_resume(tmp_path):
    out = tmp_path / "cnn.pt"
    process = subprocess.Popen(
        _train_command("-o", str(out), "--epochs", "40"),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        # a suite started in the background inherits SIGINT ignored, and Python then never raises Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    state = tmp_path / "cnn.train" / "state.pt"
    deadline = time.monotonic() + 120
    while not state.exists():
        assert process.poll() is None and time.monotonic() < deadline, "training ended before it could be interrupted"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "add --resume to continue" in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.slow
def test_two_process_ddp_matches_single_process_training(tmp_path):
    """gloo on CPU; BatchNorm statistics stay per process (as in DDP), so results agree within tolerance."""
    common = ["--epochs", "6", "--augment", "none"]
    single = tmp_path / "single.pt"
    subprocess.run(_train_command("-o", str(single), *common), check=True, capture_output=True)
    parallel = tmp_path / "ddp.pt"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run(
        [*torchrun, "-m", "deployopt", "train", "digits-cnn", "-o", str(parallel), *common],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("ddp.pt: digits-cnn") == 1  # rank 0 reports, rank 1 stays quiet
    one, two = _checkpoint(single)["metrics"], _checkpoint(parallel)["metrics"]
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 1.5, (one["test_accuracy"], two["test_accuracy"])
    assert two["test_accuracy"] > 97.0
    for row_one, row_two in zip(one["history"], two["history"], strict=True):
        assert row_two["step"] == row_one["step"]  # the same global batches, split across the two processes
        assert row_two["train_loss"] == pytest.approx(row_one["train_loss"], rel=0.1)


def test_distilled_student_keeps_accuracy_at_a_quarter_of_the_macs_and_builds(run_cli, digits_checkpoint, tmp_path):
    student = tmp_path / "student.pt"
    code, stdout, err = run_cli(
        "train", "digits-cnn", "-o", student, "--arch-arg", "width=16", "--teacher", digits_checkpoint, "--json"
    )
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["teacher_macs"] >= 3 * metrics["macs"]
    assert metrics["test_accuracy"] >= metrics["teacher_test_accuracy"] - 1.0, metrics
    code, _, err = run_cli("build", student, "--no-bench", "-o", tmp_path / "run")
    assert code == 0, err


def test_own_npz_dataset_with_other_classes_trains_and_builds(run_cli, tmp_path):
    from deployopt.models.digits import INPUT_NAME, load_digits_split

    inputs, labels = load_digits_split("train")
    keep = labels < 4  # a 4-class problem: the model's output layer follows the data
    data = tmp_path / "mine.npz"
    np.savez(data, inputs=inputs[INPUT_NAME][keep], labels=labels[keep])
    out = tmp_path / "mine.pt"
    code, stdout, err = run_cli("train", "digits-cnn", "--dataset", data, "--epochs", "8", "-o", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["test_accuracy"] > 90.0
    saved = _checkpoint(out)
    assert saved["arch_kwargs"]["num_classes"] == 4 and saved["dataset"] == str(data.resolve())
    code, _, err = run_cli("build", out, "--no-int8", "--no-fp16", "--no-bench", "-o", tmp_path / "run")
    assert code == 0, err


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """The digits 0–2 written as 16×16 PNGs, one folder per class."""
    from PIL import Image

    from deployopt.models.digits import INPUT_NAME, load_digits_split

    root = tmp_path_factory.mktemp("images") / "digits-png"
    inputs, labels = load_digits_split("train")
    for index, (image, label) in enumerate(zip(inputs[INPUT_NAME][:, 0], labels, strict=True)):
        if label < 3:
            (root / f"class-{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 255).astype(np.uint8)).resize((16, 16)).save(root / f"class-{label}/{index}.png")
    return root


def test_image_folder_is_resized_to_the_model_input_recorded_and_built_on(run_cli, image_folder, tmp_path):
    out = tmp_path / "png.pt"
    code, stdout, err = run_cli(
        "train", "digits-cnn", "--dataset", image_folder, "--epochs", "15", "--batch-size", "16", "-o", out, "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["test_accuracy"] > 90.0
    preprocessing = _checkpoint(out)["preprocessing"]
    assert preprocessing["resize"] == [8, 8] and preprocessing["mode"] == "L"
    assert preprocessing["classes"] == ["class-0", "class-1", "class-2"]
    code, stdout, err = run_cli("build", out, "--no-int8", "--no-fp16", "--no-bench", "-o", tmp_path / "run")
    assert code == 0, err
    assert "digits-png (test)" in (tmp_path / "run" / "report.md").read_text()  # verified on the folder's test split


@needs_torchvision
def test_augment_spec_trains_through_torchvision(run_cli, tmp_path):
    out = tmp_path / "aug.pt"
    code, stdout, err = run_cli(
        "train", "digits-cnn", "-o", out, "--epochs", "3", "--augment", "crop:1,rotate:10,jitter:0.2", "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["augment"] == "crop:1,rotate:10,jitter:0.2"


def test_tensorboard_logs_hold_the_epoch_scalars(run_cli, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'deployopt[train]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb.pt"
    code, _, err = run_cli("train", "digits-cnn", "-o", out, "--epochs", "2", "--arch-arg", "width=8", "--tensorboard")
    assert code == 0, err
    events = EventAccumulator(str(tmp_path / "tb.train" / "tensorboard"))
    events.Reload()
    assert {"train_loss", "val_accuracy", "lr"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("val_accuracy")) == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nope"], 2, "unknown model 'nope'; registered models: digits-cnn"),
        (["digits-cnn", "--dataset", "nope"], 2, "unknown dataset 'nope'; registered datasets: digits"),
        (["digits-cnn", "--dataset", "digits32"], 2, "dataset 'digits32' does not match the model's inputs"),
        (["digits-cnn", "--teacher", "missing.pt"], 3, "teacher model not found"),
        (["digits-cnn", "--dataset", "missing.npz"], 3, "missing.npz: dataset not found"),
        (["digits-cnn", "--augment", "spin"], 2, "unknown augmentation 'spin'"),
        (["digits-cnn", "--amp", "fp16"], 2, "--amp fp16 needs a CUDA GPU"),
        (["digits-cnn", "--arch-arg", "width"], 2, "expected KEY=VALUE"),
        (["digits-cnn", "--resume"], 2, "nothing to resume"),
        (["digits-cnn", "--lr", "10000", "--optimizer", "sgd", "--schedule", "constant"], 4, "training diverged"),
    ],
)
def test_bad_train_input_is_one_clear_line(run_cli, tmp_path, args, code, message):
    got, _, err = run_cli("train", *args, "-o", tmp_path / "x.pt")
    assert got == code and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 2, err  # at most one progress line before the error
    assert not (tmp_path / "x.pt").exists()  # no checkpoint; metrics.csv/state.pt only for finished epochs
    if code != 4:  # stopped before the first epoch: not even the log folder
        assert not (tmp_path / "x.train").exists()


def test_npz_with_the_wrong_sample_shape_names_file_and_fix(run_cli, tmp_path):
    data = tmp_path / "flat.npz"
    np.savez(data, inputs=np.zeros((40, 64), np.float32), labels=np.arange(40) % 4)
    code, _, err = run_cli("train", "digits-cnn", "--dataset", data, "-o", tmp_path / "x.pt")
    assert code == 3 and "samples have shape [64]" in err and "reshape them (inputs.reshape(-1, 1, 8, 8))" in err
