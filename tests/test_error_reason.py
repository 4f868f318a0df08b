"""Runtime errors condensed to the line that says what went wrong and at which node — not their first line,
which for OpenVINO is a source location."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deployopt.errors import error_reason


def _squeeze_of_a_missing_axis(path):
    graph = helper.make_graph(
        [helper.make_node("Squeeze", ["x", "axes"], ["y"], name="squeeze_it")],
        "squeeze",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [5])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def test_openvinos_conversion_failure_is_condensed_to_the_cause_and_the_node(tmp_path):
    pytest.importorskip("openvino")
    from deployopt.errors import StageError
    from deployopt.stages.openvino.ir import convert_onnx

    with pytest.raises(StageError) as caught:
        convert_onnx(_squeeze_of_a_missing_axis(tmp_path / "squeeze.onnx"))
    raw = str(caught.value.__cause__)
    assert raw.splitlines()[0].startswith("Check 'false' failed at src/")  # what a first-line message showed
    assert "(Axis 5 out of the tensor rank range [-2, 1]. (Squeeze node 'y'))" in str(caught.value)
    assert ".cpp" not in str(caught.value)


def test_onnx_runtimes_run_failure_names_the_node_and_drops_the_preamble(tmp_path):
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="flatten_to_7")],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("shape", TensorProto.INT64, [1], [7])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), tmp_path / "r.onnx")
    session = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception) as caught:
        session.run(None, {"x": np.zeros((2, 3), np.float32)})
    why = error_reason(caught.value)
    assert why.endswith("(Reshape node 'flatten_to_7')") and "ONNXRuntimeError" not in why
    assert "requested shape" in why or "reshape" in why.lower()


def test_the_cpu_plugins_refusal_wins_over_the_source_locations_before_it():
    """The message of the issue's model (OpenVINO 2026.4 compiling a Squeeze of dynamic rank), as the plugin
    raised it."""
    raised = (
        "Exception from src/inference/src/cpp/core.cpp:117:\nException from src/inference/src/dev/plugin.cpp:53:\n"
        "Exception from src/plugins/intel_cpu/src/node.cpp:1523:\n"
        "CPU plug-in doesn't support Squeeze operation with dynamic rank. Operation name: /Squeeze\n"
    )
    assert error_reason(raised) == (
        "CPU plug-in doesn't support Squeeze operation with dynamic rank. Operation name: /Squeeze"
    )
    assert error_reason(RuntimeError()) == "RuntimeError" and error_reason("one line") == "one line"
