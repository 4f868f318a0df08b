"""int8: ``quantize`` makes one candidate with onnxruntime.quantization, ``search`` runs the accuracy-aware
loop around it, and :class:`Int8Step` is the int8 variant of ``build``."""

from __future__ import annotations

from pathlib import Path

from deployopt.data.eval_data import data_fingerprint
from deployopt.measure.budgets import resolve_budget
from deployopt.sources.onnxutil import already_quantized, load_model
from deployopt.stages.base import BuildContext
from deployopt.stages.int8.quantize import quantizable_nodes, resolve_mode
from deployopt.stages.int8.search import quantize_int8
from deployopt.types import ONNX_FP32, Precision


class Int8Step:
    """The int8 variant: the fp32 graph quantized (accuracy-aware) into ``model-<name>.onnx``.

    ``target`` overrides the config's target, so the TensorRT build adds a second, symmetric Q/DQ int8 step
    (``int8-tensorrt``) beside the CPU one; ``announce`` is its progress line.
    """

    def __init__(
        self, name: str = "int8", variant: str = "onnx-int8", target: str | None = None, announce: str | None = None
    ) -> None:
        self.name, self.variant, self.target, self.announce = name, variant, target, announce

    def run(self, ctx: BuildContext) -> None:
        if self.announce:
            ctx.progress(self.announce)
        config = ctx.config.quantize.int8
        if self.target is not None:
            config = config.model_copy(update={"target": self.target})
        fp32 = ctx.artifacts[ONNX_FP32]
        model = load_model(fp32.path)
        if reason := already_quantized(model):
            return ctx.skip(self.name, reason)
        if not quantizable_nodes(model, []):
            return ctx.skip(self.name, "the graph has no Conv/MatMul/Gemm for int8 to speed up")
        calibration = ctx.data.calibration
        if resolve_mode(model, config) == "static" and calibration is None:
            reason = "static int8 needs calibration data: pass --calibration FILE.npz or an image folder"
            return ctx.skip(self.name, reason)
        search_data = calibration if calibration is not None else ctx.data.verification
        budget = resolve_budget(Precision.INT8, ctx.config.verify.budget)
        bench = ctx.config.bench
        inputs = {
            "model": fp32.sha256,
            "calibration": data_fingerprint(calibration) if calibration else None,
            "search_data": data_fingerprint(search_data),
            "budget": budget.model_dump(),
            "batches": list(bench.batch_sizes),
        }

        def work(out: dict[str, Path]) -> dict:
            result = quantize_int8(
                fp32.path,
                out["model"],
                config,
                calibration,
                search_data,
                budget,
                bench.batch_sizes,
                bench.threads,
                ctx.progress,
            )
            return result.to_json()

        outcome = ctx.run.run_stage(self.name, config, inputs, {"model": f"model-{self.name}.onnx"}, work)
        ctx.add_artifact(self.variant, outcome)
        ctx.record(self.name, outcome, int8_summary(outcome.record["details"]))


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
