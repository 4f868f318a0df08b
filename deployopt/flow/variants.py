"""The quantized variants of ``deployopt build``: fp16 and int8 stages run through the run directory.

Each returns the artifact path, or None with a reason the report prints when a variant cannot be
made here (e.g. static int8 without calibration data) — never a silent skip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deployopt.data.calibration import Preprocess, as_eval_data, load_calibration
from deployopt.data.eval_data import EvalData, dataset_data
from deployopt.measure.verify import Budget, budget_for, data_fingerprint
from deployopt.rundir import RunDirectory
from deployopt.sources.signature import Signature
from deployopt.stages.fp16 import Fp16Config, convert_fp16
from deployopt.stages.int8.quantize import Int8Config, load_model, quantizable_nodes, resolve_mode
from deployopt.stages.int8.search import quantize_int8

Variant = Literal["fp16", "int8"]


class QuantizedVariants(BaseModel):
    """Which quantized variants ``build`` makes, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    make: tuple[Variant, ...] = Field(("fp16", "int8"), description="variants beside fp32")
    fp16: Fp16Config = Fp16Config()
    int8: Int8Config = Int8Config()
    calibration: Path | None = Field(None, description=".npz/.npy or image folder; default: the model's dataset")
    preprocess: Preprocess | None = None


@dataclass
class VariantOutcome:
    path: Path | None
    stage: dict  # the report's step entry
    skipped: str | None = None


def make_fp16(run: RunDirectory, fp32: Path, fp32_hash: str, config: Fp16Config) -> VariantOutcome:
    outcome = run.run_stage(
        "fp16",
        config,
        {"model": fp32_hash},
        {"model": "model-fp16.onnx"},
        lambda out: convert_fp16(fp32, out["model"], config).to_json(),
    )
    d = outcome.record["details"]
    kept = d["fallback_nodes"]
    summary = (
        f"float16 weights and activations with float32 inputs/outputs; {d['fp16_nodes']} fp16 nodes, "
        f"{d['fp32_nodes']} fp32 nodes (converter block list)"
        + (f"; kept in fp32 because ONNX Runtime refused them: {', '.join(kept)}" if kept else "")
    )
    return VariantOutcome(outcome.output("model"), stage_entry("fp16", outcome, summary))


def calibration_data(signature: Signature, variants: QuantizedVariants, dataset: str | None) -> EvalData | None:
    """At most ``int8.samples`` calibration samples: --calibration, else the dataset's 'val' split."""
    limit = variants.int8.samples
    if variants.calibration is not None:
        return as_eval_data(load_calibration(signature, variants.calibration, variants.preprocess), signature, limit)
    if dataset is not None:
        return as_eval_data(dataset_data(signature, dataset, "val"), signature, limit)
    return None


def make_int8(
    run: RunDirectory,
    fp32: Path,
    fp32_hash: str,
    signature: Signature,
    variants: QuantizedVariants,
    dataset: str | None,
    eval_data: EvalData,
    budget: Budget,
    batches: tuple[int, ...],
    threads: int | None,
    progress: Callable[[str], None],
    name: str = "int8",
) -> VariantOutcome:
    """``name`` keeps a second int8 variant (the TensorRT Q/DQ one, ``int8-tensorrt``) apart in the run dir."""
    config = variants.int8
    model = load_model(fp32)
    if not quantizable_nodes(model, []):
        return skip_variant(name, "the graph has no Conv/MatMul/Gemm for int8 to speed up")
    calibration = calibration_data(signature, variants, dataset)
    mode = resolve_mode(model, config)
    if mode == "static" and calibration is None:
        return skip_variant(name, "static int8 needs calibration data: pass --calibration FILE.npz or an image folder")
    search_data = calibration if calibration is not None else eval_data
    full_budget = budget_for("int8", budget.model_dump())
    inputs = {
        "model": fp32_hash,
        "calibration": data_fingerprint(calibration) if calibration else None,
        "search_data": data_fingerprint(search_data),
        "budget": full_budget.model_dump(),
        "batches": list(batches),
    }
    outcome = run.run_stage(
        name,
        config,
        inputs,
        {"model": f"model-{name}.onnx"},
        lambda out: quantize_int8(
            fp32, out["model"], config, calibration, search_data, full_budget, batches, threads, progress
        ).to_json(),
    )
    return VariantOutcome(outcome.output("model"), stage_entry(name, outcome, int8_summary(outcome.record["details"])))


def int8_summary(d: dict) -> str:
    ops = ", ".join(f"{op} {c['int8']}/{c['int8'] + c['float']}" for op, c in d["op_counts"].items())
    attempts = "; ".join(
        f"round {a['round']} {a['candidate']} ({len(a['excluded'])} in float): cosine {a['cosine']:.5f}, "
        + ", ".join(f"b{b} {v:.2f} ms" for b, v in a["p50_ms"].items())
        + (" pass" if a["passed"] else " miss")
        for a in d["attempts"]
    )
    excluded = f"; kept in float: {', '.join(d['excluded'])}" if d["excluded"] else ""
    return f"{d['mode']} quantization, kept {d['chosen']}; int8 ops {ops}{excluded}. Attempts: {attempts}"


def stage_entry(name: str, outcome, summary: str) -> dict:
    return {"stage": name, "cached": outcome.cached, "seconds": outcome.record["seconds"], "summary": summary}


def skip_variant(name: str, reason: str) -> VariantOutcome:
    return VariantOutcome(
        None,
        {"stage": name, "cached": False, "seconds": 0.0, "summary": f"skipped: {reason}"},
        skipped=f"{name} skipped: {reason}",
    )
