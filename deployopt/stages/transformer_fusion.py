"""Transformer fusion: ONNX Runtime's transformers optimizer (attention, embedding + LayerNorm, GELU fusions) on the
optimised fp32 graph of a Hugging Face transformer, as the ``onnx-fp32-fused`` variant.

The fused graph uses ONNX Runtime's own operators (``com.microsoft`` Attention, BiasGelu, …), so it is a variant
beside the portable ``onnx-fp32`` — which int8, OpenVINO and TensorRT keep building from — never a replacement.
It is kept only when it computes what ``onnx-fp32`` does within the fp32 budget (the final verification, run once
here) *and* is faster at every batch size the build benchmarks (medians of interleaved in-process runs); what was
fused and both timings are recorded either way. ONNX Runtime already fuses much of this at session start on CPUs,
so "not faster" is a common, honest outcome.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

from deployopt.data.eval_data import cycled_batch
from deployopt.errors import DeployoptError, StageError
from deployopt.quiet import capture_output
from deployopt.runners import create_runner, spec_for_model
from deployopt.stages.base import BuildContext
from deployopt.types import ONNX_FP32, Precision

VARIANT = "onnx-fp32-fused"
# Hugging Face model_type → the optimizer's model type (the encoder families its BERT/ViT fusions match)
OPTIMIZER_MODEL_TYPES = {
    "bert": "bert",
    "distilbert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "electra": "bert",
    "mpnet": "bert",
    "vit": "vit",
    "deit": "vit",
}
TIMING_ROUNDS = 5  # interleaved rounds per batch size; the medians decide


def fuse(in_path: Path, out_path: Path, model_type: str, heads: int, hidden: int) -> dict[str, int]:
    """Write the fused graph; the operators it gained, by count (the optimizer's own statistics also count
    LayerNormalization nodes the exporter already wrote, which were not fused by it)."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    from deployopt.sources.onnxutil import op_counts

    log = io.StringIO()  # the optimizer prints its shape-inference complaints
    with capture_output(log, verbose=False):
        model = optimize_model(
            str(in_path), model_type=model_type, num_heads=heads, hidden_size=hidden, opt_level=1, use_gpu=False
        )
        model.save_model_to_file(str(out_path))
    before, after = op_counts(onnx.load_model(str(in_path))), op_counts(model.model)
    return {op: count - before.get(op, 0) for op, count in after.items() if count > before.get(op, 0)}


def _timings(ctx: BuildContext, plain: Path, fused: Path) -> dict[int, tuple[float, float]]:
    """Per benchmark batch size: (plain, fused) median ms per call, the two runners called in turn."""
    threads = ctx.config.bench.resolved_threads()
    data = ctx.data.verification
    results = {}
    with (
        create_runner(spec_for_model(str(plain), threads=threads)) as first,
        create_runner(spec_for_model(str(fused), threads=threads)) as second,
    ):
        for batch in ctx.config.bench.batch_sizes:
            feeds = cycled_batch(data, batch)
            samples: tuple[list[float], list[float]] = ([], [])
            for runner in (first, second):  # warm-up
                runner.infer(feeds)
            for _ in range(TIMING_ROUNDS):
                for runner, times in zip((first, second), samples, strict=True):
                    started = time.perf_counter()
                    runner.infer(feeds)
                    times.append((time.perf_counter() - started) * 1000)
            results[batch] = (statistics.median(samples[0]), statistics.median(samples[1]))
    return results


class TransformerFusionStep:
    """``build``'s step after the graph stage: the ``onnx-fp32-fused`` candidate of a Hugging Face transformer."""

    name = "transformer-fusion"

    def run(self, ctx: BuildContext) -> None:
        source = ctx.source.huggingface
        if ctx.config.runtime == "openvino":
            return ctx.skip(self.name, "--runtime openvino (the fused graph runs on ONNX Runtime only)")
        model_type = OPTIMIZER_MODEL_TYPES.get(source.config.get("model_type", ""))
        if model_type is None:
            reason = f"ONNX Runtime's fusions have no pattern for model_type {source.config.get('model_type')!r}"
            return ctx.skip(self.name, reason)
        plain = ctx.artifacts[ONNX_FP32]
        heads = source.config.get("num_attention_heads", source.config.get("n_heads", 0))
        hidden = source.config.get("hidden_size", source.config.get("dim", 0))
        judge = ctx.judge(Precision.FP32)
        ctx.progress(f"{self.name}: ONNX Runtime's {model_type} fusions on {plain.path.name}")

        def work(out: dict[str, Path]) -> dict:
            try:
                fused = fuse(plain.path, out["model"], model_type, heads, hidden)
            except Exception as exc:  # the optimizer's pattern matcher fails in many ways on unusual graphs
                raise StageError(f"ONNX Runtime's transformers optimizer failed ({type(exc).__name__}: {exc})") from exc
            if not fused:
                return {"fused": {}, "passed": False, "failures": [], "timings": {}, "kept": False}
            result = judge(spec_for_model(str(out["model"])))
            timings = _timings(ctx, plain.path, out["model"]) if result.passed else {}
            faster = bool(timings) and all(f < p for p, f in timings.values())
            return {
                "fused": fused,
                "passed": result.passed,
                "failures": result.failures,
                "verify": result.to_json(),
                "timings": {str(b): [round(p, 3), round(f, 3)] for b, (p, f) in timings.items()},
                "kept": result.passed and faster,
            }

        inputs = {"model": plain.sha256, "judge": str(ctx.verification_key(plain.sha256, judge))}
        try:
            outcome = ctx.run.run_stage(self.name, ctx.config.bench, inputs, {"model": f"model-{VARIANT}.onnx"}, work)
        except DeployoptError as exc:  # an optional speed-up: a graph it cannot fuse is a note, not a failed build
            return ctx.skip(self.name, str(exc))
        details = outcome.record["details"]
        summary = _summary(details)
        ctx.record(self.name, outcome, summary)
        if not details["kept"]:
            ctx.notes.append(f"{VARIANT} not kept: {summary}")
            return
        artifact = ctx.add_artifact(VARIANT, outcome)
        verdict = details["verify"] | {"candidate": str(artifact.path)}
        ctx.run.record_result(f"verify:{VARIANT}", ctx.verification_key(artifact.sha256, judge), verdict)


def _summary(details: dict) -> str:
    if not details["fused"]:
        return "ONNX Runtime's optimizer fused nothing in this graph"
    fused = ", ".join(f"{op} ×{n}" for op, n in details["fused"].items())
    if not details["passed"]:
        return f"fused {fused}; misses the fp32 budget ({'; '.join(details['failures'])})"
    timings = ", ".join(f"b{b} {p:.2f} → {f:.2f} ms" for b, (p, f) in details["timings"].items())
    verdict = "kept" if details["kept"] else "not faster at every batch size, not kept"
    return f"fused {fused}; onnx-fp32 → fused p50 {timings}: {verdict}"
