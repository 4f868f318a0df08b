"""int8: ``quantize`` makes one candidate with onnxruntime.quantization, ``search`` runs the accuracy-aware
loop around it, and :class:`Int8Step` is the int8 variant of ``build``."""

from __future__ import annotations

from pathlib import Path

from deployopt.data.eval_data import data_fingerprint
from deployopt.data.memory import ALL_TENSORS, TWO_GRAPHS_ALL_TENSORS
from deployopt.errors import RuntimeCrashError
from deployopt.isolation import child_progress, run_isolated
from deployopt.sources.onnxutil import already_quantized, load_model
from deployopt.stages.base import Artifact, BuildContext
from deployopt.stages.int8.quantize import Int8Config, quantizable_nodes, resolve_mode, seven_bit_weights
from deployopt.stages.int8.search import quantize_int8
from deployopt.stages.int8.sensitivity import ANALYSIS_BATCH
from deployopt.types import ONNX_FP32, Precision, PrecisionSearch, SearchAttempt


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
        bench = ctx.config.bench
        judge = ctx.judge(Precision.INT8)
        config, chunk = _within_memory(ctx, config)
        inputs = {
            "model": fp32.sha256,
            "calibration": data_fingerprint(calibration) if calibration else None,
            "judged_on": data_fingerprint(judge.data),
            "budget": judge.budget.model_dump(),
            "batch": judge.batch_size,
            "batches": list(bench.batch_sizes),
            "calibration_chunk": chunk,
            "seven_bit_weights": seven_bit_weights(config),  # decided by this CPU: another one makes its own
        }

        def work(out: dict[str, Path]) -> dict:
            job = dict(
                fp32_path=fp32.path,
                out_path=out["model"],
                config=config,
                calibration=calibration,
                judge=judge.detached(),
                decision_batches=bench.batch_sizes,
                threads=bench.threads,
                progress=child_progress,
                calibration_samples=calibration.num_samples if calibration is not None else None,
                qdq_out=out["qdq"],
                calibration_chunk=chunk,
                analysis_batch=ctx.batch_within_memory(ANALYSIS_BATCH, None, TWO_GRAPHS_ALL_TENSORS),
            )
            return run_isolated(self.variant, _quantize, job, ctx.progress, scratch=ctx.run.root)

        outputs = {"model": f"model-{self.name}.onnx", "qdq": f"model-{self.name}-qdq.onnx"}
        try:
            outcome = ctx.run.run_stage(self.name, config, inputs, outputs, work)
        except RuntimeCrashError as exc:  # that candidate's failure; the others are still made and judged
            if Precision.INT8 in ctx.config.quantize.required:
                raise
            return ctx.skip(self.name, str(exc))
        ctx.add_artifact(self.variant, outcome)
        ctx.qdq_graphs[self.variant] = Artifact(outcome.output("qdq"), outcome.record["outputs"]["qdq"]["sha256"])
        details = outcome.record["details"]
        ctx.record(self.name, outcome, int8_summary(details), int8_search(details, self.variant))
        if note := ctx.data.calibration_overlap_note():
            ctx.notes.append(note)


def _within_memory(ctx: BuildContext, config: Int8Config) -> tuple[Int8Config, int | None]:
    """The histogram calibrators fetch every intermediate tensor of each batch and hold them until they are
    binned: the calibration batch, and how many batches ONNX Runtime collects before binning, sized to the build's
    memory budget (min/max reduces each tensor inside the graph and needs neither)."""
    batch = ctx.batch_within_memory(config.calibration_batch, "int8 calibration", ALL_TENSORS)
    plan = ctx.memory()
    if plan is None or not plan.per_sample or ctx.data.calibration is None:
        return config, None
    chunk = plan.batches_at_once(batch, ALL_TENSORS)
    batches = -(-min(config.samples, ctx.data.calibration.num_samples) // batch)
    # None when every batch fits at once: the stage's key (and its bytes) then do not depend on the free memory
    return config.model_copy(update={"calibration_batch": batch}), chunk if chunk < batches else None


def _quantize(**job) -> dict:
    """The int8 search in the candidate's own process; its result as the stage's details."""
    return quantize_int8(**job).to_json()


def int8_summary(d: dict) -> str:
    """The int8 step in brief: what was kept and why, the int8 op counts and the search's time; its attempts are
    the search table of report.md/.html (:func:`int8_search`)."""
    ops = ", ".join(f"{op} {c['int8']}/{c['int8'] + c['float']}" for op, c in d["op_counts"].items())
    calibration = d.get("calibration")
    calibrated = (
        f"calibrated on {calibration['samples']} samples of {calibration['origin']} "
        f"({'/'.join(calibration['methods'])}); "
        if calibration
        else ""
    )
    excluded = f"; {len(d['excluded'])} node(s) kept in float" if d["excluded"] else ""
    verdict = "within budget" if d["passed"] else "MISSES the budget"
    text = (
        f"{d['mode']} quantization, kept {d['chosen']} ({verdict}); {calibrated}int8 ops {ops}{excluded}. "
        f"{len(d['attempts'])} attempt(s), each judged like the final check, on {d['judged_on']}; "
        f"search took {d['search_seconds']:.0f} s"
    )
    return text + "".join(f"; {note}" for note in [d["why_kept"], *d["notes"]])


def int8_search(d: dict, variant: str) -> PrecisionSearch:
    """The int8 search's attempts as the report's table and plot show every precision search."""
    attempts = tuple(
        SearchAttempt.recorded(a, f"{a['phase']}: {a['candidate']}", a["excluded"], a["metrics"]) for a in d["attempts"]
    )
    why = d["why_kept"].removeprefix("kept: ")
    return PrecisionSearch("int8 accuracy search", variant, "float", d["kept_round"], why, attempts)
