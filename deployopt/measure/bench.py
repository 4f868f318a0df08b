"""Benchmarking: latency percentiles, throughput and peak memory, each model in its own process.

Measuring PyTorch and ONNX Runtime in one process distorts both (thread pools fight over the cores),
so every (variant, round) runs in a fresh worker (``python -m deployopt.measure.bench_worker``) and the
workers run one after another. The variants are interleaved in rounds (each round visits every variant,
in alternating order) and the median over rounds is reported, which is what makes ratios between variants
trustworthy on a noisy shared machine; the spread of the rounds says how noisy it was.

Given the ``contenders`` (the artifacts a recommendation chooses between), rounds go on — for the fastest and
those within reach of it only — until at every batch size the fastest's lead over the next exceeds the spread of
their rounds (and both have at least :data:`ROUNDS_TO_CALL`), or ``max_repeats`` rounds or ``settle_seconds``
are reached: a lead smaller than the noise is then a tie (:mod:`deployopt.reports.recommend`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
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
    repeats: int = Field(
        1,
        ge=1,
        description="rounds every variant is timed in, each time in its own worker process, interleaved; medians "
        "are reported",
    )
    max_repeats: int = Field(
        3,
        ge=1,
        description="rounds for the fastest contenders (the fastest, the next, and those within the noise of the "
        "fastest): up to this many in all",
    )
    settle_seconds: float = Field(120.0, ge=0, description="start no further round after this long")
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

    @property
    def spread(self) -> float | None:
        return relative_spread(self.p50_per_repeat_ms)

    def to_json(self) -> dict:
        return asdict(self) | {"spread": self.spread}


def relative_spread(p50s: list[float]) -> float | None:
    """(max − min) / median of the per-round p50s: how far apart the rounds were; None with fewer than two."""
    if len(p50s) < 2:
        return None
    return (max(p50s) - min(p50s)) / statistics.median(p50s)


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
            from deployopt.isolation import describe_exit

            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["it printed nothing"]
            raise errors.RuntimeCrashError(
                f"bench {variant.label}: {describe_exit(proc.returncode)} in its worker process; "
                f"its last output: {tail[0][:300]}"
            )
        result = json.loads(result_path.read_text())
    if "error" in result:
        error_type = getattr(errors, result["error"]["type"], errors.StageError)
        raise error_type(result["error"]["message"])
    return result["measurements"]


# A lead is trusted only from this many rounds of both artifacts: two rounds agree by chance too often.
ROUNDS_TO_CALL = 3


def within_noise(fastest_p50s: list[float], other_p50s: list[float]) -> bool:
    """Whether the other artifact is as fast as the fastest within the noise of this machine: the gap between their
    median p50s is no larger than the spreads of their rounds together (one round each: no spread, no tie)."""
    noise = (relative_spread(fastest_p50s) or 0.0) + (relative_spread(other_p50s) or 0.0)
    return statistics.median(other_p50s) <= statistics.median(fastest_p50s) * (1 + noise)


def tied_with_fastest(ranked: list[list[float]]) -> int:
    """How many of ``ranked`` (each artifact's per-round p50s, fastest median first) are a tie: the longest run
    from the fastest whose every member is within the noise of it — an artifact behind one that is clearly slower
    than the fastest is never in the tie, however noisy its own rounds."""
    count = 1
    while count < len(ranked) and within_noise(ranked[0], ranked[count]):
        count += 1
    return count


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
    contenders: set[str] | frozenset[str] = frozenset(),
    crashes: dict[str, str] | None = None,
) -> list[Measurement]:
    """Measure every variant at every batch size it can run; medians over its rounds (see the module docstring for
    the rounds, and for ``contenders``: the labels a recommendation chooses between).

    A model with a fixed batch is measured at that batch only (and labelled with it): the progress line says
    which requested batch sizes were not measured, so no table ever shows a batch that did not run. With
    ``data`` (the user's real inputs) every call is fed its samples, cycled to the batch size, instead of
    generated values: models whose inputs are indices, scales or masks run as they would in service.

    A worker that dies (a runtime's segfault, the OOM killer) raises RuntimeCrashError; given ``crashes``, the
    variant is recorded there (label → the crash in words) instead, measured no further and left out of the result.
    """
    if data is not None:
        import numpy as np

        signature = data.signature
        with tempfile.TemporaryDirectory(prefix="deployopt-bench-data-") as tmp:
            path = Path(tmp) / "inputs.npz"
            largest = max(signature.fixed_batch or b for b in config.batch_sizes)
            np.savez(path, **data.take(range(min(largest, data.num_samples))))
            return _bench(variants, signature, config, progress, (path, data.origin), contenders, crashes)
    return _bench(variants, signature, config, progress, None, contenders, crashes)


def _bench(
    variants, signature: Signature, config: BenchConfig, progress, data, contenders, crashes
) -> list[Measurement]:
    batches, not_measured = measurable_batches(signature, config.batch_sizes)
    for batch, reason in not_measured.items():
        progress(f"batch {batch} not measured: {reason}")
    runs: dict[tuple[str, int], list[dict]] = {}
    crashed = crashes if crashes is not None else {}
    started = time.perf_counter()

    def one_round(number: int, labels: set[str], at: tuple[int, ...]) -> None:
        ordered = variants if number % 2 else variants[::-1]  # alternate the order: no variant always goes first
        for variant in (v for v in ordered if v.label in labels and v.label not in crashed):
            progress(f"bench {variant.label} (round {number + 1})")
            subset = config.model_copy(update={"batch_sizes": at})
            try:
                rows = _run_worker(variant, signature, subset, data)
            except errors.RuntimeCrashError as exc:
                if crashes is None:
                    raise
                crashed[variant.label] = str(exc)
                progress(str(exc))
                continue
            for row in rows:
                runs.setdefault((variant.label, row["batch"]), []).append(row)

    for number in range(config.repeats):
        one_round(number, {v.label for v in variants}, batches)
    rounds = config.repeats
    while rounds < config.max_repeats and time.perf_counter() - started < config.settle_seconds:
        p50s = {key: [r["p50_ms"] for r in rows] for key, rows in runs.items()}
        again = _unsettled(p50s, set(contenders) - set(crashed), batches)
        if not again:
            break
        at = tuple(b for b in batches if any(b in wanted for wanted in again.values()))
        one_round(rounds, set(again), at)
        rounds += 1
    return [_summarised(label, batch, rows) for (label, batch), rows in runs.items() if label not in crashed]


def _unsettled(p50s: dict[tuple[str, int], list[float]], contenders, batches) -> dict[str, set[int]]:
    """Which contenders need another round, at which batch sizes: the fastest and those tied with it, and the fastest
    and the next while either has fewer than :data:`ROUNDS_TO_CALL` rounds."""
    again: dict[str, set[int]] = {}
    for batch in batches:
        ranked = sorted(
            (c for c in contenders if (c, batch) in p50s), key=lambda c: statistics.median(p50s[(c, batch)])
        )
        if len(ranked) < 2:
            continue
        tie = ranked[: tied_with_fastest([p50s[(c, batch)] for c in ranked])]
        if min(len(p50s[(c, batch)]) for c in ranked[:2]) < ROUNDS_TO_CALL:
            tie = list(dict.fromkeys([*tie, ranked[1]]))  # the fastest and the next: too few rounds to call it
        for label in tie if len(tie) > 1 else []:
            again.setdefault(label, set()).add(batch)
    return again


def _summarised(label: str, batch: int, rows: list[dict]) -> Measurement:
    def median(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return float(statistics.median(values)) if values else None

    mean_ms = median("mean_ms")
    return Measurement(
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
