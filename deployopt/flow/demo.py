"""The built-in demo: train the digits CNN if no checkpoint exists, then ``build`` it end to end."""

from __future__ import annotations

from pathlib import Path

from deployopt.flow.build import DEFAULT_OUT_ROOT, BuildConfig, Progress, build
from deployopt.reports.model import BuildReport
from deployopt.training.command import TrainConfig, train_model

DEMO_CHECKPOINT = "digits-cnn.pt"
DEMO_MODEL = "digits-cnn"
DEMO_RECIPE = TrainConfig(epochs=40, arch_kwargs={"width": 32})  # ≥ 98 % test accuracy in ~15 s on 2 cores


def train_demo_model(out: str | Path, log=print) -> dict:
    """Train the demo CNN with its recipe into the checkpoint ``out``; return the training metrics."""
    return train_model(DEMO_MODEL, out, DEMO_RECIPE, log)


def run_demo(
    out_root: str | Path = DEFAULT_OUT_ROOT, config: BuildConfig | None = None, progress: Progress = print
) -> BuildReport:
    """Train (once) and build the digits CNN; the checkpoint and run directory live under ``out_root``."""
    out_root = Path(out_root)
    checkpoint = out_root / DEMO_CHECKPOINT
    if checkpoint.exists():
        progress(f"demo: using the trained checkpoint {checkpoint}")
    else:
        progress(f"demo: training the digits CNN on the UCI 8×8 digits → {checkpoint}")
        metrics = train_demo_model(checkpoint, log=progress)
        progress(f"demo: test accuracy {metrics['test_accuracy']:.2f}% after {metrics['train_seconds']:.1f} s")
    config = (config or BuildConfig()).model_copy(update={"out": out_root / checkpoint.stem})
    return build(checkpoint, config, progress)
