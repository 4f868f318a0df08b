"""What every mixed-precision search shares: the damage a node (or block) does alone at the model's outputs,
the samples a ranking can afford, the search for the fewest ranked blocks to keep in higher precision, and the
timing of its attempts beside the fp32 graph (the report's accuracy-against-speed table and plot).

The int8 search (ONNX Runtime, blocks kept in float) and the OpenVINO per-layer search (layers kept in f32
inside a bf16/fp16 model) differ in how they switch one block; they rank, time-box and bisect the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deployopt.data.eval_data import EvalData
from deployopt.runners import RunnerSpec

# Samples (evenly spread over the verification data) each block is judged on when ranked: one run per block,
# so this bounds the ranking's time on a large model.
RANKING_SAMPLES = 32
MIN_RANKING_SAMPLES = 8
RANKING_SECONDS = 60.0  # a ranking's time budget; the sample count shrinks (not below 8) to fit it
# Rounds a search times its attempts in: one. Two or three rounds of alternating order were no steadier on the 2-core
# machines here, whose speed flips 2× for seconds to minutes (benchmarks/search_timing.py, docs/benchmarks.md)
TIMING_ROUNDS = 1


@dataclass(frozen=True)
class NodeDamage:
    node: str
    op_type: str
    damage: float  # at the outputs (ranked alone) or the extra local error over its input's
    members: list[str] | None = None  # the nodes switched with it (its block); None: the node alone

    @property
    def nodes(self) -> list[str]:
        return self.members or [self.node]

    def to_json(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "damage": self.damage, "nodes": self.nodes}


def output_damage(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """How far ``candidate`` is from ``reference`` in the verification's terms: the sum over outputs of
    (1 − mean cosine) and, for class scores, (1 − top-1 agreement)."""
    from deployopt.measure.budgets import Budget
    from deployopt.measure.compare import compare_outputs

    names = [str(i) for i in range(len(reference))]
    metrics, _, _, _ = compare_outputs(reference, candidate, names, None, Budget())
    return sum((1.0 - m.cosine) + (1.0 - m.top1_agreement if m.top1_agreement is not None else 0.0) for m in metrics)


def ranking_sample_indices(data: EvalData, seconds_per_sample: float, runs: int) -> list[int]:
    """The samples a ranking of ``runs`` runs judges each block on: evenly spread over ``data``, as many as
    :data:`RANKING_SECONDS` affords at ``seconds_per_sample`` (at least :data:`MIN_RANKING_SAMPLES`)."""
    affordable = int(RANKING_SECONDS / max(seconds_per_sample * runs, 1e-9))
    count = max(MIN_RANKING_SAMPLES, min(RANKING_SAMPLES, affordable, data.num_samples))
    step = max(1, data.num_samples // count)
    return list(range(0, data.num_samples, step)[:count])


def seconds_per_sample(run: Callable[[dict[str, np.ndarray]], object], data: EvalData, probe: int = 4) -> float:
    """How long one call of ``run`` takes per sample on the first ``probe`` samples."""
    feeds = data.take(range(min(data.num_samples, probe)))
    started = time.perf_counter()
    run(feeds)
    return (time.perf_counter() - started) / min(data.num_samples, probe)


@dataclass(frozen=True)
class FewestPassing:
    """Where a search over "the top ``count`` ranked blocks kept in higher precision" ended."""

    passing: int | None  # the fewest that passed (None: none did)
    failing: int  # the most that missed
    rounds: int
    round_limit_reached: bool

    def note(self, ranked: int, kept_in: str, max_rounds_option: str) -> str | None:
        """The sentence a report needs when the search did not end on an exact answer."""
        if self.passing is None:
            return (
                f"{self.rounds} round(s) kept up to {self.failing} of {ranked} ranked blocks in {kept_in} without "
                "meeting the budget" + (f" ({max_rounds_option} reached)" if self.round_limit_reached else "")
            )
        if self.passing - self.failing > 1:
            return (
                f"stopped at {max_rounds_option}: the top {self.passing} ranked blocks in {kept_in} pass, the top "
                f"{self.failing} miss; the fewest lies between"
            )
        return None


def fewest_passing(ranked: int, attempt: Callable[[int], bool], max_rounds: int) -> FewestPassing:
    """Keep the top 1, 2, 4, … ranked blocks in higher precision (``attempt(count)`` judges one such model) until
    one passes, then bisect down to the fewest that pass, within ``max_rounds`` attempts."""
    failing, passing, rounds, count = 0, None, 0, 1
    while rounds < max_rounds and ranked > 0:
        if passing is None:
            count = min(count, ranked)
        else:
            if passing - failing <= 1:
                break
            count = (failing + passing) // 2
        rounds += 1
        if attempt(count):
            passing = count
        else:
            failing = count
            if count == ranked:
                break
            count *= 2
    exhausted = rounds == max_rounds and (passing is None or passing - failing > 1)
    return FewestPassing(passing, failing, rounds, exhausted)


@dataclass(frozen=True)
class AttemptTiming:
    """How a search times its attempts: beside ``baseline`` (the fp32 graph on ONNX Runtime, what the report's
    ratios are against) at ``batch``, with the benchmark's threads, so every ratio comes from one run."""

    baseline: RunnerSpec
    batch: int
    threads: int | None = None


def time_beside_baseline(
    baseline: RunnerSpec,
    candidates: list[RunnerSpec],
    batches: tuple[int, ...],
    data: EvalData,
    threads: int | None,
    rounds: int = TIMING_ROUNDS,
) -> tuple[dict[int, float], list[dict[int, float]]]:
    """p50 in ms per batch of ``baseline`` and of each candidate, each in its own process on the verification
    inputs: short runs (``rounds`` of them in alternating order, medians). They rank a search's attempts against each
    other; they are no benchmark: a shared machine's speed can flip 2× between two of them."""
    from deployopt.measure.bench import BenchConfig, BenchVariant, bench

    config = BenchConfig(
        batch_sizes=batches, threads=threads, warmup_seconds=0.1, min_iterations=3, min_seconds=0.3,
        repeats=rounds, max_repeats=rounds,
    )  # fmt: skip
    variants = [BenchVariant("baseline", baseline)] + [BenchVariant(str(i), c) for i, c in enumerate(candidates)]
    measured: dict[str, dict[int, float]] = {}
    for m in bench(variants, data.signature, config, data=data):
        measured.setdefault(m.variant, {})[m.batch] = m.p50_ms
    return measured.get("baseline", {}), [measured.get(str(i), {}) for i in range(len(candidates))]


def speedups(baseline: dict[int, float], p50_ms: dict[int, float]) -> dict[int, float]:
    """× the baseline per batch (above 1: faster)."""
    return {b: round(baseline[b] / v, 3) for b, v in p50_ms.items() if b in baseline and v > 0}


def named_briefly(names: list[str] | tuple[str, ...], shown: int = 6) -> str:
    """A node list for a sentence: every name when few, else the first ``shown`` and the count (the search table of
    report.md/.html lists them all)."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])}, … ({len(names)} in all)"


def time_attempts(timing: AttemptTiming, attempts: list, specs: list[RunnerSpec], data: EvalData) -> None:
    """Set each attempt's ``p50_ms`` and ``speedup`` (× the fp32 graph) at the timing's batch: the fp16 rounds and
    an IR's attempts (the int8 search times its finalists at more batches, with :func:`time_beside_baseline`)."""
    fp32, timed = time_beside_baseline(timing.baseline, specs, (timing.batch,), data, timing.threads)
    for attempt, p50_ms in zip(attempts, timed, strict=True):
        attempt.p50_ms, attempt.speedup = p50_ms, speedups(fp32, p50_ms)
