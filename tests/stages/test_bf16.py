"""bf16 on OpenVINO, on both sides of the CPU feature (through the build's own capability function): made and
judged where the CPU computes in bf16, a note naming the flags elsewhere, and — asked for by name on a CPU
without it — one line and exit 5 before anything is written. The per-layer search keeps the few damaging layers
in f32 (marked in the IR, honoured by the compiled model) and names the best trade-off when it cannot."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'deployopt[openvino]')")

QUICK = ("--no-fp16", "--no-bench")


def _bf16_problem() -> str | None:
    from deployopt.runners.openvino_runner import native_precision_problem

    return native_precision_problem("bf16")


def _cancellation_graph(folder: Path) -> Path:
    """x → ``wide`` (weights ≈ 100 ± 1) → ``difference`` (differences of column pairs of ~400-sized values) →
    ``mix`` → Relu → ``head``: rounding ``wide``'s weights or outputs to bf16's 8 mantissa bits destroys the
    differences, the two later layers are harmless in bf16. The two sensitive layers must both stay in f32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    pairs = np.zeros((16, 8), np.float32)
    for j in range(8):
        pairs[2 * j, j], pairs[2 * j + 1, j] = 1.0, -1.0
    weights = {
        "A": (100 + rng.standard_normal((16, 16))).astype(np.float32),
        "B": pairs,
        "C": (rng.standard_normal((8, 8)) / 3).astype(np.float32),
        "D": (rng.standard_normal((8, 4)) / 3).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["h"], name="wide"),
        helper.make_node("MatMul", ["h", "B"], ["d"], name="difference"),
        helper.make_node("MatMul", ["d", "C"], ["c"], name="mix"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "D"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "cancellation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, name) for name, w in weights.items()],
    )
    path = folder / "cancellation.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def _run(run_dir: Path) -> tuple[dict, dict]:
    report = json.loads((run_dir / "report.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return report, manifest


def _compiled_precisions(xml: Path, precision: str) -> dict[str, str]:
    """Each layer of the compiled model → the precision OpenVINO's CPU plugin runs it in."""
    import openvino as ov

    from deployopt.runners.openvino_runner import compile_config

    compiled = ov.Core().compile_model(str(xml), "CPU", compile_config(1, precision))
    return {
        op.get_friendly_name(): op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
    }


def _marked(xml: Path) -> set[str]:
    """The layers the IR marks to stay in f32."""
    return {
        layer.get("name")
        for layer in ElementTree.parse(xml).getroot().iter("layer")
        if layer.find("rt_info/attribute[@name='DisablePrecisionConversion']") is not None
    }


def test_bf16_is_made_and_judged_where_the_cpu_computes_in_it_and_a_note_elsewhere(
    digits_checkpoint, tmp_path, run_cli
):
    from deployopt.measure.budgets import resolve_budget
    from deployopt.sources.openvino_ir import ir_facts

    run = tmp_path / "run"
    code, _, err = run_cli("build", digits_checkpoint, "-o", run, "--no-int8", *QUICK)
    assert code == 0, err
    report, _ = _run(run)
    variants = {v["name"]: v for v in report["variants"]}
    problem = _bf16_problem()
    if problem is None:
        bf16 = variants["openvino-bf16"]
        assert bf16["precision"] == "bf16" and bf16["inference_precision"] == "bf16" and bf16["passed"]
        judged_as = {"output_kinds": {"output": "logits"}}  # the build resolves every output's kind once
        assert bf16["verify"]["budget"] == resolve_budget("bf16").model_dump() | judged_as
        assert bf16["verify"]["outputs"][0]["decisive_agreement"] >= 0.98
        xml = Path(bf16["path"])
        assert ir_facts(xml)["inference_precision"] == "bf16" and not _marked(xml)
        ran = _compiled_precisions(xml, "bf16")
        assert "bf16" in ran.values()  # the plugin computes its layers in bf16, as judged
    else:
        assert "openvino-bf16" not in variants
        assert f"openvino-bf16 not made: {problem}" in report["notes"] and "flags:" in problem
        assert any(s["stage"] == "bf16" and s["summary"].startswith("skipped") for s in report["stages"])


def test_bf16_asked_for_by_name_is_made_here_or_refused_before_anything_is_written(
    digits_checkpoint, tmp_path, run_cli
):
    run = tmp_path / "run"
    code, _, err = run_cli("build", digits_checkpoint, "-o", run, "--bf16", "--no-int8", *QUICK)
    problem = _bf16_problem()
    if problem is None:
        assert code == 0, err
        assert "openvino-bf16" in {v["name"] for v in _run(run)[0]["variants"]}
    else:
        assert code == 5 and err.count("\n") == 1 and problem in err and "flags:" in err
        assert not run.exists()
    elsewhere = tmp_path / "onnxruntime-only"
    code, _, err = run_cli("build", digits_checkpoint, "-o", elsewhere, "--bf16", "--runtime", "onnxruntime", *QUICK)
    assert code == 2 and "--runtime onnxruntime" in err and err.count("\n") == 1 and not elsewhere.exists()


def test_the_per_layer_search_keeps_the_damaging_layers_in_f32(tmp_path, run_cli):
    model = _cancellation_graph(tmp_path)
    run = tmp_path / "run"
    timed = ("--no-fp16", "--batch-sizes", "1", "--repeats", "1", "--max-repeats", "1")
    code, _, err = run_cli("build", model, "-o", run, "--no-int8", *timed)
    assert code == 0, err
    report, manifest = _run(run)
    if (problem := _bf16_problem()) is not None:
        assert f"openvino-bf16 not made: {problem}" in report["notes"]
        return
    bf16 = next(v for v in report["variants"] if v["name"] == "openvino-bf16")
    assert bf16["passed"]
    details = manifest["stages"]["openvino-bf16"]["details"]
    assert sorted(details["kept_f32"]) == ["difference", "wide"] and details["inference"] == "bf16"
    first, last = details["attempts"][0], details["attempts"][-1]
    assert (first["phase"], first["passed"]) == ("as is", False) and last["passed"] and len(last["kept_f32"]) == 2
    assert [r["node"] for r in details["ranking"][:2]] in (["wide", "difference"], ["difference", "wide"])
    xml = Path(bf16["path"])
    marked = _marked(xml)
    assert {"wide", "difference"} <= marked and "mix" not in marked
    ran = _compiled_precisions(xml, "bf16")
    assert ran["wide"] == ran["difference"] == "f32"  # the marking holds in the compiled model
    assert "bf16" in ran.values()  # and the rest computes in bf16
    step = next(s for s in report["stages"] if s["stage"] == "openvino-bf16")
    assert "2 layer block(s) kept in f32: " in step["summary"] and "blocks costing the most accuracy" in step["summary"]
    search = step["search"]  # the attempts as the report's search table: one row each, the kept one named
    assert [a["number"] for a in search["attempts"]] == [a["round"] for a in details["attempts"]]
    kept = search["attempts"][search["kept"] - 1]
    assert sorted(kept["kept_higher"]) == ["difference", "wide"] and not kept["failures"] and kept["slack"] >= 0
    assert search["attempts"][0]["slack"] < 0 and all(set(a["speedup"]) == {"1"} for a in search["attempts"])
    assert "### openvino-bf16: precision search (openvino-bf16)" in (run / "report.md").read_text()
    assert (run / "report-search-openvino-bf16.png").stat().st_size > 0


def test_a_per_layer_search_that_cannot_meet_the_budget_names_the_best_trade_off(tmp_path, run_cli):
    if _bf16_problem() is not None:
        pytest.skip("the CPU has no bf16: the note is test_bf16_is_made_…'s other side")
    model = _cancellation_graph(tmp_path)
    run = tmp_path / "run"
    code, _, err = run_cli("build", model, "-o", run, "--no-int8", "--bf16-max-rounds", "1", *QUICK)
    assert code == 0, err  # a candidate deployopt tried on its own and that misses is not kept
    report, _ = _run(run)
    bf16 = next(v for v in report["variants"] if v["name"] == "openvino-bf16")
    assert bf16["role"] == "not kept" and not bf16["passed"] and not bf16["latency"]
    summary = next(s["summary"] for s in report["stages"] if s["stage"] == "openvino-bf16")
    assert "no attempt meets the budget; best trade-off found: bf16 with 1 block(s) in f32" in summary
    assert "(--bf16-max-rounds reached)" in summary and "misses its budget" in summary
    assert any(n.startswith("openvino-bf16 not kept: it misses the bf16 budget") for n in report["notes"])


def test_an_int8_model_runs_its_float_layers_in_bf16_with_the_damaging_ones_in_f32(tmp_path, run_cli):
    """The two sensitive layers are kept out of int8; on a CPU with bf16 their float islands first run in bf16
    (a miss), then in f32 (a pass), and the per-layer search keeps just those two in f32 while the rest of the
    float layers stay bf16. Without bf16 the int8 IR is compiled in f32, judged once."""
    model = _cancellation_graph(tmp_path)
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, x=np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32))
    run = tmp_path / "run"
    excluded = ("--int8-exclude", "wide", "--int8-exclude", "difference")
    code, _, err = run_cli("build", model, "-o", run, "--calibration", calibration, *excluded, *QUICK)
    assert code == 0, err
    report, manifest = _run(run)
    int8 = next(v for v in report["variants"] if v["name"] == "openvino-int8")
    details = manifest["stages"]["openvino-int8"]["details"]
    assert int8["passed"] and int8["precision"] == "int8" and details["fake_quantize"] > 0
    if _bf16_problem() is not None:
        assert int8["inference_precision"] == "fp32" and [a["phase"] for a in details["attempts"]] == ["as is"]
        return
    assert [a["phase"] for a in details["attempts"][:2]] == ["as is", "f32 fallback"]
    assert [a["passed"] for a in details["attempts"][:2]] == [False, True]
    assert int8["inference_precision"] == "bf16" and sorted(details["kept_f32"]) == ["difference", "wide"]
    # only the float layers are offered to the search: the int8 ones (behind a FakeQuantize) are not bf16's to keep
    assert sorted(r["node"] for r in details["ranking"]) == ["difference", "wide"]
