"""The graph stage on a generated ONNX graph with every kind of waste the stage promises to remove."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deployopt.errors import InputFileError
from deployopt.stages.graph import GraphConfig, optimize_graph


def _wasteful_graph(path):
    rng = np.random.default_rng(0)
    init = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "shift"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "mean"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "var"),
        numpy_helper.from_array(np.full((1, 4, 1, 1), 2.0, np.float32), "c1"),
        numpy_helper.from_array(np.full((1, 4, 1, 1), 0.5, np.float32), "c2"),
        numpy_helper.from_array(np.zeros(1000, np.float32), "unused_weight"),
    ]
    nodes = [
        helper.make_node("Identity", ["X"], ["x_id"]),
        helper.make_node("Conv", ["x_id", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "scale", "shift", "mean", "var"], ["bn"]),
        helper.make_node("Dropout", ["bn"], ["drop"]),
        helper.make_node("Relu", ["drop"], ["relu"]),
        helper.make_node("Add", ["c1", "c2"], ["const_sum"]),  # foldable: constants only
        helper.make_node("Mul", ["relu", "const_sum"], ["Y"]),
        helper.make_node("Sigmoid", ["X"], ["dead"]),  # feeds nothing
    ]
    graph = helper.make_graph(
        nodes,
        "wasteful",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        init,
    )
    # IR 10, as the torch exporter writes: onnx 1.23 defaults to IR 14, which onnxruntime < 1.31 refuses.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]


def test_graph_stage_removes_waste_and_keeps_outputs(tmp_path):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    _wasteful_graph(src)
    before_bytes = src.read_bytes()
    result = optimize_graph(src, out, GraphConfig())

    ops = result.ops_after
    for gone in ("Identity", "Dropout", "BatchNormalization", "Sigmoid", "Add"):
        assert gone not in ops, (gone, ops)
    assert ops.get("Conv") == 1
    assert result.nodes_before == 8 and result.nodes_after < 4
    optimized = onnx.load(str(out))
    assert "unused_weight" not in {i.name for i in optimized.graph.initializer}
    assert result.size_after < result.size_before
    assert src.read_bytes() == before_bytes  # the input is never modified

    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(src, x), rtol=1e-5, atol=1e-5)


def test_passes_can_be_switched_off(tmp_path):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    _wasteful_graph(src)
    result = optimize_graph(src, out, GraphConfig(onnxslim=False, ort_basic=False))
    assert result.passes == [] and result.nodes_after == result.nodes_before and result.notes == []


def test_ort_basic_is_kept_only_when_it_removes_nodes(tmp_path):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    _wasteful_graph(src)
    result = optimize_graph(src, out, GraphConfig(onnxslim=False, ort_basic=True))
    assert result.passes == ["onnxruntime-basic"] and result.nodes_after < result.nodes_before
    assert all(node.domain in ("", "ai.onnx") for node in onnx.load(str(out)).graph.node)


def test_digits_export_stays_equivalent(digits_onnx, tmp_path):
    out = tmp_path / "digits-opt.onnx"
    result = optimize_graph(digits_onnx, out, GraphConfig())
    assert result.ops_after.get("BatchNormalization", 0) == 0
    if "onnxruntime-basic" not in result.passes:  # a requested pass that was not kept says why
        assert result.notes and result.notes[0].startswith("onnxruntime-basic not kept: ")
    x = np.random.default_rng(2).standard_normal((4, 1, 8, 8)).astype(np.float32)
    a = ort.InferenceSession(str(digits_onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_unreadable_input_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputFileError, match="cannot be loaded as ONNX"):
        optimize_graph(bad, tmp_path / "out.onnx", GraphConfig())


def test_graph_onnxslim_cannot_handle_is_kept_as_is_and_said(tmp_path):
    """onnxslim fails on a graph importing only ai.onnx.ml (ONNX's Binarizer node test); ORT runs it."""
    node = helper.make_node("Binarizer", ["X"], ["Y"], domain="ai.onnx.ml", threshold=1.0)
    graph = helper.make_graph(
        [node],
        "binarizer",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 4, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [3, 4, 5])],
    )
    opsets = [helper.make_opsetid("ai.onnx.ml", 1)]
    path = tmp_path / "binarizer.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    result = optimize_graph(path, tmp_path / "out.onnx", GraphConfig())
    assert "onnxslim" not in result.passes
    assert any(note.startswith("onnxslim not kept: it failed on this graph") for note in result.notes)
    assert onnx.load(str(tmp_path / "out.onnx")).graph.node[0].op_type == "Binarizer"


def _wrong_declared_output(path):
    """y = Reshape(x[1, w, 2], [w, 1, 2]), but the graph declares y as [1, seqlen] (ddddocr's OCR model, as
    shipped, declares its [T, 1, classes] output so): onnxslim folds the reshape target from that declaration."""
    constants = [
        numpy_helper.from_array(np.array(v, np.int64), name)
        for name, v in (("one", [1]), ("two", [2]), ("zero", [0]), ("idx", 1))
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "idx"], ["w"]),
        helper.make_node("Unsqueeze", ["w", "zero"], ["w1"]),
        helper.make_node("Concat", ["w1", "one", "two"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "declared-wrong",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "w", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seqlen"])],
        constants,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def test_a_pass_that_changes_the_outputs_is_not_kept(tmp_path):
    src = _wrong_declared_output(tmp_path / "in.onnx")
    x = np.random.default_rng(0).random((1, 5, 2), dtype=np.float32)
    unchecked = optimize_graph(src, tmp_path / "unchecked.onnx", GraphConfig(ort_basic=False))
    assert unchecked.passes == ["onnxslim"]  # without the probe, the broken rewrite was kept
    result = optimize_graph(src, tmp_path / "out.onnx", GraphConfig(ort_basic=False), probe={"x": x})
    assert result.passes == []
    assert "onnxslim not kept: it changed output 'y' ([5, 1, 2] → shape [1, 10])" in result.notes[0]
    session = ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": x})[0].shape == (5, 1, 2)
