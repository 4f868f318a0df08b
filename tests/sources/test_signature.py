import re

import pytest

from deployopt.errors import UsageError
from deployopt.sources.signature import DEFAULT_DIM_SIZE, Signature, TensorSpec, parse_tensor_spec


def test_parse_full_spec_with_dynamic_batch():
    spec = parse_tensor_spec("input:batch,3,224,224:float16")
    assert spec == TensorSpec("input", ("batch", 3, 224, 224), "float16")
    assert spec.batch_axis == 0
    assert spec.concrete_shape(8) == (8, 3, 224, 224)


def test_x_separator_default_dtype_and_fixed_shape():
    spec = parse_tensor_spec("image:1x3x32x32")
    assert spec.shape == (1, 3, 32, 32) and spec.dtype == "float32" and spec.batch_axis is None


def test_symbolic_non_batch_dim_takes_its_typical_value_else_the_documented_default():
    spec = parse_tensor_spec("input_ids:B,seq=64:int64")
    assert spec.batch_axis == 0
    assert spec.concrete_shape(4) == (4, 64) and not spec.unsized_dims
    unsized = Signature.parse(["input_ids:B,seq:int64", "mask:B,seq=64:int64"])
    assert unsized["input_ids"].concrete_shape(4) == (4, DEFAULT_DIM_SIZE)
    (note,) = unsized.default_sized()  # one note, for the one input that used the default
    assert note.startswith("input 'input_ids': dynamic dim seq sized 128 (the default)") and "seq=N" in note


def test_batch_axis_found_by_name_not_position():
    assert parse_tensor_spec("x:seq=16,batch,8").batch_axis == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("input", "expected NAME:SHAPE"),
        ("input:1,3:float33", "unknown dtype"),
        ("input:1,,3", "empty dimension"),
        ("input:0,3", "must be positive"),
        ("input:1,3-4", "neither a positive integer nor a name"),
        ("1bad:1,3", "not a valid input name"),
        ("a:b:c:d", "expected NAME:SHAPE"),
    ],
)
def test_malformed_specs_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_tensor_spec(text)


def test_json_round_trip_keeps_typical_values():
    sig = Signature.parse(["ids:batch,seq=64:int64", "mask:batch,seq=64:int64"])
    again = Signature.from_json(sig.to_json())
    assert again == sig
    assert again["ids"].concrete_shape(2) == (2, 64)
    assert sig.to_text() == ["ids:batch,seq=64:int64", "mask:batch,seq=64:int64"]


def test_duplicate_names_rejected():
    with pytest.raises(UsageError, match="unique"):
        Signature.parse(["x:1,2", "x:1,3"])


def test_accepts_checks_rank_and_fixed_dims():
    spec = parse_tensor_spec("x:batch,1,8,8")
    assert spec.accepts((5, 1, 8, 8))
    assert not spec.accepts((5, 8, 8))
    assert not spec.accepts((5, 3, 8, 8))


def test_a_dimension_name_containing_x_is_not_split():
    spec = parse_tensor_spec("ids:batch,max_len=128:int64")
    assert spec.shape == ("batch", "max_len") and spec.dim_values == {"max_len": 128}
    assert parse_tensor_spec("image:1x3x32x32").shape == (1, 3, 32, 32)  # the all-numeric spelling still works


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("x:1,3,64,64", "dimension 2 is fixed at 32 in the model, --input says 64"),
        ("x:1,3,32", "rank 3 vs the model's 4"),
        ("x:1,3,32,32:int64", "dtype int64 vs the model's float32"),
        ("nosuchinput:1,3,32,32", "--input names nosuchinput, which the model does not have; its inputs are x:1,3"),
        ("x:batch,3,32,32", "dimension 0 is fixed at 1 in the model, --input says batch"),
    ],
)
def test_input_cannot_contradict_a_graphs_own_inputs(given, message):
    from deployopt.sources.signature import refine

    graph = Signature.parse(["x:1,3,32,32"])
    with pytest.raises(UsageError, match=re.escape(message)):
        refine(graph, Signature.parse([given]), "m.onnx")


def test_input_may_size_a_graphs_dynamic_dims():
    from deployopt.sources.signature import refine

    graph = Signature.parse(["ids:batch,seq:int64", "mask:batch,seq:int64"])
    refined = refine(graph, Signature.parse(["mask:batch,seq=16:int64", "ids:batch,seq=16:int64"]), "m.onnx")
    assert refined.names == ["ids", "mask"] and refined["ids"].dim_values == {"seq": 16}


def test_graph_dims_named_unknown_are_separate_unnamed_dims():
    """Paddle exports name every dynamic dim '?': batch, height and width are not one dim, and '?=N' cannot be
    typed in --input; they read as unnamed dims (batch on axis 0, '<input>_dimN' elsewhere)."""
    from onnx import TensorProto, helper

    from deployopt.sources.onnxutil import signature_from_onnx

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["t"], ["u"])],
        "paddle-like",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["?", 3, "?", "?"]),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, ["-1", "seq"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("u", TensorProto.FLOAT, None),
        ],
    )
    signature = signature_from_onnx(helper.make_model(graph))
    assert [spec.shape for spec in signature.inputs] == [("batch", 3, "x_dim2", "x_dim3"), ("batch", "seq")]


def test_input_may_name_only_some_inputs_and_sizes_shared_dims_everywhere():
    """silero-vad's fp16 graph: `--input input:batch,sequence=512` alone; `state` keeps its own spec."""
    from deployopt.sources.signature import refine

    graph = Signature.parse(["input:batch,sequence", "state:2,batch,128", "other:batch,sequence"])
    refined = refine(graph, Signature.parse(["input:batch,sequence=512"]), "m.onnx")
    assert refined.names == ["input", "state", "other"]
    assert refined["state"].shape == (2, "batch", 128)
    assert refined["other"].concrete_shape(4) == (4, 512) and refined["input"].concrete_shape(4) == (4, 512)
