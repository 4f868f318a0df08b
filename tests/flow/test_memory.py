"""Bounded memory: calibration, verification and the sensitivity analyses run in batches sized to the build's
memory budget (deployopt.data.memory), so a model with long inputs builds within it; the report says what ran at
a smaller batch and why. Peak memory is read from the kernel (the largest process of the build), not timed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tests.generated_models import waveform_model, waveforms

MIB = 1 << 20
PEAK = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def peak_of_build(*args) -> tuple[int, float]:
    """Exit code and peak resident memory (MiB) of the largest process of one ``deployopt build``."""
    command = [sys.executable, "-m", "deployopt", "build", *map(str, args)]
    code, kib = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True).stdout.split()
    return int(code), int(kib) / 1024


def test_long_waveforms_build_within_the_memory_budget(tmp_path):
    """3 s waveforms (≈ 70 MiB of activations per sample): with every batch as asked, the histogram calibration
    holds a batch of 16 samples' tensors; under --memory-budget-mb 256 the build stays far below and
    says which batches it reduced."""
    samples = 48000
    model = waveform_model(tmp_path / "wave.onnx", samples)
    np.savez(tmp_path / "calibration.npz", waveform=waveforms(16, samples))
    np.savez(tmp_path / "verification.npz", waveform=waveforms(8, samples, seed=1))
    common = [
        "--calibration", tmp_path / "calibration.npz", "--data", tmp_path / "verification.npz",
        "--runtime", "onnxruntime", "--no-fp16", "--no-bench", "--calibration-method", "percentile",
    ]  # fmt: skip
    code, bounded = peak_of_build(model, "-o", tmp_path / "bounded", *common, "--memory-budget-mb", "256")
    assert code == 0
    code, generous = peak_of_build(model, "-o", tmp_path / "generous", *common, "--memory-budget-mb", "16384")
    assert code == 0
    assert bounded < 1000 and generous > bounded + 500, (bounded, generous)
    notes = json.loads((tmp_path / "bounded" / "report.json").read_text())["notes"]
    (calibration,) = [n for n in notes if n.startswith("int8 calibration runs at batch")]
    assert "instead of 16: one sample's activations take ≈ 70 MiB" in calibration
    assert "the memory budget is 256 MiB (--memory-budget-mb 256)" in calibration
    generous_notes = json.loads((tmp_path / "generous" / "report.json").read_text())["notes"]
    assert not [n for n in generous_notes if "instead of" in n]


def test_the_activation_estimate_counts_every_intermediate_tensor(tmp_path):
    from deployopt.data.memory import MemoryBudget, MemoryPlan, activation_bytes_per_sample

    model = waveform_model(tmp_path / "wave.onnx", 16000, channels=8, layers=2)
    per_sample = activation_bytes_per_sample(model, {"waveform": waveforms(1, 16000)})
    # two convolutions and two ReLUs of 8 × 16000 floats, the pooled (8) and flattened (8) features, 8 logits
    assert per_sample == 4 * (4 * 8 * 16000 + 8 + 8 + 8)
    plan = MemoryPlan(MemoryBudget(3 * per_sample, "test"), per_sample)
    assert plan.batch(32) == 3 and plan.batch(32, copies=2) == 1 and plan.batch(2) == 2
