"""Small facts about ONNX graphs that several stages and reports need."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from deployopt.errors import InputFileError, file_error
from deployopt.sources.signature import Signature, TensorSpec
from deployopt.types import Precision

# Op types that show a graph computes in int8 (QDQ format, QOperator format, or integer ops).
INT8_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "QLinearAdd",
        "QLinearMul",
        "QGemm",
        "DynamicQuantizeMatMul",
    }
)
SIGNATURE_METADATA = "deployopt.signature"  # metadata_props key written by the export stage
_ONNX_TO_NUMPY = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}


def numpy_dtype(elem_type: int) -> str:
    try:
        return _ONNX_TO_NUMPY[elem_type]
    except KeyError:
        raise ValueError(f"unsupported ONNX tensor element type {elem_type}") from None


_IDENTIFIER = re.compile(r"\W")
_DIM_NAME = re.compile(r"^[A-Za-z_]\w*$")  # what --input can name (seq=128); "?" or "-1" mean "unknown"


def signature_from_onnx(model: Any) -> Signature:
    """Input signature of an ONNX model: deployopt's saved one when present, else read from the graph inputs
    (unnamed dynamic dims, and those named only "unknown" such as Paddle's '?', become 'batch' on axis 0,
    '<input>_dimN' elsewhere)."""
    saved = next((p.value for p in model.metadata_props if p.key == SIGNATURE_METADATA), None)
    if saved:
        return Signature.from_json(json.loads(saved))
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:  # old exporters list weights as inputs too
            continue
        tensor_type = value.type.tensor_type
        shape: list[int | str] = []
        for axis, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(int(dim.dim_value))
            elif _DIM_NAME.match(dim.dim_param):
                shape.append(dim.dim_param)
            else:
                # unnamed: its own dim (two unnamed dims of different inputs are not known to be one)
                shape.append("batch" if axis == 0 else f"{_IDENTIFIER.sub('_', value.name)}_dim{axis}")
        specs.append(TensorSpec(value.name, tuple(shape), numpy_dtype(tensor_type.elem_type)))
    return Signature(tuple(specs))


def op_counts(model: Any) -> dict[str, int]:
    """Node count per op type, most frequent first (including nodes inside subgraphs is not needed here)."""
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto element types


def already_quantized(model: Any) -> str | None:
    """Why fp16/int8 conversion of this graph makes no sense (it already holds int8 quantization ops), or None."""
    ops = sorted({node.op_type for node in model.graph.node if node.op_type in INT8_OPS})
    if not ops:
        return None
    return f"the model is already int8-quantized ({', '.join(ops)}); converting it again could only lose accuracy"


def graph_precision(model: Any) -> Precision:
    """'int8' when the graph contains quantization ops, 'fp16' when most float weights (by element count: a
    converter leaves many small fp32 tensors, shapes and norms, beside the large fp16 ones) are float16 (or, with
    none, when it casts to float16), else 'fp32'."""
    if any(node.op_type in INT8_OPS for node in model.graph.node):
        return Precision.INT8
    floats: Counter = Counter()
    for initializer in model.graph.initializer:
        if initializer.data_type in (FLOAT, FLOAT16):
            floats[initializer.data_type] += math.prod(initializer.dims)
    if floats:
        return Precision.FP16 if floats.most_common(1)[0][0] == FLOAT16 else Precision.FP32
    # No float weights (a graph of activations only): fp16 when it computes in float16
    casts = (n for n in model.graph.node if n.op_type == "Cast")
    if any(a.name == "to" and a.i == FLOAT16 for n in casts for a in n.attribute):
        return Precision.FP16
    return Precision.FP32


def describe(path: str | Path) -> dict:
    """Node counts, precision, size and opset of an ONNX file, for reports and the manifest."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    return {
        "nodes": len(model.graph.node),
        "op_counts": op_counts(model),
        "initializers": len(model.graph.initializer),
        "precision": graph_precision(model),
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "external_data": sorted(_external_files(model)),
        "size_bytes": Path(path).stat().st_size,
    }


def _external_files(model: Any) -> set[str]:
    """The files an ONNX model keeps its weights in besides itself (external data), by relative location."""
    return {
        entry.value
        for init in model.graph.initializer
        if init.data_location == 1  # TensorProto.EXTERNAL
        for entry in init.external_data
        if entry.key == "location"
    }


def drop_initializer_value_info(model: Any) -> Any:
    """Remove value_info entries that annotate initializers (the torch exporter writes them; the weights
    carry their own shapes). ONNX Runtime 1.30's dynamic quantizer transposes Gemm weights and then fails
    strict shape inference on the stale annotation ("Inferred shape and existing shape differ")."""
    initializers = {init.name for init in model.graph.initializer}
    kept = [vi for vi in model.graph.value_info if vi.name not in initializers]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model


def load_model(path: Path) -> Any:
    import onnx

    try:
        return onnx.load_model(str(path))
    except Exception as exc:
        raise InputFileError(f"{path}: cannot be loaded as ONNX ({exc}); re-export it") from exc


def name_nodes(model: Any) -> Any:
    """Give every node a unique name (exclusion and sensitivity analysis address nodes by name)."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    return model


def check_external_data(model: Any, path: Path) -> None:
    """Every external-data file the graph names must be a file inside the model's folder, large enough for the
    bytes it is said to hold: checked now, before any stage runs, instead of failing half-way through a build."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    def tensors(graph):
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                    yield from tensors(subgraph)

    folder = path.resolve().parent
    for tensor in tensors(model.graph):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        data = (folder / info.location).resolve()
        if not data.is_relative_to(folder):
            raise file_error(
                path,
                f"tensor '{tensor.name}' points to external data outside the model's folder ({info.location})",
                "keep the weight files beside the model (onnx.save_model(..., save_as_external_data=True))",
            )
        if not data.is_file():
            raise file_error(
                path,
                f"tensor '{tensor.name}' needs external data file {info.location}, which is missing",
                "copy the weight file(s) saved with the model next to it",
            )
        if info.length and data.stat().st_size < (info.offset or 0) + info.length:
            raise file_error(
                path,
                f"external data file {info.location} is shorter than tensor '{tensor.name}' needs (truncated)",
                "copy the weight file(s) again",
            )
