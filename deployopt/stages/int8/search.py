"""Accuracy-aware int8: candidates scored by one judge — the final verification itself — and, when none meets
the budget, a mixed-precision search for the fewest nodes to keep in float.

1. **Calibration**: one candidate per calibration method (``method auto``: minmax and percentile) in one
   encoding, each judged on the verification data (held apart from the calibration samples when the user
   gives ``--data``) against the original's outputs, with the final budget.
2. **Mixed precision** (only when every calibration candidate misses): the compute nodes of the most accurate
   candidate are ranked by their damage over all verification samples (:mod:`.sensitivity`); the search keeps
   the top 1, 2, 4, … of them in float until the judge passes, then bisects down to the fewest that pass,
   within ``max_rounds`` rounds. Calibrated ranges are computed once per method and reused.
3. **Encoding** (static CPU, ``format auto``): the kept settings are also written as QOperator; it replaces
   QDQ only when it passes and is clearly faster.

Every attempt is timed beside the fp32 graph (each in its own process) at one representative batch, and the
finalists at every batch, so the report shows speed against accuracy at every step. The kept attempt is the
passing one with the fewest nodes in float (then the faster encoding); with none passing, the most accurate one
is written, marked failing, and the notes name the costliest nodes and the best trade-off found.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from deployopt.data.calibration import BatchSource
from deployopt.errors import InputFileError, StageError, UsageError
from deployopt.measure.verify import Judge
from deployopt.runners import RunnerSpec
from deployopt.sources.onnxutil import drop_initializer_value_info, load_model, name_nodes
from deployopt.stages.int8.attempts import (
    COSTLIEST_SHOWN,
    Attempt,
    Int8Result,
    accuracy_rank,
    headline,
    slower_than_fp32,
    speed,
    why_kept,
    why_not,
)
from deployopt.stages.int8.quantize import (
    COMPUTE_OPS,
    MIN_HISTOGRAM_SAMPLES,
    Candidate,
    Int8Config,
    candidates_for,
    gemm_as_matmul,
    int8_op_counts,
    other_encoding,
    quantizable_nodes,
    quantize_candidate,
    resolve_excludes,
    resolve_mode,
    supports_ranges_cache,
    upgraded_for_int8,
)
from deployopt.stages.int8.sensitivity import ANALYSIS_BATCH, rank_by_output, rank_nodes
from deployopt.stages.int8.switchboard import SimulationError
from deployopt.stages.precision_search import NodeDamage, fewest_passing, speedups, time_beside_baseline

# A QOperator twin replaces the QDQ model only when it is clearly faster: timing noise then cannot flip the
# choice between two runs, so the same inputs give the same int8 artifact, byte for byte.
CLEAR_SPEED_WIN = 0.15


class _Search:
    """The attempts of one int8 search: quantize, judge, remember."""

    def __init__(
        self, work: Path, named: Path, model: Any, config: Int8Config, calibration, judge: Judge, progress, memory
    ):
        self.work, self.named, self.model, self.config = work, named, model, config
        self.calibration, self.judge, self.progress = calibration, judge, progress
        self.chunk, self.analysis_batch = memory
        self.attempts: list[Attempt] = []
        self.paths: list[Path] = []
        self.candidates: list[Candidate] = []

    def quantize(self, path: Path, candidate: Candidate, excluded: list[str]) -> None:
        """Quantize the named fp32 graph; candidates of one calibration method share its calibrated ranges."""
        ranges = self.work / f"ranges-{candidate.method}-{candidate.activation}.json"
        quantize_candidate(
            self.named, path, candidate, self.config, excluded, self.calibration, ranges, chunk=self.chunk
        )

    def attempt(self, phase: str, candidate: Candidate, excluded: list[str]) -> Attempt:
        import onnx

        index = len(self.attempts)
        path = self.work / f"attempt{index + 1}-{candidate.label}.onnx"
        self.progress(f"int8: {phase}, {candidate.label}, {len(excluded)} node(s) kept in float")
        self.quantize(path, candidate, excluded)
        counts = int8_op_counts(self.model, onnx.load_model(str(path)))
        if sum(c["int8"] for c in counts.values()) == 0:
            raise StageError(
                f"int8 quantization ({candidate.label}) produced no integer operators (counts {counts}); "
                "check --int8-exclude and the model's op types"
            )
        result = self.judge(RunnerSpec("onnxruntime", str(path)))
        cosine, top1, accuracy = headline(result)
        attempt = Attempt(
            index + 1, phase, candidate.label, list(excluded), result.passed, result.failures, cosine, top1, accuracy,
            counts, metrics=result.headline(), slack=result.slack,
        )  # fmt: skip
        self.attempts.append(attempt)
        self.paths.append(path)
        self.candidates.append(candidate)
        verdict = "pass" if result.passed else "miss: " + "; ".join(result.failures)
        self.progress(f"int8: {candidate.label} with {len(excluded)} in float → {verdict}")
        return attempt


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    config: Int8Config,
    calibration: BatchSource | None,
    judge: Judge,
    decision_batches: tuple[int, ...] = (1,),
    threads: int | None = None,
    progress=lambda message: None,
    calibration_samples: int | None = None,
    qdq_out: Path | None = None,
    calibration_chunk: int | None = None,
    analysis_batch: int = ANALYSIS_BATCH,
) -> Int8Result:
    """Write the best int8 model to ``out_path``; ``passed`` says whether ``judge`` accepts it.

    ``calibration_samples`` is how many calibration samples the source holds (for the report and the
    histogram-method note), when known. ``qdq_out`` receives the kept settings in Q/DQ form even when the
    QOperator twin won: the encoding OpenVINO converts (the same bytes as ``out_path`` when Q/DQ was kept).
    ``calibration_chunk``: calibration batches whose intermediate tensors may be held at once, ``analysis_batch``:
    the samples the sensitivity analysis compares every tensor of at once (both sized to the memory budget).

    Every attempt is timed at one representative batch (the smallest of ``decision_batches``); the kept attempt
    and its encoding twin — the finalists — are timed at the others too."""
    import onnx

    started = time.perf_counter()
    model = name_nodes(drop_initializer_value_info(load_model(fp32_path)))
    if not quantizable_nodes(model, []):
        raise InputFileError(
            f"{fp32_path}: has no operators int8 can speed up ({', '.join(COMPUTE_OPS)}); "
            "nothing to quantize — use --fp16 for a smaller file or skip quantization"
        )
    user_excluded = resolve_excludes(model, config.exclude, fp32_path)
    mode = resolve_mode(model, config)
    if mode == "static" and calibration is None:
        raise UsageError(
            f"{fp32_path}: static int8 needs calibration data: pass --calibration FILE.npz or an "
            "image folder (or register a dataset for the model), or use --int8-mode dynamic"
        )
    notes: list[str] = []
    if mode == "dynamic":
        model = gemm_as_matmul(model)
    model, upgrade_note = upgraded_for_int8(model)
    notes += [upgrade_note] if upgrade_note else []
    settings = candidates_for(model, config, mode)
    calibration_record = _calibration_record(calibration, config, settings, calibration_samples, notes)
    with tempfile.TemporaryDirectory(prefix="deployopt-int8-") as tmp:
        work = Path(tmp)
        named = work / "fp32.onnx"
        onnx.save_model(model, str(named))
        memory = (calibration_chunk, analysis_batch)
        search = _Search(work, named, model, config, calibration, judge, progress, memory)
        for candidate in settings:
            search.attempt("calibration", candidate, user_excluded)
        ranking: list[NodeDamage] = []
        if not any(a.passed for a in search.attempts) and config.max_rounds > 0:
            ranking = _mixed_precision(search, user_excluded, notes)
        chosen = _kept(search.attempts)
        twin = other_encoding(search.candidates[chosen], config)
        if twin is not None:
            search.attempt("encoding", twin, search.attempts[chosen].excluded)
        finalists = {chosen, len(search.attempts) - 1} if twin is not None else {chosen}
        fp32_p50 = _measure(search, decision_batches, threads, finalists)
        kept_settings = chosen
        chosen = _with_faster_encoding(search.attempts, chosen)
        shutil.copyfile(search.paths[chosen], out_path)
        if qdq_out is not None:
            shutil.copyfile(search.paths[kept_settings], qdq_out)
    best = search.attempts[chosen]
    if not best.passed:
        notes += why_not(best, ranking, judge)
    notes += slower_than_fp32(best)
    return Int8Result(
        mode,
        best.candidate,
        best.passed,
        best.excluded,
        best.op_counts,
        search.attempts,
        calibration_record,
        f"{judge.data.num_samples} samples of {judge.data.origin}",
        [d.to_json() for d in ranking[:COSTLIEST_SHOWN]],
        fp32_p50,
        round(time.perf_counter() - started, 1),
        notes,
        best.round,
        why_kept(search.attempts, kept_settings, chosen),
    )


def _calibration_record(
    calibration: BatchSource | None,
    config: Int8Config,
    settings: list[Candidate],
    available: int | None,
    notes: list[str],
) -> dict | None:
    """What calibrated the ranges, for the report; a note when a histogram method has too few samples."""
    if calibration is None or settings[0].mode == "dynamic":
        return None
    used = min(config.samples, available) if available is not None else config.samples
    methods = [c.method for c in settings]
    thin = [m for m in methods if m in ("entropy", "percentile")]
    if thin and used < MIN_HISTOGRAM_SAMPLES:
        notes.append(
            f"calibration has {used} samples: {', '.join(thin)} estimate each activation's tails from a histogram "
            f"and need at least {MIN_HISTOGRAM_SAMPLES}; pass more with --calibration"
        )
    return {
        "origin": calibration.origin,
        "samples": used,
        "selection": f"the first {used} samples, in file order",
        "batch": config.calibration_batch,
        "methods": methods,
        "ranges_reused": supports_ranges_cache(),
    }


def _mixed_precision(search: _Search, user_excluded: list[str], notes: list[str]) -> list[NodeDamage]:
    """Keep the fewest damaging nodes in float that bring the model within budget (see the module docstring)."""
    base = min(range(len(search.attempts)), key=lambda i: accuracy_rank(search.attempts[i]))
    candidate = search.candidates[base]
    analysed = search.paths[base]
    if candidate.format != "qdq" and candidate.mode == "static":  # QOperator renames its float tensors
        analysed = search.work / "analysis-qdq.onnx"
        search.quantize(analysed, candidate.encoded_as("qdq"), user_excluded)
    data = search.judge.data
    search.progress("int8: ranking nodes by the damage each does alone at the outputs (simulated)")
    try:
        ranking = rank_by_output(search.model, analysed, user_excluded, data)
    except SimulationError as exc:
        notes.append(f"the switchable simulation could not run ({exc}); nodes ranked by local error instead")
        ranking = None
    if ranking is not None:
        notes.append(
            f"{len(ranking)} blocks (a compute node with the elementwise nodes it feeds) ranked by the damage each "
            "does alone at the outputs, simulated on verification samples"
        )
    else:
        search.progress(f"int8: ranking nodes by their local damage over {data.num_samples} verification samples")
        ranking = rank_nodes(search.named, analysed, search.model, user_excluded, data, search.analysis_batch)
        notes.append(f"nodes ranked by how much each adds to its input's error, on {data.num_samples} samples")
    # at least one compute node stays int8: an all-float "int8" model is no candidate
    compute = set(quantizable_nodes(search.model, user_excluded))
    if compute <= {n for d in ranking for n in d.nodes}:
        least = next(d for d in reversed(ranking) if compute & set(d.nodes))
        ranking = [d for d in ranking if d is not least]

    def attempt(count: int) -> bool:
        excluded = sorted(set(user_excluded).union(*(d.nodes for d in ranking[:count])))
        return search.attempt("mixed precision", candidate, excluded).passed

    ended = fewest_passing(len(ranking), attempt, search.config.max_rounds)
    if note := ended.note(len(ranking), "float", "--int8-max-rounds"):
        notes.append(f"mixed precision: {note}")
    return ranking


def _kept(attempts: list[Attempt]) -> int:
    """The passing attempt with the fewest nodes in float (the most accurate among equals); else the most accurate."""
    passing = [i for i, a in enumerate(attempts) if a.passed]
    if passing:
        return min(passing, key=lambda i: (len(attempts[i].excluded), accuracy_rank(attempts[i])))
    return min(range(len(attempts)), key=lambda i: accuracy_rank(attempts[i]))


def _measure(search: _Search, batches: tuple[int, ...], threads: int | None, finalists: set[int]) -> dict[int, float]:
    """Time every attempt and the fp32 graph (own process each) on the verification inputs at the smallest batch,
    then the fp32 graph and the ``finalists`` at the other batches; returns the fp32 p50 per batch."""
    representative, others = min(batches), tuple(b for b in batches if b != min(batches))
    search.progress(f"int8: timing {len(search.attempts)} attempt(s) beside fp32 at batch {representative}")
    fp32_spec = RunnerSpec("onnxruntime", str(search.named))
    specs = [RunnerSpec("onnxruntime", str(p)) for p in search.paths]
    fp32, timed = time_beside_baseline(fp32_spec, specs, (representative,), search.judge.data, threads)
    if others:
        search.progress(f"int8: timing the finalists at batch {', '.join(map(str, others))}")
        order = sorted(finalists)
        fp32_others, finalist_times = time_beside_baseline(
            fp32_spec, [specs[i] for i in order], others, search.judge.data, threads
        )
        fp32 |= fp32_others
        for index, measured in zip(order, finalist_times, strict=True):
            timed[index] = timed[index] | measured
    for attempt, p50_ms in zip(search.attempts, timed, strict=True):
        attempt.p50_ms.update(p50_ms)
        attempt.speedup.update(speedups(fp32, p50_ms))
    return fp32


def _with_faster_encoding(attempts: list[Attempt], chosen: int) -> int:
    """The encoding twin of the chosen attempt replaces it when it passes too and is clearly faster."""
    twin = next((i for i, a in enumerate(attempts) if a.phase == "encoding"), None)
    if twin is None or accuracy_rank(attempts[twin])[:2] > accuracy_rank(attempts[chosen])[:2]:
        return chosen
    return twin if speed(attempts[twin]) < speed(attempts[chosen]) * (1 - CLEAR_SPEED_WIN) else chosen
