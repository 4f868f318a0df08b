"""The record of an int8 search — each attempt, the result — and the sentences that explain it in the report:
why the written attempt won, why nothing met the budget, when int8 is slower than fp32 here."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from deployopt.measure.verify import Judge, VerifyResult
from deployopt.platform.cpu import x86_without_vnni
from deployopt.stages.precision_search import NodeDamage

COSTLIEST_SHOWN = 6  # nodes named in the report when the budget cannot be met


@dataclass
class Attempt:
    round: int  # 1-based order of the attempt
    phase: str  # calibration | mixed precision | encoding
    candidate: str
    excluded: list[str]
    passed: bool
    failures: list[str]
    cosine: float | None  # the lowest mean cosine over the outputs
    top1_agreement: float | None
    accuracy: float | None
    op_counts: dict[str, dict[str, int]]
    p50_ms: dict[int, float] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)  # against the fp32 graph, same benchmark run
    metrics: dict[str, float] = field(default_factory=dict)  # VerifyResult.headline()
    slack: float | None = None  # VerifyResult.slack


@dataclass
class Int8Result:
    mode: str
    chosen: str
    passed: bool
    excluded: list[str]
    op_counts: dict[str, dict[str, int]]
    attempts: list[Attempt]
    calibration: dict[str, Any] | None = None  # origin, samples, batch, methods, ranges reused
    judged_on: str = ""  # the verification data every attempt was judged on
    costliest: list[dict] = field(default_factory=list)  # NodeDamage.to_json, most damaging first
    fp32_p50_ms: dict[int, float] = field(default_factory=dict)
    search_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    kept_round: int = 0  # the attempt written
    why_kept: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def headline(result: VerifyResult) -> tuple[float | None, float | None, float | None]:
    cosines = [o.cosine for o in result.outputs]
    agreements = [o.top1_agreement for o in result.outputs if o.top1_agreement is not None]
    return (min(cosines) if cosines else None, min(agreements) if agreements else None, result.candidate_accuracy)


def accuracy_rank(a: Attempt) -> tuple:
    """Sort key, most accurate first: passing, then fewer failed checks, higher top-1 agreement, higher cosine."""
    return (not a.passed, len(a.failures), -(a.top1_agreement or 0.0), -(a.cosine if a.cosine is not None else -1))


def speed(a: Attempt) -> float:
    """Geometric mean of p50 over the batch sizes (lower is faster)."""
    return math.exp(sum(math.log(v) for v in a.p50_ms.values()) / len(a.p50_ms)) if a.p50_ms else math.inf


def why_kept(attempts: list[Attempt], settings: int, chosen: int) -> str:
    """Why the written attempt won, in one sentence."""
    kept = attempts[settings]
    reason = (
        f"attempt {kept.round} passes with the fewest nodes in float ({len(kept.excluded)})"
        if kept.passed
        else f"no attempt passes; attempt {kept.round} is the most accurate"
    )
    twin = next((a for a in attempts if a.phase == "encoding"), None)
    if twin is not None:
        ratio = speed(kept) / speed(twin) if speed(twin) < math.inf else math.nan
        verdict = "pass" if twin.passed else "miss"
        reason += f"; its QOperator twin ({verdict}, {ratio:.2f}× its speed) " + (
            "replaces it" if chosen != settings else "does not: it must be as accurate and ≥ 15 % faster"
        )
    return f"kept: {reason}"


def slower_than_fp32(best: Attempt) -> list[str]:
    """A kept int8 model that runs slower than fp32 is said so, with the likely reason on this CPU."""
    if not best.speedup or any(v >= 1 for v in best.speedup.values()):
        return []
    speeds = ", ".join(f"{v:.2f}× at batch {b}" for b, v in best.speedup.items())
    why = (
        "this CPU has no AVX-512 VNNI, so ONNX Runtime's int8 convolutions run on AVX2 kernels with 7-bit weights"
        if x86_without_vnni()
        else "its int8 kernels do not pay off for these layer shapes"
    )
    return [f"the kept int8 model is slower than fp32 here ({speeds}): {why}; prefer the fp32 or fp16 artifact"]


def why_not(best: Attempt, ranking: list[NodeDamage], judge: Judge) -> list[str]:
    """When nothing met the budget: the costliest nodes and the best trade-off found, in words."""
    speed = ", ".join(f"{s:.2f}× fp32 at batch {b}" for b, s in best.speedup.items())
    quality = ", ".join(
        text
        for text in (
            f"top-1 agreement {best.top1_agreement:.1%}" if best.top1_agreement is not None else "",
            f"cosine {best.cosine:.5f}" if best.cosine is not None else "",
            f"accuracy {best.accuracy:.2f}%" if best.accuracy is not None else "",
        )
        if text
    )
    notes = [
        f"no int8 candidate meets the budget on {judge.data.origin}; best trade-off found: {best.candidate} with "
        f"{len(best.excluded)} node(s) in float: {quality}"
        + (f", {speed}" if speed else "")
        + " (written, marked failing)"
    ]
    if ranking:
        costliest = ", ".join(f"{d.node} ({d.op_type}, {d.damage:.2e})" for d in ranking[:COSTLIEST_SHOWN])
        notes.append(f"nodes costing the most accuracy (extra mean 1−cosine over their input's): {costliest}")
    return notes
