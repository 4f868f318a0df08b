"""OpenVINO variants of ``build``: IR candidates made from the build's graphs, each judged by the final
verification before it becomes a variant, so the report can recommend whichever runtime is faster.

* ``openvino-fp32``: the optimised fp32 graph, converted (``ov.convert_model``), compiled in f32.
* ``openvino-int8``: the int8 search's kept settings in Q/DQ form, converted — OpenVINO turns each Q/DQ pair
  into a FakeQuantize and runs its own int8 kernels, so this is the very quantization the search kept, judged
  again on OpenVINO.
* ``openvino-int8-nncf`` (when ``nncf`` is installed and there is calibration data): NNCF's post-training
  quantization of the fp32 IR (SmoothQuant and fast bias correction, the transformer preset for attention
  models) — what Optimum-Intel users get — and, when that misses the budget, NNCF's accuracy control with the
  build's judge as its validation (:mod:`.nncf`).
* ``openvino-fp16`` where OpenVINO's CPU plugin computes in fp16 (AVX512-FP16 / AMX-FP16); ``openvino-bf16``
  (the bf16 variant, :mod:`deployopt.stages.bf16`) where it computes in bf16 (AMX-BF16 / AVX512-BF16). Neither
  is made from a graph that is already int8.

On a CPU with bf16 the int8 IRs run their float (non-quantized) layers in bf16 when that stays within budget;
every low-precision IR that misses keeps its most damaging layers in f32 (:mod:`.layers`). Which candidates a
build tries on this machine is one function, :func:`openvino_candidates`, which the tests ask too.

A candidate that misses its budget still becomes a variant with its verdict; the build's one miss policy
(``flow.misses``) decides whether the miss fails the build (a precision asked for by name, ``--strict``) or the
candidate is not kept, with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from deployopt.data.eval_data import data_fingerprint
from deployopt.errors import BackendUnavailableError, DeployoptError
from deployopt.sources.onnxutil import already_quantized, load_model
from deployopt.stages.base import BuildContext
from deployopt.stages.openvino.ir import convert_onnx, op_counts, save_ir
from deployopt.stages.openvino.layers import SearchRounds, describe, layer_search, settle
from deployopt.stages.precision_search import AttemptTiming
from deployopt.types import ONNX_FP32, Precision, StepRecord

Runtime = Literal["auto", "onnxruntime", "openvino"]
InferencePrecision = Literal["fp32", "bf16", "fp16"]
# ONNX variant → the OpenVINO variant converted from it
CONVERSIONS = {ONNX_FP32: "openvino-fp32", "onnx-int8": "openvino-int8"}
NNCF_VARIANT = "openvino-int8-nncf"
FP16_VARIANT = "openvino-fp16"
BF16_VARIANT = "openvino-bf16"


class IrCandidate(BaseModel):
    """What shapes one IR: the variant it is made from, how, the precision it is judged at, and the inference
    precisions it may be compiled in (lowest first; see :mod:`.layers`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_variant: str
    precision: Precision
    method: Literal["convert", "nncf"] = "convert"
    compress_to_fp16: bool = False
    inference: tuple[InferencePrecision, ...] = ("fp32",)
    search_rounds: int = 0  # judged attempts of the per-layer search (0: none)
    rounds_option: str = ""  # the option that sets them, named in the notes


def openvino_candidates(
    config, made: Iterable[str], float_source: bool, calibrated: bool
) -> dict[str, IrCandidate | str]:
    """The OpenVINO variants a build with ``config`` (its BuildConfig) tries on this machine, in report order:
    each one's candidate, or why it is not made (a note). ``made``: the ONNX variants the build has;
    ``float_source``: the fp32 graph is not already int8; ``calibrated``: there is calibration data. Raises
    BackendUnavailableError without openvino."""
    from deployopt.runners.openvino_runner import native_precision_problem

    quantize, made = config.quantize, set(made)
    bf16_problem = native_precision_problem("bf16")
    # an int8 IR's float layers: in bf16 first where the CPU computes in it, f32 when that misses
    islands: tuple[InferencePrecision, ...] = ("fp32",) if bf16_problem else ("bf16", "fp32")
    bf16_search = {"search_rounds": quantize.bf16.max_rounds, "rounds_option": "--bf16-max-rounds"}
    int8 = {"precision": Precision.INT8, "inference": islands, **bf16_search}
    float_graph = float_source and ONNX_FP32 in made  # an int8 graph gets no fp16/bf16 re-encoding of itself
    plan: dict[str, IrCandidate | str] = {}
    if float_graph and "bf16" in quantize.make:  # first: the bf16 variant's step runs before this one
        plan[BF16_VARIANT] = bf16_problem or IrCandidate(
            source_variant=ONNX_FP32, precision=Precision.BF16, inference=("bf16",), **bf16_search
        )
    if ONNX_FP32 in made:
        source = {"precision": Precision.FP32} if float_source else int8
        plan["openvino-fp32"] = IrCandidate(source_variant=ONNX_FP32, **source)
    if "onnx-int8" in made:
        plan["openvino-int8"] = IrCandidate(source_variant="onnx-int8", **int8)
        if importlib.util.find_spec("nncf") is None:
            plan[NNCF_VARIANT] = "nncf is not installed (pip install 'deployopt[nncf]')"
        elif not calibrated:
            plan[NNCF_VARIANT] = "NNCF's static int8 needs calibration data (--calibration)"
        else:
            plan[NNCF_VARIANT] = IrCandidate(source_variant=ONNX_FP32, method="nncf", **int8)
    if float_graph and "fp16" in quantize.make:
        fp16_problem = native_precision_problem("fp16")
        plan[FP16_VARIANT] = fp16_problem or IrCandidate(
            source_variant=ONNX_FP32,
            precision=Precision.FP16,
            compress_to_fp16=True,
            inference=("fp16",),
            search_rounds=quantize.fp16.max_rounds,
            rounds_option="--fp16-max-rounds",
        )
    return plan


def plan_for(ctx: BuildContext) -> dict[str, IrCandidate | str]:
    """:func:`openvino_candidates` for the build in ``ctx``, with the ONNX variants it has made so far."""
    float_source = not already_quantized(load_model(ctx.artifacts[ONNX_FP32].path))
    return openvino_candidates(ctx.config, ctx.artifacts, float_source, ctx.data.calibration is not None)


class OpenVinoStep:
    """Make and judge the OpenVINO candidates; skipped, with the reason, under ``--runtime onnxruntime`` or
    without the ``openvino`` package (``build`` refuses ``--runtime openvino`` without it before any stage)."""

    name = "openvino"

    def run(self, ctx: BuildContext) -> None:
        if ctx.config.runtime == "onnxruntime":
            return ctx.skip(self.name, "--runtime onnxruntime")
        try:
            plan = plan_for(ctx)
        except BackendUnavailableError as exc:
            return ctx.skip(self.name, f"{exc} — the recommendation covers ONNX Runtime only")
        for variant, candidate in plan.items():
            if variant == BF16_VARIANT:
                continue  # the bf16 variant's own step makes it
            if isinstance(candidate, str):
                ctx.notes.append(f"{variant} not made: {candidate}")
            else:
                make_candidate(ctx, variant, candidate)


def make_candidate(ctx: BuildContext, variant: str, candidate: IrCandidate) -> None:
    """Make ``variant``'s IR in a process of its own (:mod:`deployopt.isolation`: OpenVINO and NNCF are native
    code that can crash), settle how it is compiled with the build's judge, and add it as a variant with its
    verdict (the miss policy decides whether a miss is kept); a graph OpenVINO cannot take, or a crash, is a note."""
    from deployopt.isolation import child_progress, run_isolated

    # an int8 variant is converted from its Q/DQ form: OpenVINO's ONNX frontend maps Q/DQ pairs to
    # FakeQuantize, while QOperator ops (QLinearConv, …) are not all convertible
    source = ctx.qdq_graphs.get(candidate.source_variant, ctx.artifacts[candidate.source_variant])
    judge = ctx.judge(candidate.precision)
    calibration = ctx.data.calibration if candidate.method == "nncf" else None
    inputs = {
        "model": source.sha256,
        "judged_on": data_fingerprint(judge.data),
        "budget": json.dumps(judge.budget.model_dump(), sort_keys=True),
        "calibration": data_fingerprint(calibration) if calibration else "",
    }
    ctx.progress(f"{variant}: {source.path.name} → OpenVINO IR" + (" (NNCF int8)" if calibration else ""))

    def work(out: dict[str, Path]) -> dict:
        job = dict(
            source_path=source.path,
            candidate=candidate,
            variant=variant,
            judge=judge.detached(),
            calibration=calibration,
            signature=ctx.signature.to_json(),
            out=out,
            progress=child_progress,
            timing=ctx.attempt_timing(),
        )
        return run_isolated(variant, make_ir, job, ctx.progress, scratch=ctx.run.root)

    outputs = {"model": f"model-{variant}.xml", "weights": f"model-{variant}.bin"}
    try:
        outcome = ctx.run.run_stage(variant, candidate, inputs, outputs, work)
    except BackendUnavailableError:
        raise
    except DeployoptError as exc:  # an optional runtime: a graph it cannot take is a note, not a failed build
        ctx.steps.append(StepRecord.skipped(variant, str(exc)))
        ctx.notes.append(f"{variant} not made: {exc}")
        ctx.progress(f"{variant} not made: {exc}")
        return
    d = outcome.record["details"]
    summary = describe(outputs["model"], source.path.name, d)
    artifact = ctx.add_artifact(variant, outcome)  # a miss too: the build's miss policy decides whether it is kept
    ctx.record(variant, outcome, summary if d["passed"] else f"{summary}; misses its budget", layer_search(d, variant))
    # the final verification would repeat this very judgement: hand it over under its cache key
    verdict = d["verify"] | {"candidate": str(artifact.path)}
    ctx.run.record_result(f"verify:{variant}", ctx.verification_key(artifact.sha256, judge), verdict)


def make_ir(
    source_path: Path,
    candidate: IrCandidate,
    variant: str,
    judge,
    calibration,
    signature: dict,
    out: dict[str, Path],
    progress,
    timing: AttemptTiming | None = None,
) -> dict:
    """One IR candidate: converted (or quantized by NNCF, with its accuracy control when the default misses),
    compiled as :func:`~.layers.settle` decides, written to ``out``; returns the stage's details."""
    from deployopt.stages.openvino.nncf import nncf_accuracy_control, nncf_quantize

    rounds = SearchRounds(candidate.search_rounds, candidate.rounds_option)
    nncf = candidate.method == "nncf"

    def settled_ir(model: Any, folder: Path) -> tuple[Any, dict]:
        folder.mkdir()
        base = save_ir(model, folder / "base.xml", signature, candidate.precision, candidate.compress_to_fp16)
        chosen = settle(base, folder, candidate.inference, judge, rounds, progress, variant, timing)
        return chosen, op_counts(base) | chosen.details()

    with tempfile.TemporaryDirectory(dir=out["model"].parent, prefix=".ir-") as scratch:
        if nncf:
            transformer = _transformer(source_path)
            model = nncf_quantize(source_path, calibration, transformer)
        else:
            model = convert_onnx(source_path)
        chosen, details = settled_ir(model, Path(scratch) / "ir")
        details = {"openvino": _openvino_version(), "method": candidate.method} | details
        if nncf and not chosen.passed:
            progress(f"{variant}: NNCF's default int8 misses; its accuracy control, judged by the build's judge")
            restored = nncf_accuracy_control(source_path, calibration, transformer, judge)
            chosen, controlled = settled_ir(restored, Path(scratch) / "accuracy-control")
            default = {key: details[key] for key in ("passed", "verify", "fake_quantize", "attempts")}
            details |= controlled | {"method": "nncf accuracy control", "nncf_default": default}
        os.replace(chosen.xml, out["model"])
        os.replace(chosen.xml.with_suffix(".bin"), out["weights"])
    return details


def _transformer(onnx_path: Path) -> bool:
    from deployopt.stages.int8.quantize import is_transformer_like

    return is_transformer_like(load_model(onnx_path))


def _openvino_version() -> str:
    from deployopt.runners.openvino_runner import import_openvino

    return import_openvino().__version__
