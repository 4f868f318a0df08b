"""The one miss policy of a build: which artifact that misses its budget fails the build, and which is only
"not kept" (docs/commands/build.md, "What fails a build")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployopt.reports.model import NOT_KEPT, BuildReport
from deployopt.types import ONNX_FP32

if TYPE_CHECKING:
    from deployopt.flow.build import BuildConfig
    from deployopt.stages.base import BuildContext

DIVERGENCE_SECONDS = 300  # the per-op comparison of a large graph in float64 numpy: stopped, not waited for


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


def explain_fp32_miss(ctx: BuildContext, report: BuildReport) -> list[str]:
    """When the fp32 artifact misses: the ops whose own error in ONNX Runtime is largest, on one verification
    sample (:mod:`deployopt.measure.divergence`) — a runtime kernel, not the graph, is then the one to blame. When
    the original runs on ONNX Runtime as well, its kernels are on both sides: the graph passes are named instead."""
    from deployopt.errors import DeployoptError
    from deployopt.isolation import run_isolated
    from deployopt.measure.divergence import divergence_note, op_errors

    fp32 = report.variant(ONNX_FP32)
    if fp32 is None or fp32.passed or not fp32.verify or fp32.verify.failures[0].startswith("crashed"):
        return []
    if ctx.reference.backend == "onnxruntime":  # the same kernels on both sides: they cannot be the difference
        return [
            f"{ONNX_FP32} misses against the original, which runs on ONNX Runtime too: the difference comes from "
            "what the graph step changed (its passes are listed in the report); the original file itself is "
            "the faithful fp32 artifact"
        ]
    ctx.progress(f"{ONNX_FP32} misses: comparing each op of it with exact arithmetic")
    job = {"model_path": ctx.artifacts[ONNX_FP32].path, "feeds": ctx.data.verification.take(range(1))}
    try:
        errors = run_isolated("per-op comparison", op_errors, job, ctx.progress, timeout=DIVERGENCE_SECONDS)
    except DeployoptError as exc:
        return [f"{ONNX_FP32} misses; the per-op comparison that would say where could not run: {exc}"]
    return [divergence_note(ONNX_FP32, errors)]
