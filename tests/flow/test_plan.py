"""build is a loop over a plan of steps: which steps a config asks for, in which order."""

from __future__ import annotations

from deployopt.flow.build import BuildConfig, QuantizedVariants, plan
from deployopt.measure.budgets import BudgetOverrides, resolve_budget
from deployopt.stages.prune.methods import PruneConfig
from deployopt.types import Precision, StepRecord


def _names(config: BuildConfig, huggingface: bool = False) -> list[str]:
    return [step.name for step in plan(config, huggingface)]


def test_default_plan():
    assert _names(BuildConfig()) == ["export", "graph", "fp16", "int8", "bf16", "openvino"]


def test_plan_follows_the_config():
    assert _names(BuildConfig(quantize=QuantizedVariants(make=()))) == ["export", "graph", "openvino"]
    pruned = BuildConfig(prune=PruneConfig(method="2:4"), quantize=QuantizedVariants(make=("int8",)))
    assert _names(pruned) == ["prune", "export", "graph", "2:4 check", "int8", "openvino"]
    tensorrt = _names(BuildConfig(target="tensorrt"))
    assert tensorrt == ["export", "graph", "fp16", "int8", "bf16", "openvino", "int8-tensorrt", "trt-fp16", "trt-int8"]


def test_a_hugging_face_folder_adds_its_files_and_the_fusion_candidate():
    assert _names(BuildConfig(), huggingface=True) == [
        "preprocessing", "export", "graph", "transformer-fusion", "fp16", "int8", "bf16", "openvino"
    ]  # fmt: skip
    assert "transformer-fusion" not in _names(BuildConfig(transformer_fusion=False), huggingface=True)


def test_budgets_resolve_in_one_place():
    assert resolve_budget(Precision.INT8).min_cosine == 0.995 and resolve_budget("int8").max_rel_error is None
    assert resolve_budget("int8", BudgetOverrides(min_cosine=0.9)).min_cosine == 0.9
    pruned = resolve_budget("fp32", BudgetOverrides(min_top1_agreement=0.8), pruned=PruneConfig())
    assert pruned.min_cosine is None and pruned.min_top1_agreement == 0.8 and pruned.max_accuracy_drop == 1.1
    assert resolve_budget("something-else") == resolve_budget(Precision.FP32)


def test_step_record_round_trips_the_report_json_shape():
    record = StepRecord("graph", True, 0.25, "passes kept: onnxslim")
    assert record.to_json() == {"stage": "graph", "cached": True, "seconds": 0.25, "summary": "passes kept: onnxslim"}
    assert StepRecord.from_json(record.to_json()) == record
