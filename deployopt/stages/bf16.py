"""bf16 stage: the fp32 graph as an OpenVINO IR compiled in bf16, where the CPU computes in it (AMX-BF16 or
AVX512-BF16, as OpenVINO's CPU plugin reports). It is OpenVINO's own default precision on such CPUs for fp32
models — made here as an artifact of its own, judged by the bf16 budget, with the most damaging layers kept in
f32 when it misses (:mod:`deployopt.stages.openvino.layers`). ONNX Runtime's CPU provider has no bf16 kernels
worth shipping, so this variant exists on OpenVINO only. Where the CPU has no bf16 the report says so, with its
flags; asked for by name (``--bf16``), that stops the build before it starts.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from deployopt.errors import BackendUnavailableError, UsageError
from deployopt.sources.onnxutil import already_quantized, load_model
from deployopt.stages.base import BuildContext
from deployopt.stages.openvino import BF16_VARIANT, make_candidate, plan_for
from deployopt.types import ONNX_FP32, StepRecord


class Bf16Config(BaseModel):
    """Options of the bf16 variant of ``build`` (OpenVINO)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rounds: int = Field(
        6,
        ge=0,
        description="when a bf16 model (or an int8 model's bf16 layers) misses its budget: judged rounds of the "
        "per-layer search that keeps the most damaging layers in f32",
    )


class Bf16Step:
    """``build``'s bf16 variant: ``model-openvino-bf16.xml`` from the optimised fp32 graph."""

    name = "bf16"

    @staticmethod
    def check_available(config) -> None:
        """Asked for by name (``--bf16``, a pipeline's variant list): refuse before anything runs when this
        machine cannot make it — the one line names the CPU and its flags."""
        from deployopt.runners.openvino_runner import native_precision_problem

        if config.runtime == "onnxruntime":
            raise UsageError("--bf16 makes an OpenVINO artifact; it cannot be made with --runtime onnxruntime")
        if problem := native_precision_problem("bf16"):  # raises BackendUnavailableError without openvino
            raise BackendUnavailableError(f"--bf16: {problem}")

    def run(self, ctx: BuildContext) -> None:
        if reason := already_quantized(load_model(ctx.artifacts[ONNX_FP32].path)):
            return ctx.skip(self.name, reason)
        if ctx.config.runtime == "onnxruntime":
            return ctx.skip(self.name, "bf16 runs on OpenVINO, and --runtime onnxruntime leaves it out")
        try:
            candidate = plan_for(ctx)[BF16_VARIANT]
        except BackendUnavailableError as exc:
            return ctx.skip(self.name, str(exc))
        if isinstance(candidate, str):
            ctx.steps.append(StepRecord.skipped(self.name, candidate))
            ctx.notes.append(f"{BF16_VARIANT} not made: {candidate}")
            return None
        return make_candidate(ctx, BF16_VARIANT, candidate)
