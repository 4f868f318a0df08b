"""Small shared types: the precision of an artifact and the record one build step leaves in the report.

They live here, below every subpackage, so stages, measurements and reports speak of the same things
without importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

ONNX_FP32 = "onnx-fp32"  # the optimised fp32 graph: every low-precision variant starts from it
REPORT_FORMAT = "deployopt.report/1"  # report.json's format: bumped when a field changes meaning or disappears


class Precision(str, enum.Enum):
    """The numeric precision of an artifact; it picks the default accuracy budget."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    __str__ = str.__str__
    __format__ = str.__format__


@dataclass(frozen=True)
class SearchAttempt:
    """One judged attempt of a precision search, in the terms every search shares (the report's attempt table)."""

    number: int  # 1-based, in the order the search made them
    tried: str  # what this attempt was, in words ("static-qdq-U8S8-minmax", "bf16, per-layer")
    kept_higher: tuple[str, ...]  # nodes (or layer blocks) kept in the search's higher precision
    metrics: dict[str, float]  # VerifyResult.headline(): the judge's numbers, worst over the outputs
    slack: float | None  # VerifyResult.slack: 1 as the original, 0 at a budget limit, below 0 a miss
    failures: tuple[str, ...]
    p50_ms: dict[int, float] = field(default_factory=dict)  # timed beside the fp32 graph, own process each
    speedup: dict[int, float] = field(default_factory=dict)  # × the fp32 graph at the same batch, same run

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        fields = asdict(self)
        fields |= {"p50_ms": _keys_to_str(self.p50_ms), "speedup": _keys_to_str(self.speedup)}
        return fields

    @classmethod
    def recorded(cls, attempt: dict, tried: str, kept_higher: list[str], metrics: dict[str, float]) -> SearchAttempt:
        """From an attempt as a search stage records it (its ``round``, ``failures``, ``slack`` and timings)."""
        return cls(
            attempt["round"],
            tried,
            tuple(kept_higher),
            metrics,
            attempt["slack"],
            tuple(attempt["failures"]),
            _by_batch(attempt["p50_ms"]),
            _by_batch(attempt["speedup"]),
        )

    @classmethod
    def from_json(cls, data: dict) -> SearchAttempt:
        batches = {"p50_ms": _by_batch(data["p50_ms"]), "speedup": _by_batch(data["speedup"])}
        return cls(
            **{k: data[k] for k in ("number", "tried", "metrics", "slack")},
            kept_higher=tuple(data["kept_higher"]),
            failures=tuple(data["failures"]),
            **batches,
        )


@dataclass(frozen=True)
class PrecisionSearch:
    """A precision search as the report draws it: what it searched for, every attempt, the one kept and why."""

    title: str  # "int8 accuracy search"
    variant: str  # the artifact it made
    higher: str  # the precision kept nodes run in: "float", "fp32", "f32"
    kept: int  # the number of the attempt written
    why_kept: str
    attempts: tuple[SearchAttempt, ...]

    def to_json(self) -> dict:
        return {**asdict(self), "attempts": [a.to_json() for a in self.attempts]}

    @classmethod
    def from_json(cls, data: dict) -> PrecisionSearch:
        attempts = tuple(SearchAttempt.from_json(a) for a in data["attempts"])
        return cls(**{k: data[k] for k in ("title", "variant", "higher", "kept", "why_kept")}, attempts=attempts)


def _keys_to_str(values: dict[int, float]) -> dict[str, float]:
    return {str(batch): value for batch, value in values.items()}


def _by_batch(values: dict) -> dict[int, float]:
    """Values per batch size with int keys again (JSON keeps them as strings)."""
    return {int(batch): value for batch, value in values.items()}


@dataclass(frozen=True)
class StepRecord:
    """What one build step did, as the report's "Steps" list shows it; a precision search's attempts too."""

    stage: str
    cached: bool
    seconds: float
    summary: str
    search: PrecisionSearch | None = None

    @classmethod
    def skipped(cls, stage: str, reason: str) -> StepRecord:
        return cls(stage, False, 0.0, f"skipped: {reason}")

    def to_json(self) -> dict:
        fields = {"stage": self.stage, "cached": self.cached, "seconds": self.seconds, "summary": self.summary}
        return fields | ({"search": self.search.to_json()} if self.search else {})

    @classmethod
    def from_json(cls, data: dict) -> StepRecord:
        search = PrecisionSearch.from_json(data["search"]) if data.get("search") else None
        return cls(
            data["stage"], bool(data.get("cached", False)), float(data.get("seconds", 0.0)), data["summary"], search
        )
