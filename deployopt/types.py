"""Small shared types: the precision of an artifact and the record one build step leaves in the report.

They live here, below every subpackage, so stages, measurements and reports speak of the same things
without importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

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
class StepRecord:
    """What one build step did, as the report's "Steps" list shows it."""

    stage: str
    cached: bool
    seconds: float
    summary: str

    @classmethod
    def skipped(cls, stage: str, reason: str) -> StepRecord:
        return cls(stage, False, 0.0, f"skipped: {reason}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> StepRecord:
        return cls(data["stage"], bool(data.get("cached", False)), float(data.get("seconds", 0.0)), data["summary"])
