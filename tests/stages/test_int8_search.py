"""The int8 search's parts: the switchable Q/DQ simulation, opset conversion, and the calibration notes."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deployopt.api import BuildConfig, Int8Config, QuantizeData, build, quantize
from deployopt.data.plan import DataPlan, DataSources
from deployopt.flow.build import QuantizedVariants
from deployopt.measure.verify import VerifyConfig
from deployopt.sources.detect import inspect_source
from deployopt.sources.onnxutil import load_model, name_nodes
from deployopt.stages.int8.quantize import candidates_for, quantize_candidate
from deployopt.stages.int8.switchboard import build_switchboard


def _outputs(path_or_model, feeds):
    model = path_or_model.SerializeToString() if hasattr(path_or_model, "SerializeToString") else str(path_or_model)
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_switchboard_is_fp32_when_off_and_the_qdq_candidate_when_on(digits_fp32, tmp_path):
    """Every switch off computes the fp32 graph; every switch on computes what the Q/DQ candidate computes;
    one node on changes the output less than all of them."""
    model = name_nodes(load_model(digits_fp32))
    named = tmp_path / "named.onnx"
    onnx.save(model, named)
    plan = DataPlan(inspect_source(digits_fp32).signature, DataSources(dataset="digits"))
    config = Int8Config(format="qdq", method="minmax")
    qdq = tmp_path / "qdq.onnx"
    quantize_candidate(named, qdq, candidates_for(model, config, "static")[0], config, [], plan.calibration)
    board = build_switchboard(model, qdq)
    assert board is not None and {n.name for n in model.graph.node if n.op_type == "Conv"} <= set(board.nodes)
    feeds = plan.verification.take(range(64))
    outputs = [o.name for o in model.graph.output]
    fp32, int8 = _outputs(named, feeds), _outputs(qdq, feeds)
    off = board.run(feeds, set(), outputs)[0]
    on = board.run(feeds, set(board.nodes), outputs)[0]
    one = board.run(feeds, {board.nodes[0]}, outputs)[0]
    np.testing.assert_allclose(off, fp32, rtol=1e-5, atol=1e-5)
    # the int8 kernels and the float simulation differ by a rounding step at a few outputs, far less than int8 does
    assert np.abs(on - int8).mean() < 0.25 * np.abs(int8 - fp32).mean()
    assert 0 < np.abs(one - fp32).max() < np.abs(on - fp32).max()


def _opset11_conv(path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    dense = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "d")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("MatMul", ["f", "d"], ["y"]),
        ],
        "opset11",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [weight, dense],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7), path)


def test_graphs_older_than_opset_13_are_converted_for_per_channel_int8(tmp_path):
    """Per-channel DequantizeLinear needs opset 13: an opset-11 graph (as PaddlePaddle exports) used to fail
    inside ONNX Runtime with 'Unrecognized attribute: axis'."""
    model = tmp_path / "conv11.onnx"
    _opset11_conv(model)
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((32, 3, 16, 16)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=rng.standard_normal((32, 3, 16, 16)).astype(np.float32))
    outcome = quantize(
        model,
        tmp_path / "q.onnx",
        int8=Int8Config(method="minmax"),
        data=QuantizeData(calibration=tmp_path / "calib.npz"),
        verify=VerifyConfig(data=tmp_path / "eval.npz"),
    )
    assert "graph converted from opset 11 to 13 for per-channel Q/DQ" in outcome.details["notes"]
    assert outcome.details["op_counts"]["Conv"] == {"int8": 1, "float": 0}
    assert _outputs(tmp_path / "q.onnx", {"x": np.load(tmp_path / "eval.npz")["x"]}).shape == (32, 4)


@pytest.mark.parametrize("held_apart", [False, True])
def test_judging_int8_on_its_own_calibration_samples_is_flagged(digits_fp32, tmp_path, held_apart):
    from deployopt.models.digits import load_digits_split

    inputs, _ = load_digits_split("val")
    np.savez(tmp_path / "calib.npz", input=inputs["input"][:64])
    test_inputs, test_labels = load_digits_split("test")
    np.savez(tmp_path / "eval.npz", input=test_inputs["input"][:64], labels=test_labels[:64])
    config = BuildConfig(
        out=tmp_path / "run",
        skip_bench=True,
        verify=VerifyConfig(data=tmp_path / "eval.npz" if held_apart else None),
        quantize=QuantizedVariants(make=("int8",), calibration=tmp_path / "calib.npz"),
    )
    report = build(digits_fp32, config)
    flagged = any("calibration and verification use the same samples" in note for note in report.notes)
    assert flagged != held_apart
    outcome = quantize(
        digits_fp32,
        tmp_path / "q.onnx",
        int8=Int8Config(method="minmax"),
        data=QuantizeData(calibration=tmp_path / "calib.npz"),
        verify=config.verify,
    )
    assert any("use the same samples" in note for note in outcome.details["notes"]) != held_apart
    details = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["int8"]["details"]
    assert details["calibration"]["samples"] == 64 and details["calibration"]["selection"].startswith("the first 64")


def test_a_histogram_method_on_a_handful_of_samples_gets_a_note(digits_fp32, tmp_path):
    outcome = quantize(
        digits_fp32,
        tmp_path / "q.onnx",
        int8=Int8Config(method="percentile", samples=16, calibration_batch=8),
        data=QuantizeData(dataset="digits"),
    )
    assert any("calibration has 16 samples: percentile" in note for note in outcome.details["notes"])


def test_a_graph_the_simulation_cannot_run_is_ranked_by_local_error_and_says_so(digits_fp32, tmp_path, monkeypatch):
    from deployopt.measure.budgets import BudgetOverrides
    from deployopt.stages.int8 import switchboard

    def refuse(*args):
        raise switchboard.SimulationError("Fail: a graph shape the rewrite does not cover")

    monkeypatch.setattr(switchboard, "build_switchboard", refuse)
    outcome = quantize(
        digits_fp32,
        tmp_path / "q.onnx",
        int8=Int8Config(format="qdq", method="minmax", max_rounds=1),
        data=QuantizeData(dataset="digits"),
        verify=VerifyConfig(budget=BudgetOverrides(min_cosine=1.0, max_abs_error=0.0)),
    )
    notes = " ".join(outcome.details["notes"])
    assert "could not run (Fail: a graph shape" in notes and "ranked by local error instead" in notes
    assert [a["phase"] for a in outcome.details["attempts"]].count("mixed precision") == 1
