"""OpenVINO variants of ``build``: the finished ONNX graphs converted to OpenVINO IR, to be verified and
benchmarked beside the ONNX Runtime ones so the report can recommend whichever is faster.

OpenVINO reads ONNX, including the int8 step's Q/DQ graphs (it turns each Q/DQ pair into a FakeQuantize and
runs its own int8 kernels), so ``openvino-int8`` is the very quantization the accuracy-aware search kept,
judged again on OpenVINO. The IR keeps deployopt's signature in its ``rt_info``. fp16 is offered only where
OpenVINO's CPU plugin computes in it (AVX512-FP16 / AMX-FP16); elsewhere the report says why not.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from deployopt.errors import BackendUnavailableError, StageError
from deployopt.sources.openvino_ir import RT_INFO_SECTION, RT_INFO_SIGNATURE
from deployopt.stages.base import BuildContext
from deployopt.types import ONNX_FP32

Runtime = Literal["auto", "onnxruntime", "openvino"]
# ONNX variant → the OpenVINO variant made from it
CONVERSIONS = {ONNX_FP32: "openvino-fp32", "onnx-int8": "openvino-int8"}
FP16_VARIANT = "openvino-fp16"


class IrConversion(BaseModel):
    """What shapes one IR: the variant it is made from and whether its weights are stored in fp16."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_variant: str
    compress_to_fp16: bool = False


def convert_to_ir(
    onnx_path: Path, xml_out: Path, bin_out: Path, conversion: IrConversion, signature_json: dict
) -> dict:
    """``ov.convert_model`` on the ONNX file, saved as IR to ``xml_out`` + ``bin_out`` (temporary paths the run
    directory renames into place; the XML does not name its .bin, so the pair may be renamed together)."""
    from deployopt.runners.openvino_runner import import_openvino

    ov = import_openvino()
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:  # the ONNX frontend raises OpConversionFailure and plain RuntimeErrors alike
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise StageError(f"{onnx_path}: OpenVINO cannot convert this graph ({first.strip()})") from exc
    model.set_rt_info(json.dumps(signature_json), [RT_INFO_SECTION, RT_INFO_SIGNATURE])
    with tempfile.TemporaryDirectory(dir=xml_out.parent, prefix=".ir-") as folder:
        saved = Path(folder) / "model.xml"
        ov.save_model(model, str(saved), compress_to_fp16=conversion.compress_to_fp16)
        os.replace(saved, xml_out)
        os.replace(saved.with_suffix(".bin"), bin_out)
    ops: dict[str, int] = {}
    for op in model.get_ordered_ops():
        ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1
    return {
        "openvino": ov.__version__,
        "fake_quantize": ops.get("FakeQuantize", 0),
        "ops": len(model.get_ordered_ops()),
    }


class OpenVinoStep:
    """Convert each finished ONNX variant (fp32, int8) to an OpenVINO IR artifact; skipped, with the reason,
    when ``--runtime onnxruntime`` is asked for or OpenVINO is not installed (an error under ``--runtime
    openvino``, which asked for it)."""

    name = "openvino"

    def run(self, ctx: BuildContext) -> None:
        from deployopt.runners.openvino_runner import cpu_capabilities

        runtime = ctx.config.runtime
        if runtime == "onnxruntime":
            return ctx.skip(self.name, "--runtime onnxruntime")
        try:
            capabilities = cpu_capabilities()
        except BackendUnavailableError as exc:
            if runtime == "openvino":
                raise
            return ctx.skip(self.name, f"{exc} — the recommendation covers ONNX Runtime only")
        for onnx_variant, variant in CONVERSIONS.items():
            if onnx_variant in ctx.artifacts:
                self._convert(ctx, onnx_variant, variant, IrConversion(source_variant=onnx_variant))
        if "fp16" not in ctx.config.quantize.make:
            return
        if "FP16" not in capabilities:
            from deployopt.platform.cpu import describe_cpu

            ctx.notes.append(
                f"{FP16_VARIANT} not made: OpenVINO's CPU plugin computes in fp16 only on CPUs with AVX512-FP16 or "
                f"AMX-FP16; this one ({describe_cpu()}) runs {', '.join(capabilities)}"
            )
        elif ONNX_FP32 in ctx.artifacts:
            self._convert(ctx, ONNX_FP32, FP16_VARIANT, IrConversion(source_variant=ONNX_FP32, compress_to_fp16=True))

    @staticmethod
    def _convert(ctx: BuildContext, onnx_variant: str, variant: str, conversion: IrConversion) -> None:
        # an int8 variant is converted from its Q/DQ form: OpenVINO's ONNX frontend maps Q/DQ pairs to
        # FakeQuantize, while QOperator ops (QLinearConv, …) are not all convertible
        source = ctx.qdq_graphs.get(onnx_variant, ctx.artifacts[onnx_variant])
        ctx.progress(f"{variant}: {source.path.name} → OpenVINO IR")
        stage = f"{variant}"

        def work(out: dict[str, Path]) -> dict:
            return convert_to_ir(source.path, out["model"], out["weights"], conversion, ctx.signature.to_json())

        outputs = {"model": f"model-{variant}.xml", "weights": f"model-{variant}.bin"}
        outcome = ctx.run.run_stage(stage, conversion, {"model": source.sha256}, outputs, work)
        ctx.add_artifact(variant, outcome)
        details = outcome.record["details"]
        fq = f", {details['fake_quantize']} FakeQuantize" if details["fake_quantize"] else ""
        summary = f"{source.path.name} ({onnx_variant}) → {outputs['model']} + .bin ({details['ops']} ops{fq})"
        ctx.record(stage, outcome, summary)
