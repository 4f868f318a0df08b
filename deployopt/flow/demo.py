"""The built-in demo: train the digits CNN if no checkpoint exists, then ``build`` it end to end."""

from __future__ import annotations

from pathlib import Path

from deployopt.flow.build import DEFAULT_OUT_ROOT, BuildConfig, Progress, build
from deployopt.reports.model import BuildReport

DEMO_CHECKPOINT = "digits-cnn.pt"


def run_demo(
    out_root: str | Path = DEFAULT_OUT_ROOT, config: BuildConfig | None = None, progress: Progress = print
) -> BuildReport:
    """Train (once) and build the digits CNN; the checkpoint and run directory live under ``out_root``."""
    from deployopt.models.digits import train_digits

    out_root = Path(out_root)
    checkpoint = out_root / DEMO_CHECKPOINT
    if checkpoint.exists():
        progress(f"demo: using the trained checkpoint {checkpoint}")
    else:
        progress(f"demo: training the digits CNN on the UCI 8×8 digits → {checkpoint}")
        metrics = train_digits(checkpoint, log=progress)
        progress(f"demo: test accuracy {metrics['test_accuracy']:.2f}% after {metrics['train_seconds']:.1f} s")
    config = (config or BuildConfig()).model_copy(update={"out": out_root / checkpoint.stem})
    return build(checkpoint, config, progress)
