"""int8 quantization stage: an fp32 ONNX model → an int8 model that is fast on its target.

Built on onnxruntime.quantization; what deployopt adds is the choice of settings:

* ``mode auto`` reads the graph: convolutional models get static (calibrated) quantization,
  transformer-style graphs (MatMul with Softmax / LayerNormalization, no Conv) get dynamic quantization,
  which keeps accuracy where static activations ranges do not.
* On x86 CPUs activations are unsigned (U8S8): with ONNX Runtime's default signed activations only some
  convolutions become integer kernels and the model is no faster than fp32. Both QDQ and QOperator
  encodings are candidates; the accuracy-aware driver measures both and keeps the faster one in budget.
* ``target tensorrt`` produces symmetric signed int8 Q/DQ with per-channel weights: TensorRT's explicit
  quantization format, consumed as-is by TensorRT 10 and 11.

This module quantizes one candidate and describes the result; :mod:`deployopt.stages.int8.search` runs the
verify → sensitivity → exclude loop around it.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deployopt.data.calibration import BatchSource, ort_reader
from deployopt.errors import InputFileError, StageError, UsageError, error_reason
from deployopt.platform.cpu import x86_without_vnni
from deployopt.quiet import capture_output

# Ops worth quantizing; a graph with none of these has nothing int8 can speed up.
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Attention")


class Int8Config(BaseModel):
    """Options of ``deployopt quantize --int8`` (and the int8 variant of ``build``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["auto", "static", "dynamic"] = Field(
        "auto", description="auto: static for convolutional graphs, dynamic for transformer-style ones"
    )
    format: Literal["auto", "qdq", "qoperator"] = Field(
        "auto",
        description="auto tries both and keeps QDQ unless QOperator is clearly faster here; fix it for identical "
        "artifacts across machines",
    )
    method: Literal["auto", "minmax", "entropy", "percentile"] = Field(
        "auto",
        description="calibration method; auto tries minmax and percentile (static int8) and keeps the more accurate",
    )
    per_channel: bool = Field(True, description="per-channel weight scales (per-tensor when off)")
    samples: int = Field(128, ge=1, description="calibration samples")
    calibration_batch: int = Field(16, ge=1, description="batch size calibration runs at")
    exclude: tuple[str, ...] = Field((), description="node names or op types kept in float (repeatable)")
    target: Literal["cpu", "tensorrt"] = Field(
        "cpu", description="tensorrt: symmetric S8S8 Q/DQ with float biases, TensorRT's explicit quantization"
    )
    max_rounds: int = Field(
        10,
        ge=0,
        description="mixed-precision rounds (each keeps the most damaging nodes in float) when the budget is missed",
    )
    weight_bits: Literal["auto", "7", "8"] = Field(
        "auto", description="U8S8 weight range; auto: 7 on x86 without VNNI (int16 saturation), else 8"
    )


@dataclass(frozen=True)
class Candidate:
    """One concrete way to quantize: what the auto choices resolve to."""

    mode: str  # static | dynamic
    format: str  # qdq | qoperator
    activation: str  # uint8 | int8
    weight: str = "int8"
    symmetric_activations: bool = False
    reduce_range: bool = False  # 7-bit weights: avoids int16 saturation of U8S8 kernels on x86 without VNNI
    method: str = "minmax"  # calibration method (static only)

    @property
    def label(self) -> str:
        suffix = "-7bit" if self.reduce_range else ""
        if self.mode == "dynamic":
            return f"dynamic{suffix}"
        sign = {"uint8": "U8", "int8": "S8"}
        return f"static-{self.format}-{sign[self.activation]}{sign[self.weight]}{suffix}-{self.method}"

    def encoded_as(self, fmt: str) -> Candidate:
        return replace(self, format=fmt)


def is_transformer_like(model: Any) -> bool:
    ops = {node.op_type for node in model.graph.node}
    return "Conv" not in ops and "MatMul" in ops and bool(ops & {"Softmax", "LayerNormalization", "Attention"})


def resolve_mode(model: Any, config: Int8Config) -> str:
    if config.mode != "auto":
        return config.mode
    return "dynamic" if is_transformer_like(model) and config.target == "cpu" else "static"


def resolve_excludes(model: Any, requested: tuple[str, ...], path: Path) -> list[str]:
    """Node names to keep in float: each entry is an op type (all its nodes) or a node name."""
    by_type: dict[str, list[str]] = {}
    for node in model.graph.node:
        by_type.setdefault(node.op_type, []).append(node.name)
    names = {node.name for node in model.graph.node}
    excluded: list[str] = []
    for item in requested:
        if item in by_type:
            excluded += by_type[item]
        elif item in names:
            excluded.append(item)
        else:
            examples = ", ".join(sorted(names)[:5])
            raise UsageError(
                f"--int8-exclude {item}: {path} has no node or op type named '{item}' "
                f"(op types: {', '.join(sorted(by_type))}; nodes e.g. {examples})"
            )
    return sorted(set(excluded))


# Calibration methods ``method auto`` compares: minmax keeps every value in range, percentile clips the rare
# outliers that waste int8 steps (depthwise convolutions and post-ReLU6 activations of mobile networks).
AUTO_METHODS = ("minmax", "percentile")
# Histogram methods estimate the tails of each activation's distribution; below this many samples the
# estimate is a handful of images' worth and the report says so.
MIN_HISTOGRAM_SAMPLES = 32


def seven_bit_weights(config: Int8Config) -> bool:
    """Whether U8S8 weights use 7 bits: asked for, or ``auto`` on an x86 CPU without VNNI — a choice made for the
    CPU the build runs on, which ``deployopt recommend`` names when the artifact is measured on another."""
    return x86_without_vnni() if config.weight_bits == "auto" else config.weight_bits == "7"


def candidates_for(model: Any, config: Int8Config, mode: str) -> list[Candidate]:
    """The settings worth trying for this graph and target, in order of preference. Static candidates come in
    one encoding (QDQ unless the user fixed QOperator): the search compares calibration methods in it and tries
    the other encoding only on the settings it keeps (:func:`other_encoding`)."""
    reduce = seven_bit_weights(config)
    if mode == "dynamic":
        if config.target == "tensorrt":
            raise UsageError(
                "--target tensorrt needs static Q/DQ quantization; use --int8-mode static with calibration data"
            )
        return [Candidate("dynamic", "qoperator", "uint8", reduce_range=reduce)]
    methods = AUTO_METHODS if config.method == "auto" else (config.method,)
    if config.target == "tensorrt":
        if config.format == "qoperator":
            raise UsageError("--target tensorrt takes Q/DQ graphs only; drop --int8-format qoperator")
        return [Candidate("static", "qdq", "int8", symmetric_activations=True, method=m) for m in methods]
    fmt = "qoperator" if config.format == "qoperator" else "qdq"
    return [Candidate("static", fmt, "uint8", reduce_range=reduce, method=m) for m in methods]


def other_encoding(candidate: Candidate, config: Int8Config) -> Candidate | None:
    """The QOperator twin of a static CPU QDQ candidate when the format is left to measurement, else None."""
    if candidate.mode != "static" or config.target != "cpu" or config.format != "auto" or candidate.format != "qdq":
        return None
    return candidate.encoded_as("qoperator")


def quantizable_nodes(model: Any, excluded: list[str]) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS and n.name not in excluded]


def gemm_as_matmul(model: Any) -> Any:
    """Rewrite each plain Gemm (alpha = beta = 1, no transA, constant B) as MatMul (+ Add for the bias).

    Dynamic quantization only handles MatMul, so onnxruntime rewrites Gemm itself first — and 1.30 gets
    it wrong (the tiny transformer's outputs drop to mean cosine 0.67 before anything is quantized; 1.32
    is exact). Doing the exact rewrite here makes every version see MatMul. Node names are kept, so
    ``--exclude`` and the sensitivity search still find them.
    """
    from onnx import helper, numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            transposed = numpy_helper.from_array(numpy_helper.to_array(inits[weight]).T.copy(), f"{weight}_T")
            model.graph.initializer.append(transposed)
            weight = transposed.name
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=node.name))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], list(node.output), name=f"{node.name}_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def upgraded_for_int8(model: Any) -> tuple[Any, str | None]:
    """Per-channel Q/DQ (DequantizeLinear's ``axis``) needs opset 13: an older graph (PaddlePaddle exports are
    often opset 10–12) is converted with ONNX's version converter first. Returns the model and a note."""
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= INT8_MIN_OPSET:
        return model, None
    try:
        converted = version_converter.convert_version(model, INT8_MIN_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors for ops it cannot adapt
        raise StageError(
            f"opset {opset} graph: int8 needs opset {INT8_MIN_OPSET} and ONNX's version converter failed "
            f"({type(exc).__name__}: {error_reason(exc)}); re-export with "
            f"opset ≥ {INT8_MIN_OPSET}"
        ) from exc
    return converted, f"graph converted from opset {opset} to {INT8_MIN_OPSET} for per-channel Q/DQ"


INT8_MIN_OPSET = 13


def quantize_candidate(
    fp32_path: Path,
    out_path: Path,
    candidate: Candidate,
    config: Int8Config,
    excluded: list[str],
    calibration: BatchSource | None,
    ranges_cache: Path | None = None,
    verbose: bool = False,
    chunk: int | None = None,
) -> str:
    """Run onnxruntime.quantization for one candidate; returns what the quantizer printed.

    ``ranges_cache``: a file where ONNX Runtime keeps the calibrated ranges of this model and method, so
    candidates that differ only in excluded nodes or encoding calibrate once (ORT ≥ 1.23's
    ``calibration_cache_path``; older versions calibrate every time, with the same result). ``chunk``: at most
    this many calibration batches' intermediate tensors are held at once (:mod:`deployopt.data.memory`)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    cache = {"calibration_cache_path": str(ranges_cache)} if ranges_cache and supports_ranges_cache() else {}
    log = io.StringIO()
    try:
        with capture_output(log, verbose):
            if candidate.mode == "dynamic":
                quantize_dynamic(
                    str(fp32_path),
                    str(out_path),
                    weight_type=types[candidate.weight],
                    per_channel=config.per_channel,
                    reduce_range=candidate.reduce_range,
                    nodes_to_exclude=excluded,
                    op_types_to_quantize=["MatMul", "Gemm", "Attention"],
                )
            elif calibration is None:
                raise UsageError(
                    "static int8 needs calibration data: pass --calibration FILE.npz or an image "
                    "folder, or use --int8-mode dynamic"
                )
            else:
                reader = ort_reader(calibration, config.calibration_batch, config.samples)
                quantize_static(
                    str(fp32_path),
                    str(out_path),
                    reader,
                    quant_format=QuantFormat.QDQ if candidate.format == "qdq" else QuantFormat.QOperator,
                    activation_type=types[candidate.activation],
                    weight_type=types[candidate.weight],
                    per_channel=config.per_channel,
                    reduce_range=candidate.reduce_range,
                    nodes_to_exclude=excluded,
                    calibrate_method=methods[candidate.method],
                    extra_options={
                        "ActivationSymmetric": candidate.symmetric_activations,
                        "WeightSymmetric": True,
                        # TensorRT's explicit quantization keeps biases in float; CPU kernels take int32 biases.
                        "QuantizeBias": not candidate.symmetric_activations,
                    }
                    | _chunked(candidate.method, len(reader), chunk),
                    **cache,
                )
    except (UsageError, InputFileError):
        raise
    except Exception as exc:  # onnxruntime.quantization raises bare exceptions of many types
        raise StageError(
            f"{fp32_path}: int8 quantization ({candidate.label}) failed: {type(exc).__name__}: {error_reason(exc)}"
        ) from exc
    return log.getvalue()


def _chunked(method: str, batches: int, chunk: int | None) -> dict[str, int]:
    """ONNX Runtime's option for calibrating ``chunk`` batches at a time. Only the histogram methods need it: they
    hold every intermediate tensor of every batch, while min/max reduces each tensor in the graph it runs. The
    stride must divide the number of batches."""
    if not chunk or chunk >= batches or method == "minmax":
        return {}
    return {"CalibStridedMinMax": max(d for d in range(1, chunk + 1) if batches % d == 0)}


def supports_ranges_cache() -> bool:
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def int8_op_counts(fp32_model: Any, quantized_model: Any) -> dict[str, dict[str, int]]:
    """For each compute op type of the fp32 graph: how many of its nodes run in int8 and how many stayed float.

    Quantizers replace a node with integer ops (QLinearConv, MatMulInteger, ...) or, in QDQ graphs, feed
    it from DequantizeLinear on both activation and weight — the pattern ONNX Runtime and TensorRT fuse
    into integer kernels. A node still in float form without that pattern counts as float.
    """
    producers = {out: node.op_type for node in quantized_model.graph.node for out in node.output}
    total = Counter(n.op_type for n in fp32_model.graph.node if n.op_type in COMPUTE_OPS)
    still_float: Counter = Counter()
    for node in quantized_model.graph.node:
        if node.op_type in total:
            fed_by_dq = len(node.input) >= 2 and all(producers.get(i) == "DequantizeLinear" for i in node.input[:2])
            if not fed_by_dq:
                still_float[node.op_type] += 1
    return {op: {"int8": max(0, n - still_float[op]), "float": still_float[op]} for op, n in total.items()}
