"""Training benchmark on the digits CNN: every run is its own ``deployopt train`` process.

1. Optimizers × schedules (default recipe otherwise: 40 epochs, batch 64, peak lr per optimizer):
   test accuracy, best validation accuracy, the first epoch with ≥ 98 % validation accuracy, wall time.
2. Mixed precision (off / bf16 autocast), augmentation (none / the registered shift / a torchvision spec),
   data-parallel (1 process / 2 torchrun processes with gloo) — accuracy and training time.
3. Distillation: students at width 16 and 8 trained alone and from the width-32 teacher; MACs ratio.

Timings are training seconds reported by the run (epochs + validation, no start-up), medians over
``--repeats``; accuracies come from the first repeat (seeded: every repeat trains the same weights).

    python benchmarks/train.py [--repeats 3] [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

LEARNING_RATES = {"sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "adam": 3e-3, "adamw": 3e-3, "rmsprop": 1e-3}
SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def train(workdir: Path, name: str, args: list[str], repeats: int, launcher: list[str] | None = None) -> dict:
    """Run ``deployopt train digits-cnn`` ``repeats`` times; metrics of the first run, median seconds."""
    out = workdir / f"{name}.pt"
    seconds, first = [], None
    for _ in range(repeats):
        command = [*(launcher or [sys.executable]), "-m", "deployopt", "train", "digits-cnn", "-o", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if launcher else dict(os.environ)
        result = subprocess.run([*command, *args, "--json"], capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
        metrics = json.loads(result.stdout)
        seconds.append(metrics["train_seconds"])
        first = first or metrics
    first["median_seconds"] = statistics.median(seconds)
    reached = (row["epoch"] for row in first["history"] if row["val_accuracy"] >= 98.0)
    first["epochs_to_98"] = next(reached, "never")
    print(f"{name}: test {first['test_accuracy']:.2f}%  {first['median_seconds']:.1f} s", file=sys.stderr)
    return first


def grid_table(results: dict[tuple[str, str], dict]) -> str:
    lines = [
        "| optimizer (peak lr) | schedule | test acc | best val acc | epochs to 98 % val | train s |",
        "|---|---|---|---|---|---|",
    ]
    for (optimizer, schedule), m in results.items():
        lines.append(
            f"| {optimizer} ({LEARNING_RATES[optimizer]:g}) | {schedule} | {m['test_accuracy']:.2f} % | "
            f"{m['val_accuracy']:.2f} % | {m['epochs_to_98']} | {m['median_seconds']:.1f} |"
        )
    return "\n".join(lines)


def variant_table(rows: dict[str, dict], baseline: str) -> str:
    base = rows[baseline]["median_seconds"]
    lines = ["| variant | test acc | epochs to 98 % val | train s | time vs first row |", "|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['test_accuracy']:.2f} % | {m['epochs_to_98']} | {m['median_seconds']:.1f} | "
            f"{m['median_seconds'] / base:.2f}× |"
        )
    return "\n".join(lines)


def distill_table(rows: dict[str, dict], teacher: dict) -> str:
    lines = [
        "| student | MACs | teacher MACs / student MACs | test acc | vs teacher |",
        "|---|---|---|---|---|",
        f"| teacher (width 32) | {teacher['macs'] / 1e6:.2f} M | 1.0× | {teacher['test_accuracy']:.2f} % | – |",
    ]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['macs'] / 1e6:.2f} M | {teacher['macs'] / m['macs']:.1f}× | {m['test_accuracy']:.2f} % | "
            f"{m['test_accuracy'] - teacher['test_accuracy']:+.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--markdown", type=Path)
    options = parser.parse_args()
    sections = [
        f"Measured {date.today()} on {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"`python benchmarks/train.py --repeats {options.repeats}`."
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        grid = {
            (optimizer, schedule): train(
                work,
                f"{optimizer}-{schedule}",
                ["--optimizer", optimizer, "--schedule", schedule, "--lr", str(lr)],
                options.repeats,
            )
            for optimizer, lr in LEARNING_RATES.items()
            for schedule in SCHEDULES
        }
        sections.append("### Optimizers and schedules (digits CNN, width 32, 40 epochs)\n\n" + grid_table(grid))
        teacher = grid[("adamw", "onecycle")]
        variants = {
            "default (fp32, shift augmentation, 1 process)": teacher,
            "--amp bf16": train(work, "bf16", ["--amp", "bf16"], options.repeats),
            "--augment none": train(work, "no-augment", ["--augment", "none"], options.repeats),
            "--augment crop:1,rotate:10": train(work, "tv-augment", ["--augment", "crop:1,rotate:10"], options.repeats),
            "2 processes (torchrun, gloo, 1 thread each)": train(work, "ddp", [], options.repeats, TORCHRUN),
        }
        sections.append("### Precision, augmentation, processes\n\n" + variant_table(variants, next(iter(variants))))
        students = {}
        for width in (16, 8):
            students[f"width {width}, alone"] = train(work, f"w{width}", ["--arch-arg", f"width={width}"], 1)
            students[f"width {width}, distilled"] = train(
                work, f"w{width}-kd", ["--arch-arg", f"width={width}", "--teacher", str(work / "adamw-onecycle.pt")], 1
            )
        sections.append("### Distillation from the width-32 model\n\n" + distill_table(students, teacher))
    text = "\n\n".join(sections) + "\n"
    print(text)
    if options.markdown:
        options.markdown.write_text(text)


if __name__ == "__main__":
    main()
