"""The one miss policy of a build: which artifact that misses its budget fails the build, and which is only
"not kept" (README, "What fails a build")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployopt.reports.model import NOT_KEPT, BuildReport
from deployopt.types import ONNX_FP32

if TYPE_CHECKING:
    from deployopt.flow.build import BuildConfig


def settle_misses(report: BuildReport, config: BuildConfig) -> None:
    """The one miss policy. An artifact that misses its budget fails the build when the user asked for it: the
    fp32 artifact always (``onnx-fp32``; OpenVINO's with ``--runtime openvino``; engines with ``--target
    tensorrt``), and a precision asked for by name (``--int8``, a pipeline's variant list) unless another artifact
    of that precision passes. Every other candidate deployopt tried on its own is not kept, with the reason;
    ``--strict`` makes every miss fail."""
    passing_precisions = {v.precision for v in report.variants[1:] if v.passed}
    for variant in report.variants[1:]:
        if variant.passed or config.strict:
            continue
        asked = (
            variant.name == ONNX_FP32
            or (variant.runtime == "tensorrt" and config.target == "tensorrt")
            or (variant.runtime == "openvino" and config.runtime == "openvino" and variant.precision == "fp32")
            or (variant.precision in config.quantize.required and variant.precision not in passing_precisions)
        )
        if not asked:
            variant.role = NOT_KEPT
            why = "; ".join(variant.verify.failures) if variant.verify else "no verdict"
            report.notes.append(f"{variant.name} not kept: it misses the {variant.precision} budget ({why})")
