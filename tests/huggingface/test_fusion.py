"""ONNX Runtime's transformer fusions as the onnx-fp32-fused candidate: what it fused is recorded, and it becomes a
variant only when it stays within the fp32 budget and measures faster (the timing is replaced here, so the
decision — not the machine's speed — is what is tested)."""

from __future__ import annotations

import pytest

from deployopt.api import BuildConfig, QuantizedVariants, build
from deployopt.stages import transformer_fusion
from tests.hf_models import needs_transformers

pytestmark = needs_transformers
FAST = {"skip_bench": True, "runtime": "onnxruntime", "quantize": QuantizedVariants(make=())}


def _stage(report) -> dict:
    return next(s for s in report.stages if s.stage == "transformer-fusion")


@pytest.mark.parametrize(("fused_ms", "kept"), [(0.5, True), (2.0, False)])
def test_the_fused_graph_is_a_variant_only_when_it_measures_faster(
    tiny_bert_classifier, tmp_path, monkeypatch, fused_ms, kept
):
    timed = []

    def timings(ctx, plain, fused):
        timed.append((plain.name, fused.name))
        return {batch: (1.0, fused_ms) for batch in ctx.config.bench.batch_sizes}

    monkeypatch.setattr(transformer_fusion, "_timings", timings)
    report = build(tiny_bert_classifier, BuildConfig(out=tmp_path / "run", **FAST))
    assert report.passed and len(timed) == 1  # timed once, the fused graph (still being written) against onnx-fp32
    assert timed[0][0] == "model-fp32.onnx" and "model-onnx-fp32-fused.onnx" in timed[0][1]
    summary = _stage(report).summary
    assert "fused SkipLayerNormalization ×4, Gelu ×2;" in summary and "b1 1.00 → " in summary  # 2 layers
    variants = [v.name for v in report.variants]
    if kept:
        assert "onnx-fp32-fused" in variants and summary.endswith("kept")
        fused = report.variant("onnx-fp32-fused")
        assert fused.verify.outputs[0].max_rel_error < 1e-3 and fused.runtime == "onnxruntime"
    else:
        assert "onnx-fp32-fused" not in variants
        assert any(n.startswith("onnx-fp32-fused not kept: fused SkipLayerNormalization ×4") for n in report.notes)


def test_fusion_is_skipped_with_the_reason_when_only_openvino_may_run_it(tiny_vit, tmp_path):
    """(Switched off, the step is not in the plan at all: tests/flow/test_plan.py.)"""
    only_openvino = build(tiny_vit, BuildConfig(out=tmp_path / "ov", **(FAST | {"runtime": "openvino"})))
    assert "ONNX Runtime only" in _stage(only_openvino).summary
