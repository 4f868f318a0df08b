"""Accuracy-aware int8: quantize each candidate, verify it, and when the budget is missed, find the nodes
that do the damage, keep them in float and try again.

Sensitivity is measured on one batch by comparing every quantized node's input and output with the
fp32 graph's (both exposed as extra outputs): a node's damage is how much worse its output agrees with
fp32 than its input did. The most damaging nodes are excluded first; the number excluded per round
grows (10 %, 20 %, 40 % of the candidates). Every attempt — settings, exclusions, accuracy, latency —
is recorded. Among the candidates that meet the budget the first is kept unless another is clearly faster
(measured in the same run, each in its own process), so timing noise cannot change the artifact.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deployopt.data.calibration import BatchSource
from deployopt.data.eval_data import EvalData
from deployopt.errors import InputFileError, StageError, UsageError
from deployopt.measure.bench import BenchConfig, BenchVariant, bench
from deployopt.measure.budgets import Budget
from deployopt.measure.verify import collect_outputs, verify
from deployopt.runners import RunnerSpec, create_runner
from deployopt.sources.onnxutil import drop_initializer_value_info, load_model, name_nodes
from deployopt.stages.int8.quantize import (
    COMPUTE_OPS,
    Candidate,
    Int8Config,
    candidates_for,
    gemm_as_matmul,
    int8_op_counts,
    quantizable_nodes,
    quantize_candidate,
    resolve_excludes,
    resolve_mode,
)


@dataclass
class Attempt:
    round: int
    candidate: str
    excluded: list[str]
    passed: bool
    failures: list[str]
    cosine: float | None
    top1_agreement: float | None
    accuracy: float | None
    op_counts: dict[str, dict[str, int]]
    p50_ms: dict[int, float] = field(default_factory=dict)


@dataclass
class Int8Result:
    mode: str
    chosen: str
    passed: bool
    excluded: list[str]
    op_counts: dict[str, dict[str, int]]
    attempts: list[Attempt]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    config: Int8Config,
    calibration: BatchSource | None,
    verify_data: EvalData,
    budget: Budget,
    decision_batches: tuple[int, ...] = (1,),
    threads: int | None = None,
    progress=lambda message: None,
) -> Int8Result:
    """Write the best int8 model to ``out_path``; ``passed`` says whether it meets ``budget``."""
    import onnx

    model = name_nodes(drop_initializer_value_info(load_model(fp32_path)))
    if not quantizable_nodes(model, []):
        raise InputFileError(
            f"{fp32_path}: has no operators int8 can speed up ({', '.join(COMPUTE_OPS)}); "
            "nothing to quantize — use --fp16 for a smaller file or skip quantization"
        )
    excluded = resolve_excludes(model, config.exclude, fp32_path)
    mode = resolve_mode(model, config)
    if mode == "dynamic":
        model = gemm_as_matmul(model)
    if mode == "static" and calibration is None:
        raise UsageError(
            f"{fp32_path}: static int8 needs calibration data: pass --calibration FILE.npz or an "
            "image folder (or register a dataset for the model), or use --int8-mode dynamic"
        )
    candidates = candidates_for(model, config, mode)
    attempts: list[Attempt] = []
    stop_note = None
    with tempfile.TemporaryDirectory(prefix="deployopt-int8-") as tmp:
        work = Path(tmp)
        named = work / "fp32.onnx"
        onnx.save_model(model, str(named))
        reference = RunnerSpec("onnxruntime", str(named), threads=threads)
        with create_runner(reference) as runner:
            reference_outputs = collect_outputs(runner, verify_data, 32)
        paths: dict[int, Path] = {}
        for round_index in range(config.max_rounds + 1):
            for candidate in candidates:
                path = work / f"round{round_index}-{candidate.label}.onnx"
                progress(f"int8: {candidate.label}, round {round_index + 1}, {len(excluded)} node(s) kept in float")
                quantize_candidate(named, path, candidate, config, excluded, calibration)
                counts = int8_op_counts(model, onnx.load_model(str(path)))
                if sum(c["int8"] for c in counts.values()) == 0:
                    raise StageError(
                        f"{fp32_path}: int8 quantization ({candidate.label}) produced no integer "
                        f"operators (counts {counts}); check --int8-exclude and the model's op types"
                    )
                result = verify(
                    reference,
                    RunnerSpec("onnxruntime", str(path), threads=threads),
                    verify_data,
                    budget,
                    reference_outputs=reference_outputs,
                )
                first = result.outputs[0] if result.outputs else None
                attempts.append(
                    Attempt(
                        round_index + 1,
                        candidate.label,
                        list(excluded),
                        result.passed,
                        result.failures,
                        first.cosine if first else None,
                        first.top1_agreement if first else None,
                        result.candidate_accuracy,
                        counts,
                    )
                )
                paths[len(attempts) - 1] = path
            this_round = list(range(len(attempts) - len(candidates), len(attempts)))
            _measure(attempts, this_round, paths, decision_batches, threads, verify_data)
            if any(attempts[i].passed for i in this_round) or round_index == config.max_rounds:
                break
            analysis = _analysis_model(
                work, named, candidates, config, excluded, calibration, paths, this_round, attempts
            )
            newly = _most_damaging(named, analysis, model, excluded, verify_data, round_index)
            if not newly:
                stop_note = (
                    f"stopped after round {round_index + 1}: no remaining quantized node makes its output "
                    "agree less with fp32 than its input does"
                )
                break
            excluded = sorted(set(excluded) | set(newly))
        best = _choose(attempts)
        shutil.copyfile(paths[best], out_path)
    chosen = attempts[best]
    notes = [stop_note] if stop_note else []
    if len([a for a in attempts if a.round == chosen.round]) > 1:
        notes.append(
            f"chose {chosen.candidate}: the first candidate within budget unless another is ≥ "
            f"{CLEAR_SPEED_WIN:.0%} faster, measured in this run"
        )
    return Int8Result(mode, chosen.candidate, chosen.passed, chosen.excluded, chosen.op_counts, attempts, notes)


def _measure(
    attempts: list[Attempt],
    indices: list[int],
    paths: dict[int, Path],
    batches: tuple[int, ...],
    threads: int | None,
    data: EvalData,
) -> None:
    config = BenchConfig(batch_sizes=batches, threads=threads, warmup_seconds=0.1, min_iterations=3, min_seconds=0.3)
    variants = [BenchVariant(str(i), RunnerSpec("onnxruntime", str(paths[i]))) for i in indices]
    for m in bench(variants, data.signature, config):
        attempts[int(m.variant)].p50_ms[m.batch] = m.p50_ms


# A faster candidate replaces the earlier one only when it is clearly faster: timing noise then cannot flip the
# choice between two runs, so the same inputs give the same int8 artifact, byte for byte.
CLEAR_SPEED_WIN = 0.15


def _choose(attempts: list[Attempt]) -> int:
    """The earliest passing attempt, unless another passing one is ≥ 15 % faster (geometric mean of p50 over
    batch sizes); with none passing, the most accurate one."""

    def speed(a: Attempt) -> float:
        return math.exp(np.mean([math.log(v) for v in a.p50_ms.values()])) if a.p50_ms else math.inf

    passing = [i for i, a in enumerate(attempts) if a.passed]
    if passing:
        fastest = min(passing, key=lambda i: speed(attempts[i]))
        first = passing[0]
        return first if speed(attempts[first]) * (1 - CLEAR_SPEED_WIN) <= speed(attempts[fastest]) else fastest
    return min(range(len(attempts)), key=lambda i: (len(attempts[i].failures), -(attempts[i].cosine or -1)))


def _analysis_model(
    work: Path,
    named: Path,
    candidates: list[Candidate],
    config: Int8Config,
    excluded: list[str],
    calibration: BatchSource | None,
    paths: dict[int, Path],
    indices: list[int],
    attempts: list[Attempt],
) -> Path:
    """A quantized model whose float tensors keep their fp32 names (QDQ or dynamic), for per-node comparison."""
    for i in indices:
        if attempts[i].candidate.startswith(("static-qdq", "dynamic")):
            return paths[i]
    qdq = Candidate("static", "qdq", candidates[0].activation)
    path = work / "analysis-qdq.onnx"
    quantize_candidate(named, path, qdq, config, excluded, calibration)
    return path


def _with_outputs(model: Any, names: list[str]) -> Any:
    from onnx import TensorProto, helper

    produced = {out for node in model.graph.node for out in node.output}
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name in produced and name not in existing:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return model


def _tensor_errors(named: Path, quantized: Path, tensors: list[str], data: EvalData) -> dict[str, float]:
    """1 − cosine between the fp32 and quantized values of each tensor, on one batch."""
    import onnx
    import onnxruntime as ort

    feeds = next(data.batches(32))
    values = []
    for path in (named, quantized):
        model = _with_outputs(onnx.load_model(str(path)), tensors)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values.append(dict(zip(names, session.run(names, feeds), strict=True)))
    errors = {}
    for name in tensors:
        if name in values[0] and name in values[1] and values[0][name].shape == values[1][name].shape:
            a = values[0][name].reshape(values[0][name].shape[0], -1).astype(np.float64)
            b = values[1][name].reshape(a.shape).astype(np.float64)
            norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            cos = np.where(norm > 0, (a * b).sum(1) / np.where(norm > 0, norm, 1), 1.0)
            errors[name] = float(1.0 - cos.mean())
    return errors


def _most_damaging(
    named: Path, analysis: Path, model: Any, excluded: list[str], data: EvalData, round_index: int
) -> list[str]:
    nodes = [n for n in model.graph.node if n.op_type in COMPUTE_OPS and n.name not in excluded]
    tensors = sorted({n.output[0] for n in nodes} | {n.input[0] for n in nodes})
    errors = _tensor_errors(named, analysis, tensors, data)
    damage = {n.name: errors.get(n.output[0], 0.0) - errors.get(n.input[0], 0.0) for n in nodes}
    count = max(1, math.ceil(len(nodes) * 0.1 * 2**round_index))
    ranked = sorted((name for name, d in damage.items() if d > 0), key=damage.get, reverse=True)
    return ranked[:count]
