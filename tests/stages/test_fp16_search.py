"""fp16 that keeps accuracy: nodes whose fp16 results miss the budget are found and kept in fp32."""

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deployopt.api import BenchConfig, BuildConfig, Fp16Config, QuantizedVariants, build, quantize
from deployopt.errors import EXIT_BUDGET


def _overflowing_graph(path):
    """A constant beyond fp16's range (the converter clamps weights to ±1e4), multiplied and divided back:
    in fp32 it is a plain relu(x·w)²; in fp16 the scaled branch is 10× off. The MatMul is fine in fp16."""
    scale = numpy_helper.from_array(np.array(1e5, np.float32), "scale")
    inverse = numpy_helper.from_array(np.array(1e-10, np.float32), "inverse")
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "scale"], ["big"], name="scale_up"),
        helper.make_node("Mul", ["big", "big"], ["square"], name="square"),
        helper.make_node("Mul", ["square", "inverse"], ["y"], name="scale_down"),
    ]
    graph = helper.make_graph(
        nodes,
        "overflow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [scale, inverse, weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_fp16_keeps_the_overflowing_nodes_in_fp32_and_passes(tmp_path):
    model = _overflowing_graph(tmp_path / "overflow.onnx")
    outcome = quantize(model, tmp_path / "h.onnx", fp16=Fp16Config())
    assert outcome.passed, outcome.verify.failures
    details = outcome.details
    first, last = details["attempts"][0], details["attempts"][-1]
    assert not first["passed"] and any("max_rel_error" in f for f in first["failures"])
    assert last["passed"] and len(details["attempts"]) >= 2
    kept = set(details["accuracy_nodes"])
    assert kept and kept <= {"scale_up", "square", "scale_down"}, kept  # the culprits, never the matmul
    graph = onnx.load(str(tmp_path / "h.onnx")).graph
    assert any(i.data_type == TensorProto.FLOAT16 for i in graph.initializer)  # still an fp16 model


def test_fp16_that_cannot_meet_its_budget_is_written_marked_failing_and_exits_1(tmp_path, run_cli):
    model = _overflowing_graph(tmp_path / "overflow.onnx")
    code, _, err = run_cli("quantize", model, "--fp16", "--fp16-max-rounds", "0", "-o", tmp_path / "h.onnx")
    assert code == EXIT_BUDGET
    assert "max_rel_error" in err and (tmp_path / "h.onnx").exists()


def test_build_reports_the_fp16_rounds_and_the_nodes_kept(tmp_path):
    model = _overflowing_graph(tmp_path / "overflow.onnx")
    bench = BenchConfig(batch_sizes=(1,), repeats=1, max_repeats=1)
    config = BuildConfig(out=tmp_path / "run", bench=bench, quantize=QuantizedVariants(make=("fp16",)))
    report = build(model, config)
    assert report.passed, report.failures
    step = next(s for s in report.stages if s.stage == "fp16")
    assert "kept in fp32 for accuracy" in step.summary and "round 2" in step.summary
    details = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["fp16"]["details"]
    assert details["passed"] and details["accuracy_nodes"]
    # the rounds as the report's search: one row each, timed beside fp32, the passing round kept and plotted
    search = step.search
    assert [a.number for a in search.attempts] == [a["round"] for a in details["attempts"]]
    kept = search.attempts[search.kept - 1]
    assert kept.passed and list(kept.kept_higher) == details["accuracy_nodes"] and kept.slack >= 0
    assert not search.attempts[0].passed and search.attempts[0].slack < 0
    assert all(set(a.speedup) == {1} and a.p50_ms[1] > 0 for a in search.attempts)
    assert (tmp_path / "run" / "report-search-onnx-fp16.png").stat().st_size > 0
    assert "### fp16 accuracy search (onnx-fp16)" in (tmp_path / "run" / "report.md").read_text()


def test_a_round_that_makes_it_worse_is_undone(tmp_path, monkeypatch):
    """Keeping the MatMul in fp32 cannot help (the damage is the clamped scale): that round is no better,
    so it is undone, the MatMul is set aside, and the next round ranks the rest on the best candidate."""
    import deployopt.stages.fp16 as fp16

    real, calls = fp16.most_sensitive, []

    def matmul_first(model, fp32, candidate, op_block, excluded, data, round_index):
        calls.append(list(excluded))
        if len(calls) == 1:
            return ["matmul"], "most accuracy lost"
        return real(model, fp32, candidate, op_block, excluded, data, round_index)

    monkeypatch.setattr(fp16, "most_sensitive", matmul_first)
    model = _overflowing_graph(tmp_path / "overflow.onnx")
    outcome = quantize(model, tmp_path / "h.onnx", fp16=Fp16Config())
    details = outcome.details
    assert outcome.passed, details["notes"]
    assert any(note.startswith("round 2 undone (worse than round 1)") for note in details["notes"])
    assert "matmul" in calls[1] and "matmul" not in details["accuracy_nodes"]


def test_one_miss_policy_a_default_candidate_is_not_kept_a_named_one_fails(tmp_path, run_cli):
    """fp16 that cannot meet its budget (no rounds allowed): made by default, it is not kept and the build passes
    on its fp32 artifact; asked for by name (``--fp16``) it fails the build, as it does under ``--strict``."""
    model = _overflowing_graph(tmp_path / "overflow.onnx")
    common = ["--no-int8", "--fp16-max-rounds", "0", "--runtime", "onnxruntime", "--no-bench"]
    code, _, err = run_cli("build", model, "-o", tmp_path / "run", *common)
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    fp16 = next(v for v in report["variants"] if v["name"] == "onnx-fp16")
    assert fp16["role"] == "not kept" and report["passed"] and not report["failures"]
    assert any(n.startswith("onnx-fp16 not kept: it misses the fp16 budget (y: max_rel_error") for n in report["notes"])
    assert "miss, not kept" in (tmp_path / "run" / "report.md").read_text()
    for named in (["--fp16"], ["--strict"]):
        code, _, err = run_cli("build", model, "-o", tmp_path / "run", *common, *named)
        assert code == EXIT_BUDGET and "FAIL onnx-fp16: y: max_rel_error" in err, named


def test_a_pipelines_variant_list_names_its_variants():
    assert QuantizedVariants.model_validate({"make": ["fp16"]}).required == ("fp16",)
    assert QuantizedVariants().required == () and QuantizedVariants(make=("int8",), required=()).required == ()
