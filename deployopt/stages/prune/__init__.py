"""Pruning: ``methods`` prunes a module (channels, 2:4, magnitude), ``command`` is ``deployopt prune``
(fine-tune, measure, save), and the two steps below are its part in ``build``."""

from __future__ import annotations

from deployopt.fsutil import sha256_json
from deployopt.sources.detect import inspect_source
from deployopt.stages.base import BuildContext
from deployopt.stages.prune.command import prune
from deployopt.stages.prune.methods import check_2to4
from deployopt.types import ONNX_FP32, StepRecord

PRUNED = "pytorch-pruned"


class PruneStep:
    """Prune the PyTorch model before export; the pruned model is what the export step exports, and an
    artifact of its own (verified against the unpruned original like every other)."""

    name = "prune"

    def run(self, ctx: BuildContext) -> None:
        config, source = ctx.config.prune, ctx.source
        ctx.progress(f"prune: {config.method}")
        outcome = ctx.run.run_stage(
            self.name,
            config,
            {"source": source.sha256, "source_options": sha256_json(source.options.to_json())},
            {"model": "model-pruned.pt"},
            lambda out: prune(source, out["model"], config, bench_config=None).to_json(),
        )
        ctx.export_source = inspect_source(outcome.output("model"))
        ctx.add_artifact(PRUNED, outcome)
        ctx.record(self.name, outcome, prune_summary(outcome.record["details"], config.distill))


def prune_summary(d: dict, distilled: bool) -> str:
    r = d["result"]
    changed = [f"{x['name']} {x['before']}→{x['after']}" for x in r["layers"] if x["before"] != x["after"]]
    summary = (
        f"{r['method']} {r['amount']:g}: parameters {r['params_before']:,} → {r['params_after']:,}, "
        f"MACs {r['macs_before']:,} → {r['macs_after']:,}, {r['sparsity'] * 100:.1f} % zeros; "
        f"layers {', '.join(changed) or 'unchanged'}"
    )
    if d["accuracy_before"] is not None:
        summary += f"; test accuracy {d['accuracy_before']:.2f}% → {d['accuracy_after']:.2f}%"
    if d["finetune"]:
        summary += f" after {d['finetune']['epochs']} fine-tune epochs" + (" (distilled)" if distilled else "")
    return summary


class SparsityCheckStep:
    """After 2:4 pruning: confirm the pattern survived export, record it in the manifest, and switch on the
    engines' sparse kernels when it did."""

    name = "2:4 check"

    def run(self, ctx: BuildContext) -> None:
        fp32 = ctx.artifacts[ONNX_FP32].path
        check = check_2to4(fp32)
        ctx.run.manifest["metrics"]["sparsity_2to4"] = check.to_json()
        ctx.run.save()
        verdict = "all follow 2:4" if check.passed else f"NOT 2:4: {', '.join(check.offending)}"
        summary = f"{len(check.tensors)} eligible weight tensors in {fp32.name}: {verdict}"
        ctx.steps.append(StepRecord(self.name, False, 0.0, summary))
        ctx.engine = ctx.engine.model_copy(update={"sparse_weights": check.passed})
