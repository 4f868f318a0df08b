"""OpenVINO variants of ``build``: IR candidates made from the build's graphs, each judged by the final
verification before it becomes a variant, so the report can recommend whichever runtime is faster.

* ``openvino-fp32``: the optimised fp32 graph, converted (``ov.convert_model``).
* ``openvino-int8``: the int8 search's kept settings in Q/DQ form, converted — OpenVINO turns each Q/DQ pair
  into a FakeQuantize and runs its own int8 kernels, so this is the very quantization the search kept, judged
  again on OpenVINO.
* ``openvino-int8-nncf`` (when ``nncf`` is installed and there is calibration data): NNCF's post-training
  quantization of the fp32 IR (SmoothQuant and fast bias correction, the transformer preset for
  attention models) — what Optimum-Intel users get — as a second candidate for the same judge.
* ``openvino-fp16`` only where OpenVINO's CPU plugin computes in fp16 (AVX512-FP16 / AMX-FP16).

OpenVINO is an optional second runtime, so a candidate that misses its budget is not a failing variant: the
report says what it measured and why it was not kept, and the build's verdict stays that of its ONNX artifacts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from deployopt.data.eval_data import data_fingerprint
from deployopt.errors import BackendUnavailableError, DeployoptError, StageError
from deployopt.runners import spec_for_model
from deployopt.sources.detect import artifact_facts
from deployopt.sources.openvino_ir import RT_INFO_PRECISION, RT_INFO_SECTION, RT_INFO_SIGNATURE
from deployopt.stages.base import BuildContext
from deployopt.types import ONNX_FP32, Precision, StepRecord

Runtime = Literal["auto", "onnxruntime", "openvino"]
# ONNX variant → the OpenVINO variant converted from it
CONVERSIONS = {ONNX_FP32: "openvino-fp32", "onnx-int8": "openvino-int8"}
NNCF_VARIANT = "openvino-int8-nncf"
FP16_VARIANT = "openvino-fp16"
NNCF_MAX_SAMPLES = 300  # NNCF's own default subset size


class IrCandidate(BaseModel):
    """What shapes one IR: the variant it is made from and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_variant: str
    method: Literal["convert", "nncf"] = "convert"
    compress_to_fp16: bool = False


def save_ir(
    model: Any,
    out: dict[str, Path],
    signature_json: dict,
    precision: str,
    judge: Callable[[Path], dict],
    compress_to_fp16: bool,
) -> dict:
    """Save ``model`` as IR in a scratch folder, judge it there (the runner finds the .bin beside the .xml), then
    move both files onto the temporary paths (``out["model"]``, ``out["weights"]``) the run directory renames
    into place. The signature and the precision it is judged at travel in the IR's ``rt_info`` (a dynamic-int8
    graph has no FakeQuantize to tell it by). Returns the verdict with the IR's op counts."""
    from deployopt.runners.openvino_runner import import_openvino

    ov = import_openvino()
    _stable_names(model)
    model.set_rt_info(json.dumps(signature_json), [RT_INFO_SECTION, RT_INFO_SIGNATURE])
    model.set_rt_info(precision, [RT_INFO_SECTION, RT_INFO_PRECISION])
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    with tempfile.TemporaryDirectory(dir=out["model"].parent, prefix=".ir-") as folder:
        saved = Path(folder) / "model.xml"
        ov.save_model(model, str(saved), compress_to_fp16=compress_to_fp16)
        verdict = judge(saved)
        os.replace(saved, out["model"])
        os.replace(saved.with_suffix(".bin"), out["weights"])
    return {"openvino": ov.__version__, "fake_quantize": types.count("FakeQuantize"), "ops": len(types)} | verdict


def _stable_names(model: Any) -> None:
    """OpenVINO names the ops it creates from a per-process counter (``Reshape_15`` in one build, ``Reshape_349``
    in the next build of the same process); renumber them by position so the same graph gives the same IR."""
    for index, op in enumerate(model.get_ordered_ops()):
        prefix, _, number = op.get_friendly_name().rpartition("_")
        if prefix.isidentifier() and number.isdigit():
            op.set_friendly_name(f"{prefix}_{index}")


def convert_onnx(onnx_path: Path) -> Any:
    from deployopt.runners.openvino_runner import import_openvino

    ov = import_openvino()
    try:
        return ov.convert_model(str(onnx_path))
    except Exception as exc:  # the ONNX frontend raises OpConversionFailure and plain RuntimeErrors alike
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # the first line is a source location; the one naming the unsupported operators is the news
        reason = next((line for line in lines if "operation" in line.lower()), lines[0] if lines else repr(exc))
        raise StageError(f"{onnx_path}: OpenVINO cannot convert this graph ({reason})") from exc


def nncf_quantize(onnx_path: Path, calibration, transformer: bool) -> Any:
    """NNCF's default post-training int8 on the fp32 IR, calibrated one sample at a time on ``calibration``.
    NNCF draws progress bars on stdout, which is the command's result (``--json``): they are swallowed; the
    step's own progress line says what runs."""
    import contextlib
    import io
    import logging

    # NNCF imports torch's C++ extension loader, which warns "No CUDA runtime is found" on every CPU machine
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    samples = [batch for _, batch in zip(range(NNCF_MAX_SAMPLES), calibration.batches(1), strict=False)]
    options: dict[str, Any] = {"subset_size": len(samples)}
    if transformer:
        options["model_type"] = nncf.ModelType.TRANSFORMER
    model = convert_onnx(onnx_path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return nncf.quantize(model, nncf.Dataset(samples), **options)
    except Exception as exc:  # NNCF's own errors on a graph it cannot handle: the candidate is not made (a note)
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise StageError(f"{onnx_path}: NNCF cannot quantize this graph ({first})") from exc


class OpenVinoStep:
    """Make and judge the OpenVINO candidates; skipped, with the reason, under ``--runtime onnxruntime`` or
    without the ``openvino`` package (``build`` refuses ``--runtime openvino`` without it before any stage)."""

    name = "openvino"

    def run(self, ctx: BuildContext) -> None:
        from deployopt.runners.openvino_runner import cpu_capabilities

        if ctx.config.runtime == "onnxruntime":
            return ctx.skip(self.name, "--runtime onnxruntime")
        try:
            capabilities = cpu_capabilities()
        except BackendUnavailableError as exc:
            return ctx.skip(self.name, f"{exc} — the recommendation covers ONNX Runtime only")
        for onnx_variant, variant in CONVERSIONS.items():
            if onnx_variant in ctx.artifacts:
                self._candidate(ctx, variant, IrCandidate(source_variant=onnx_variant))
        make = ctx.config.quantize.make
        if "onnx-int8" in ctx.artifacts:  # a second int8 candidate beside the search's, where int8 was made
            self._nncf(ctx)
        if "fp16" not in make:
            return
        if "FP16" not in capabilities:
            from deployopt.platform.cpu import describe_cpu

            ctx.notes.append(
                f"{FP16_VARIANT} not made: OpenVINO's CPU plugin computes in fp16 only on CPUs with AVX512-FP16 or "
                f"AMX-FP16; this one ({describe_cpu()}) runs {', '.join(capabilities)}"
            )
        elif ONNX_FP32 in ctx.artifacts:
            self._candidate(ctx, FP16_VARIANT, IrCandidate(source_variant=ONNX_FP32, compress_to_fp16=True))

    def _nncf(self, ctx: BuildContext) -> None:
        from deployopt.sources.onnxutil import load_model
        from deployopt.stages.int8.quantize import is_transformer_like

        if importlib.util.find_spec("nncf") is None:
            ctx.notes.append(f"{NNCF_VARIANT} not tried: nncf is not installed (pip install 'deployopt[nncf]')")
        elif ctx.data.calibration is None:
            ctx.notes.append(f"{NNCF_VARIANT} not tried: NNCF's static int8 needs calibration data (--calibration)")
        else:
            transformer = is_transformer_like(load_model(ctx.artifacts[ONNX_FP32].path))
            self._candidate(ctx, NNCF_VARIANT, IrCandidate(source_variant=ONNX_FP32, method="nncf"), transformer)

    @staticmethod
    def _candidate(ctx: BuildContext, variant: str, candidate: IrCandidate, transformer: bool = False) -> None:
        # an int8 variant is converted from its Q/DQ form: OpenVINO's ONNX frontend maps Q/DQ pairs to
        # FakeQuantize, while QOperator ops (QLinearConv, …) are not all convertible
        source = ctx.qdq_graphs.get(candidate.source_variant, ctx.artifacts[candidate.source_variant])
        if candidate.method == "nncf":
            precision = Precision.INT8
        elif candidate.compress_to_fp16:
            precision = Precision.FP16
        else:  # what the converted graph is: fp32, or int8 (also an already-quantized source)
            precision = Precision(artifact_facts(source.path)["precision"])
        judge = ctx.judge(precision)
        calibration = ctx.data.calibration
        inputs = {
            "model": source.sha256,
            "judged_on": data_fingerprint(judge.data),
            "budget": json.dumps(judge.budget.model_dump(), sort_keys=True),
            "calibration": data_fingerprint(calibration) if candidate.method == "nncf" and calibration else "",
        }
        ctx.progress(
            f"{variant}: {source.path.name} → OpenVINO IR" + (" (NNCF int8)" if candidate.method == "nncf" else "")
        )

        def judged(path: Path) -> dict:
            result = judge(spec_for_model(str(path)))
            return {"passed": result.passed, "failures": result.failures, "verify": result.to_json()}

        def work(out: dict[str, Path]) -> dict:
            if candidate.method == "nncf":
                model = nncf_quantize(source.path, calibration, transformer)
            else:
                model = convert_onnx(source.path)
            return save_ir(model, out, ctx.signature.to_json(), precision, judged, candidate.compress_to_fp16)

        outputs = {"model": f"model-{variant}.xml", "weights": f"model-{variant}.bin"}
        try:
            outcome = ctx.run.run_stage(variant, candidate, inputs, outputs, work)
        except BackendUnavailableError:
            raise
        except DeployoptError as exc:  # an optional runtime: a graph it cannot take is a note, not a failed build
            ctx.steps.append(StepRecord.skipped(variant, str(exc)))
            ctx.notes.append(f"{variant} not made: {exc}")
            return
        d = outcome.record["details"]
        made = "NNCF int8 of" if candidate.method == "nncf" else "converted from"
        summary = f"{outputs['model']} + .bin, {made} {source.path.name} ({d['ops']} ops"
        summary += f", {d['fake_quantize']} FakeQuantize)" if d["fake_quantize"] else ")"
        if d["passed"]:
            artifact = ctx.add_artifact(variant, outcome)
            ctx.record(variant, outcome, summary)
            # the final verification would repeat this very judgement: hand it over under its cache key
            verdict = d["verify"] | {"candidate": str(artifact.path)}
            ctx.run.record_result(f"verify:{variant}", ctx.verification_key(artifact.sha256, judge), verdict)
        else:
            why = "; ".join(d["failures"])
            ctx.record(variant, outcome, f"{summary}; not kept as a variant: misses its budget ({why})")
            ctx.notes.append(f"{variant} not kept: it misses the {precision} budget on OpenVINO ({why})")
