"""Benchmarking: latency percentiles, throughput and peak memory, each model in its own process.

Measuring PyTorch and ONNX Runtime in one process distorts both (thread pools fight over the cores),
so every (variant, repeat) runs in a fresh worker (``python -m deployopt.measure.bench_worker``) and the
workers run one after another. With ``repeats`` > 1 the variants are interleaved round-robin and the
median over repeats is reported, which is what makes ratios between variants trustworthy on a noisy
shared machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from deployopt import errors
from deployopt.runners import RunnerSpec
from deployopt.sources.signature import Signature

if TYPE_CHECKING:
    from deployopt.data.eval_data import EvalData

# -P (Python ≥ 3.11): do not put the working directory first on sys.path, so a worker started inside a source
# checkout imports the installed deployopt, as its parent did, not the folder it happens to run in.
_SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []


class BenchConfig(BaseModel):
    """Options of ``deployopt bench`` and of the bench step of ``deployopt build``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_sizes: tuple[int, ...] = Field((1, 32), min_length=1, description="batch sizes to measure, comma-separated")
    threads: int | None = Field(None, ge=1, description="intra-op threads; default: all cores")
    warmup_seconds: float = Field(0.3, ge=0, description="untimed calls first, for this long")
    min_iterations: int = Field(
        5, ge=1, description="at least this many timed calls per batch size (3 once calls total 3 s)"
    )
    min_seconds: float = Field(1.0, ge=0, description="time each batch size for at least this long")
    max_seconds: float = Field(30.0, gt=0, description="stop measuring one batch size after this long")
    repeats: int = Field(1, ge=1, description="separate worker processes per variant; medians are reported")
    seed: int = Field(0, description="seed of the generated benchmark inputs")

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


@dataclass
class Measurement:
    variant: str
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # samples per second
    iterations: int
    peak_rss_mb: float
    repeats: int = 1
    # GPU runners: device time of the computation alone (CUDA events), without copies and synchronisation.
    gpu_p50_ms: float | None = None
    gpu_p90_ms: float | None = None
    gpu_p99_ms: float | None = None
    p50_per_repeat_ms: list[float] = field(default_factory=list)  # the spread the baseline gate reads as noise

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BenchVariant:
    label: str
    spec: RunnerSpec


def _run_worker(
    variant: BenchVariant, signature: Signature, config: BenchConfig, data: tuple[Path, str] | None
) -> list[dict]:
    threads = config.resolved_threads()
    spec = RunnerSpec.from_json({**variant.spec.to_json(), "threads": threads})
    with tempfile.TemporaryDirectory(prefix="deployopt-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        job = {
            "spec": spec.to_json(),
            "signature": signature.to_json(),
            "config": config.model_dump(),
            "result_path": str(result_path),
            "data_path": str(data[0]) if data else None,
            "data_origin": data[1] if data else None,
        }
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        proc = subprocess.run(
            [sys.executable, *_SAFE_PATH, "-m", "deployopt.measure.bench_worker"],
            input=json.dumps(job),
            text=True,
            capture_output=True,
            env=env,
            check=False,
        )
        if not result_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise errors.StageError(
                f"benchmark worker for '{variant.label}' crashed (exit {proc.returncode}): {tail[0]}"
            )
        result = json.loads(result_path.read_text())
    if "error" in result:
        error_type = getattr(errors, result["error"]["type"], errors.StageError)
        raise error_type(result["error"]["message"])
    return result["measurements"]


def measurable_batches(signature: Signature, requested: tuple[int, ...]) -> tuple[tuple[int, ...], dict[int, str]]:
    """The batch sizes a model can really run among ``requested``, and why each other one cannot run."""
    fixed = signature.fixed_batch
    if fixed is None:
        return requested, {}
    return (fixed,), {b: f"the model's inputs have a fixed batch of {fixed}" for b in requested if b != fixed}


def bench(
    variants: list[BenchVariant],
    signature: Signature,
    config: BenchConfig,
    progress=lambda message: None,
    data: EvalData | None = None,
) -> list[Measurement]:
    """Measure every variant at every batch size it can run; medians over ``config.repeats`` worker processes.

    A model with a fixed batch is measured at that batch only (and labelled with it): the progress line says
    which requested batch sizes were not measured, so no table ever shows a batch that did not run. With
    ``data`` (the user's real inputs) every call is fed its samples, cycled to the batch size, instead of
    generated values: models whose inputs are indices, scales or masks run as they would in service.
    """
    if data is not None:
        import numpy as np

        signature = data.signature
        with tempfile.TemporaryDirectory(prefix="deployopt-bench-data-") as tmp:
            path = Path(tmp) / "inputs.npz"
            largest = max(signature.fixed_batch or b for b in config.batch_sizes)
            np.savez(path, **data.take(range(min(largest, data.num_samples))))
            return _bench(variants, signature, config, progress, (path, data.origin))
    return _bench(variants, signature, config, progress, None)


def _bench(variants, signature: Signature, config: BenchConfig, progress, data: tuple[Path, str] | None):
    batches, not_measured = measurable_batches(signature, config.batch_sizes)
    for batch, reason in not_measured.items():
        progress(f"batch {batch} not measured: {reason}")
    config = config.model_copy(update={"batch_sizes": batches})
    runs: dict[tuple[str, int], list[dict]] = {}
    for repeat in range(config.repeats):
        for variant in variants:
            progress(f"bench {variant.label} (repeat {repeat + 1}/{config.repeats})")
            for row in _run_worker(variant, signature, config, data):
                runs.setdefault((variant.label, row["batch"]), []).append(row)
    measurements = []
    for (label, batch), rows in runs.items():

        def median(key: str, rows=rows) -> float | None:
            values = [r[key] for r in rows if r.get(key) is not None]
            return float(statistics.median(values)) if values else None

        mean_ms = median("mean_ms")
        measurements.append(
            Measurement(
                variant=label,
                batch=batch,
                p50_ms=median("p50_ms"),
                p90_ms=median("p90_ms"),
                p99_ms=median("p99_ms"),
                mean_ms=mean_ms,
                throughput=batch * 1000.0 / mean_ms,  # samples per second of the very calls the latency is of
                iterations=int(median("iterations")),
                peak_rss_mb=median("peak_rss_mb"),
                repeats=len(rows),
                gpu_p50_ms=median("gpu_p50_ms"),
                gpu_p90_ms=median("gpu_p90_ms"),
                gpu_p99_ms=median("gpu_p99_ms"),
                p50_per_repeat_ms=[r["p50_ms"] for r in rows],
            )
        )
    return measurements
