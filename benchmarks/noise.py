"""Does the recommendation survive noise? The same build, twice, from scratch, while a background job loads one of
the cores — each run must name the same winner, or call the close ones a tie (never two confident, different
answers). Records each run's recommendation per batch, its tie and spread in docs/benchmarks.md.

    python benchmarks/noise.py [--model resnet18] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"


def _busy() -> None:
    """The background job: pure-Python arithmetic on one core, for as long as the builds run."""
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


def _model(name: str, work: Path) -> list[str]:
    import numpy as np
    import torch
    import torchvision

    torch.manual_seed(0)
    weights = work / f"{name}.pth"
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), weights)
    rng = np.random.default_rng(0)  # smooth "images": low-frequency noise upsampled, as benchmarks/quantize.py
    coarse = rng.standard_normal((128, 3, 7, 7)).astype(np.float32)
    images = np.repeat(np.repeat(coarse, 32, axis=2), 32, axis=3) + 0.1 * rng.standard_normal((128, 3, 224, 224))
    calibration = work / "calibration.npz"
    np.savez(calibration, input=images.astype(np.float32))
    model = [str(weights), "--arch", f"torchvision:{name}", "--input", "input:batch,3,224,224"]
    return [*model, "--calibration", str(calibration)]


def _build(model_args: list[str], run: Path) -> dict:
    command = [sys.executable, "-m", "deployopt", "build", *model_args, "-o", str(run), "--no-fp16"]
    command += ["--samples", "64", "--threads", "2"]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=run.parent)
    if not (run / "report.json").exists():
        raise SystemExit(f"build failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return json.loads((run / "report.json").read_text())


def consistent(first: dict, second: dict) -> bool:
    """Never two confident, different answers: the same winner, or one run called the other's winner a tie."""
    return (
        first["variant"] == second["variant"]
        or second["variant"] in first["tied"]
        or first["variant"] in second["tied"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from deployopt.platform.cpu import describe_cpu

    hog = multiprocessing.Process(target=_busy, daemon=True)
    hog.start()
    try:
        with tempfile.TemporaryDirectory(prefix="deployopt-noise-") as tmp:
            work = Path(tmp)
            model = _model(args.model, work)
            reports = [_build(model, work / f"run{i}") for i in (1, 2)]
    finally:
        hog.terminate()
    rows, verdicts = [], []
    for batch in reports[0]["batch_sizes"]:
        picks = [next((r for r in rep["recommendations"] if r["batch"] == batch), None) for rep in reports]
        if None in picks:
            continue
        ok = consistent(*picks)
        verdicts.append(ok)
        for run, pick in enumerate(picks, 1):
            tie = ", ".join(pick["tied"]) or "–"
            spread = f"{pick['spread']:.1%}" if pick.get("spread") is not None else "–"
            rows.append(
                f"| {batch} | {run} | {pick['variant']} | {tie} | {spread} over {pick['rounds']} rounds "
                f"| {'same answer or a tie' if ok else 'two confident, different answers'} |"
            )
    command = ("python benchmarks/noise.py " + " ".join(sys.argv[1:])).strip()
    table = "\n".join(
        [
            f"## The recommendation under noise — {date.today().isoformat()}",
            "",
            f"- Machine: {describe_cpu()}; one core kept busy by a background job the whole time",
            f"- Command: `{command}` (two builds of {args.model} from scratch, `--no-fp16`, 2 threads)",
            "",
            "| batch | build | recommended | tie (within the noise) | fastest's spread | verdict |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Consistent at {sum(verdicts)} of {len(verdicts)} batch sizes.",
        ]
    )
    print(table)
    if not args.no_write:
        DOCS.write_text(DOCS.read_text().rstrip() + "\n\n" + table + "\n")
    raise SystemExit(0 if all(verdicts) else 1)


if __name__ == "__main__":
    main()
