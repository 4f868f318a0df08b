"""Which precision an OpenVINO IR is compiled in, and which of its layers stay in f32 — decided by the build's
judge, as ``polygraphy debug precision`` does for TensorRT.

An IR candidate lists the inference precisions it may run in, lowest first: ``("bf16",)`` for openvino-bf16,
``("bf16", "fp32")`` for an int8 IR on a CPU with bf16 (its non-quantized layers in bf16, else in f32).

1. The lowest precision as it is; kept when it passes.
2. With an f32 fallback (int8 IRs): the fallback is judged next. When it misses too, the damage is not the low
   precision's (the int8 quantization misses) and no layer search can help.
3. Otherwise the per-layer search: the float compute layers, each with the layers its output reaches before the
   next compute layer (a block), are ranked by the damage each does *alone* in the low precision — every other
   layer marked f32 — at the model's outputs, on verification samples; then the top 1, 2, 4, … blocks are kept
   in f32 and judged, and the count is bisected down to the fewest that pass (:mod:`..precision_search`).
4. The passing attempt with the fewest f32 layers wins; with none, the f32 fallback when it passed; else the
   most accurate attempt, not passing, and the notes name the best trade-off found.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deployopt.data.eval_data import EvalData
from deployopt.measure.verify import Judge, VerifyResult, collect_outputs
from deployopt.runners import RunnerSpec, create_runner
from deployopt.stages.openvino.ir import LayerGraph, compiled_copy
from deployopt.stages.precision_search import (
    AttemptTiming,
    NodeDamage,
    fewest_passing,
    named_briefly,
    output_damage,
    ranking_sample_indices,
    seconds_per_sample,
    time_attempts,
)
from deployopt.types import PrecisionSearch, SearchAttempt

COSTLIEST_SHOWN = 6


@dataclass(frozen=True)
class SearchRounds:
    """How many judged attempts the per-layer search may make, and the option that sets it (for the notes)."""

    rounds: int
    option: str


@dataclass
class LayerAttempt:
    round: int
    phase: str  # as is | f32 fallback | per-layer
    inference: str
    kept_f32: list[str]  # the compute layers (block leaders) kept in f32
    passed: bool
    failures: list[str]
    headline: dict[str, float]  # VerifyResult.headline(): the judge's numbers in brief
    slack: float | None = None  # VerifyResult.slack
    p50_ms: dict[int, float] = field(default_factory=dict)  # timed beside the fp32 graph when the search searched
    speedup: dict[int, float] = field(default_factory=dict)


@dataclass
class Settled:
    """The IR to keep: its XML (with the weights beside it), how it is compiled, and how that was decided."""

    xml: Path
    inference: str
    kept_f32: list[str]  # block leaders kept in f32 (their blocks' layers are all marked)
    passed: bool
    verify: dict  # the kept attempt's VerifyResult.to_json()
    attempts: list[LayerAttempt] = field(default_factory=list)
    ranking: list[dict] = field(default_factory=list)  # NodeDamage.to_json of the costliest blocks
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def details(self) -> dict:
        """What the stage records (the manifest and the report read it)."""
        fields = asdict(self)
        del fields["xml"]
        return fields


def settle(
    base: Path,
    work: Path,
    inference_order: tuple[str, ...],
    judge: Judge,
    search: SearchRounds,
    progress: Callable[[str], None],
    label: str,
    timing: AttemptTiming | None = None,
) -> Settled:
    """Decide how the IR ``base`` is compiled (see the module docstring); copies are written into ``work``. With
    ``timing``, the attempts of a search (more than one) are timed beside the fp32 graph."""
    started = time.perf_counter()
    attempts: list[LayerAttempt] = []
    judged: list[tuple[Path, VerifyResult]] = []

    def attempt(phase: str, inference: str, kept: list[str], marked: list[str]) -> bool:
        xml = compiled_copy(base, work / f"attempt{len(attempts) + 1}.xml", inference, marked)
        progress(f"{label}: {phase}, {inference}, {len(kept)} block(s) in f32")
        result = judge(RunnerSpec("openvino", str(xml), precision=inference))
        attempts.append(
            LayerAttempt(
                len(attempts) + 1,
                phase,
                inference,
                kept,
                result.passed,
                result.failures,
                result.headline(),
                result.slack,
            )
        )
        judged.append((xml, result))
        return result.passed

    low, fallback = inference_order[0], inference_order[1] if len(inference_order) > 1 else None
    notes: list[str] = []
    ranking: list[NodeDamage] = []
    if not attempt("as is", low, [], []) and low != "fp32":
        if fallback is not None and not attempt("f32 fallback", fallback, [], []):
            notes.append(f"its float layers in {fallback} miss the budget too: the loss is not {low}'s")
        elif search.rounds > 0:
            graph = LayerGraph(base)
            progress(f"{label}: ranking the float layer blocks by the damage each does alone in {low}")
            ranking = rank_blocks(base, work, low, graph, judge)

            def keep_top(count: int) -> bool:
                kept = [d.node for d in ranking[:count]]
                return attempt("per-layer", low, kept, sorted({n for d in ranking[:count] for n in d.nodes}))

            ended = fewest_passing(len(ranking), keep_top, search.rounds)
            if note := ended.note(len(ranking), "f32", search.option):
                notes.append(f"per-layer search: {note}")
    if timing is not None and len(attempts) > 1:
        progress(f"{label}: timing {len(attempts)} attempt(s) beside fp32 at batch {timing.batch}")
        specs = [
            RunnerSpec("openvino", str(xml), threads=timing.threads, precision=a.inference)
            for (xml, _), a in zip(judged, attempts, strict=True)
        ]
        time_attempts(timing, attempts, specs, judge.data)
    chosen = _chosen(attempts, low)
    best = attempts[chosen]
    if not best.passed:
        notes.append(_best_trade_off(best))
    if ranking:
        costliest = ", ".join(f"{d.node} ({d.op_type}, {d.damage:.2e})" for d in ranking[:COSTLIEST_SHOWN])
        notes.append(f"blocks costing the most accuracy alone in {low} (1 − cosine at the outputs): {costliest}")
    xml, result = judged[chosen]
    return Settled(
        xml,
        best.inference,
        best.kept_f32,
        best.passed,
        result.to_json(),
        attempts,
        [d.to_json() for d in ranking[:COSTLIEST_SHOWN]],
        notes,
        round(time.perf_counter() - started, 1),
    )


def _chosen(attempts: list[LayerAttempt], low: str) -> int:
    """The passing attempt in the low precision with the fewest f32 blocks; else a passing fallback; else the
    attempt with the fewest failed checks (the fewest f32 blocks among equals)."""
    for phase_low in (True, False):
        passing = [i for i, a in enumerate(attempts) if a.passed and (a.inference == low) == phase_low]
        if passing:
            return min(passing, key=lambda i: len(attempts[i].kept_f32))
    return min(range(len(attempts)), key=lambda i: (len(attempts[i].failures), len(attempts[i].kept_f32)))


def _best_trade_off(best: LayerAttempt) -> str:
    numbers = ", ".join(f"{name} {value:.5g}" for name, value in best.headline.items())
    return (
        f"no attempt meets the budget; best trade-off found: {best.inference} with {len(best.kept_f32)} block(s) "
        f"in f32 ({numbers}; {'; '.join(best.failures)})"
    )


def rank_blocks(base: Path, work: Path, low: str, graph: LayerGraph, judge: Judge) -> list[NodeDamage]:
    """The float blocks of ``graph``, most damaging first: each alone in ``low`` (every other layer marked f32),
    compared at the outputs with the original's on verification samples (as many as the ranking's time budget
    affords)."""
    data = judge.data
    blocks, markable = graph.float_blocks(), graph.markable()
    reference = judge.reference_outputs().arrays
    probe = compiled_copy(base, work / "ranking-probe.xml", low)
    with create_runner(RunnerSpec("openvino", str(probe), precision=low)) as runner:
        per_sample = seconds_per_sample(runner.infer, data)
    indices = ranking_sample_indices(data, per_sample, len(blocks))
    subset = EvalData(data.take(indices), None, data.origin, data.signature)
    wanted = [_rows(array, indices, data.num_samples) for array in reference]
    types = {graph.names[layer]: kind for layer, kind in graph.types.items()}
    damages = []
    for index, (leader, members) in enumerate(blocks.items()):
        alone = set(members)
        xml = compiled_copy(base, work / f"ranking{index}.xml", low, [n for n in markable if n not in alone])
        with create_runner(RunnerSpec("openvino", str(xml), precision=low)) as runner:
            outputs = collect_outputs(runner, subset, judge.batch_size, reference=False)
        damages.append(NodeDamage(leader, types[leader], output_damage(wanted, outputs.arrays), members))
        xml.unlink()
        xml.with_suffix(".bin").unlink()
    return sorted(damages, key=lambda d: d.damage, reverse=True)


def _rows(array: np.ndarray, indices: list[int], samples: int) -> np.ndarray:
    """The rows of a reference output for the samples at ``indices`` (an output without a sample axis whole)."""
    return np.take(array, indices, axis=0) if array.ndim and array.shape[0] == samples else array


MADE = {
    "convert": "converted from",
    "nncf": "NNCF int8 of",
    "nncf accuracy control": "NNCF accuracy-controlled int8 of",
}


def describe(model_file: str, source_name: str, d: dict) -> str:
    """The step in words: what the IR is, how it is compiled, which layers stay in f32, each attempt."""
    text = f"{model_file} + .bin, {MADE[d['method']]} {source_name} ({d['ops']} ops"
    text += f", {d['fake_quantize']} FakeQuantize)" if d["fake_quantize"] else ")"
    if default := d.get("nncf_default"):
        reverted = default["fake_quantize"] - d["fake_quantize"]
        text += (
            f"; NNCF's default int8 missed ({'; '.join(default['verify']['failures'])}), its accuracy control "
            f"reverted {reverted} FakeQuantize to float"
        )
    text += f"; compiled in {d['inference']}"
    if d["kept_f32"]:
        text += f" with {len(d['kept_f32'])} layer block(s) kept in f32: {named_briefly(d['kept_f32'])}"
    if len(d["attempts"]) > 1:
        text += f"; {len(d['attempts'])} attempts judged"
    return text + "".join(f"; {note}" for note in d["notes"])


def layer_search(d: dict, variant: str) -> PrecisionSearch | None:
    """The IR's attempts (as is, the f32 fallback, the per-layer search) as the report's search table and plot;
    None when the first attempt was kept (nothing was searched)."""
    if len(d["attempts"]) < 2:
        return None
    attempts = tuple(
        SearchAttempt.recorded(a, f"{a['phase']}: {a['inference']}", a["kept_f32"], a["headline"])
        for a in d["attempts"]
    )
    kept = next(a for a in attempts if a.tried.endswith(d["inference"]) and list(a.kept_higher) == d["kept_f32"])
    why = (
        f"attempt {kept.number} passes in {d['inference']} with the fewest layer blocks in f32 "
        f"({len(kept.kept_higher)})"
        if kept.passed
        else f"no attempt passes; attempt {kept.number} is the most accurate"
    )
    return PrecisionSearch(f"{variant}: precision search", variant, "f32", kept.number, why, attempts)
