"""Peak memory and int8 search time of a build whose inputs are long: a 9 s, 16 kHz waveform (its batch-32 input
alone is 18 MB; one sample makes ~210 MiB of intermediate tensors). The same plain command twice, each in its own
process: with the default memory budget (a tenth of the free memory) and with a budget so large that every batch
runs as asked — what a build did before batches were sized to memory. Peak RSS is the largest process of the build
(the kernel's high-water mark, read with getrusage after it exits). Goals (#25): ≤ 3 GB, int8 search ≤ 150 s.

    python benchmarks/memory.py [--seconds 9] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.docs_table import header, publish  # noqa: E402
from tests.generated_models import waveform_model, waveforms  # noqa: E402

PEAK = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def run(model: Path, work: Path, label: str, extra: list[str]) -> dict:
    out = work / label
    command = [
        sys.executable, "-m", "deployopt", "build", str(model), "-o", str(out),
        "--calibration", str(work / "calibration.npz"), "--data", str(work / "verification.npz"), *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True, check=True)
    code, kib = result.stdout.split()
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "report.json").read_text())
    return {
        "label": label,
        "exit": int(code),
        "peak_gib": int(kib) / 2**20,
        "build_s": time.perf_counter() - started,
        "int8_search_s": manifest["stages"]["int8"]["details"]["search_seconds"],
        "memory_notes": [n for n in report["notes"] if "instead of" in n],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=9.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    samples = int(args.seconds * 16000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="deployopt-memory-") as tmp:
        work = Path(tmp)
        model = waveform_model(work / "wave.onnx", samples)
        np.savez(work / "calibration.npz", waveform=waveforms(32, samples))
        np.savez(work / "verification.npz", waveform=waveforms(16, samples, seed=1))
        common = ["--runtime", "onnxruntime", "--no-fp16"]
        rows.append(run(model, work, "default budget", common))
        rows.append(run(model, work, "every batch as asked", [*common, "--memory-budget-mb", "1000000"]))
    lines = [
        *header(
            "Memory of a long-input build",
            f"model: tests/generated_models.waveform_model, {args.seconds:g} s at 16 kHz (six 1-D convolutions of 32 "
            "channels), 32 calibration and 16 verification waveforms, `deployopt build --runtime onnxruntime "
            "--no-fp16` (batch sizes 1 and 32, int8 search with minmax and percentile)",
        ),
        "",
        "| run | exit | peak RSS (largest process) | int8 search | whole build |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['label']} | {r['exit']} | {r['peak_gib']:.2f} GiB | {r['int8_search_s']:.0f} s | {r['build_s']:.0f} s |"
        for r in rows
    ]
    lines += ["", "What the default run reduced:", ""] + [f"- {n}" for n in rows[0]["memory_notes"]]
    publish("\n".join(lines) + "\n", write=not args.no_write)


if __name__ == "__main__":
    main()
