"""OpenVINO IR files as a build makes them: converted from ONNX, saved with deployopt's ``rt_info`` (signature,
the precision judged at, the precision compiled in), and copies of one saved IR that differ only in how they
are compiled — the inference precision, and which layers stay in f32 inside a bf16/fp16 model.

A layer stays in f32 through OpenVINO's own per-node marking, ``DisablePrecisionConversion`` (OpenVINO ≥ 2026):
its CPU plugin keeps a layer so marked in its original precision whatever the inference precision. The marking
lives in the IR's XML, so whoever loads the IR with the recommended settings gets the same mixed model; the
weights file is shared between the copies (hard links), only the XML differs.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ElementTree
from collections.abc import Collection
from pathlib import Path
from typing import Any

from deployopt.errors import StageError, error_reason
from deployopt.sources.openvino_ir import RT_INFO_INFERENCE, RT_INFO_PRECISION, RT_INFO_SECTION, RT_INFO_SIGNATURE

# Layers whose arithmetic a low inference precision changes the most: what the per-layer search keeps in f32
COMPUTE_LAYERS = frozenset(
    {
        "Convolution",
        "GroupConvolution",
        "ConvolutionBackpropData",
        "GroupConvolutionBackpropData",
        "MatMul",
        "Einsum",
        "LSTMSequence",
        "GRUSequence",
        "RNNSequence",
        "LSTMCell",
        "GRUCell",
        "RNNCell",
    }
)
# Layers a value passes through unchanged in kind: a compute layer fed by a FakeQuantize through them is int8
_TRANSPARENT = frozenset({"Convert", "Reshape", "Transpose", "Squeeze", "Unsqueeze"})
_NOT_MARKED = frozenset({"Parameter", "Const", "Result"})  # no arithmetic to keep in f32
F32_MARK = {"name": "DisablePrecisionConversion", "version": "0", "value": "dynamic:f16"}


def convert_onnx(onnx_path: Path) -> Any:
    from deployopt.runners.openvino_runner import import_openvino

    ov = import_openvino()
    try:
        return ov.convert_model(str(onnx_path))
    except Exception as exc:  # the ONNX frontend raises OpConversionFailure and plain RuntimeErrors alike
        raise StageError(f"{onnx_path}: OpenVINO cannot convert this graph ({error_reason(exc)})") from exc


def save_ir(model: Any, xml: Path, signature_json: dict, precision: str, compress_to_fp16: bool) -> Path:
    """Save ``model`` as ``xml`` + ``.bin``; the signature and the precision it is judged at travel in the IR's
    ``rt_info`` (a dynamic-int8 graph has no FakeQuantize to tell it by). Compiled in f32 until
    :func:`compiled_copy` says otherwise."""
    from deployopt.runners.openvino_runner import import_openvino

    ov = import_openvino()
    _stable_names(model)
    model.set_rt_info(json.dumps(signature_json), [RT_INFO_SECTION, RT_INFO_SIGNATURE])
    model.set_rt_info(precision, [RT_INFO_SECTION, RT_INFO_PRECISION])
    model.set_rt_info("fp32", [RT_INFO_SECTION, RT_INFO_INFERENCE])
    ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
    return xml


def op_counts(xml: Path) -> dict[str, int]:
    """How many layers the IR has, and how many of them are FakeQuantize (its int8 points)."""
    types = [layer.get("type") for layer in ElementTree.parse(xml).getroot().iter("layer")]
    return {"ops": len(types), "fake_quantize": types.count("FakeQuantize")}


def _stable_names(model: Any) -> None:
    """OpenVINO names the ops it creates from a per-process counter (``Reshape_15`` in one build, ``Reshape_349``
    in the next build of the same process); renumber them by position so the same graph gives the same IR."""
    for index, op in enumerate(model.get_ordered_ops()):
        prefix, _, number = op.get_friendly_name().rpartition("_")
        if prefix.isidentifier() and number.isdigit():
            op.set_friendly_name(f"{prefix}_{index}")


def compiled_copy(base: Path, out: Path, inference: str, keep_f32: Collection[str] = ()) -> Path:
    """``out`` (.xml, with ``base``'s weights hard-linked as its .bin): the IR ``base`` set to compile in
    ``inference``, with the layers named in ``keep_f32`` marked to stay in f32."""
    tree = ElementTree.parse(base)
    root = tree.getroot()
    setting = root.find(f"rt_info/{RT_INFO_SECTION}/{RT_INFO_INFERENCE}")
    if setting is None:
        raise StageError(f"{base}: not an IR saved by deployopt (no {RT_INFO_INFERENCE} in its rt_info)")
    setting.set("value", inference)
    wanted = set(keep_f32)
    for layer in root.iter("layer"):
        if layer.get("name") in wanted:
            rt_info = layer.find("rt_info")
            if rt_info is None:
                rt_info = ElementTree.Element("rt_info")
                layer.insert(1 if layer.find("data") is not None else 0, rt_info)  # where OpenVINO writes it
            ElementTree.SubElement(rt_info, "attribute", F32_MARK)
    tree.write(out, encoding="utf-8", xml_declaration=True)
    weights = out.with_suffix(".bin")
    weights.unlink(missing_ok=True)
    try:
        os.link(base.with_suffix(".bin"), weights)
    except OSError:  # a filesystem without hard links: a copy holds the same bytes
        shutil.copyfile(base.with_suffix(".bin"), weights)
    return out


class LayerGraph:
    """The layers and edges of an IR's XML, enough to tell which compute layers run in float and which layers
    follow each of them (its block) — the units the per-layer search keeps in f32."""

    def __init__(self, xml: Path) -> None:
        root = ElementTree.parse(xml).getroot()
        self.types = {layer.get("id"): layer.get("type") for layer in root.iter("layer")}
        self.names = {layer.get("id"): layer.get("name") for layer in root.iter("layer")}
        self.consumers: dict[str, list[str]] = {}
        self.producers: dict[str, dict[str, str]] = {}  # layer → its input port → producing layer
        for edge in root.iter("edge"):
            source, target = edge.get("from-layer"), edge.get("to-layer")
            self.consumers.setdefault(source, []).append(target)
            self.producers.setdefault(target, {})[edge.get("to-port")] = source

    def _quantized(self, layer: str) -> bool:
        """A compute layer whose data input comes from a FakeQuantize (through reshapes and converts)."""
        ports = self.producers.get(layer, {})
        node = ports[min(ports, key=int)] if ports else None
        while node is not None and self.types[node] in _TRANSPARENT:
            ports = self.producers.get(node, {})
            node = ports[min(ports, key=int)] if ports else None
        return node is not None and self.types[node] == "FakeQuantize"

    def float_blocks(self) -> dict[str, list[str]]:
        """Each compute layer that runs in float (not int8) → its block: the layer and the layers its output
        reaches before the next compute layer, FakeQuantize or output, by name, in IR order."""
        order = list(self.types)
        blocks = {}
        for layer in order:
            if self.types[layer] not in COMPUTE_LAYERS or self._quantized(layer):
                continue
            members, frontier = {layer}, [layer]
            while frontier:
                for child in self.consumers.get(frontier.pop(), []):
                    kind = self.types[child]
                    if child in members or kind in COMPUTE_LAYERS or kind in ("FakeQuantize", "Result"):
                        continue
                    members.add(child)
                    frontier.append(child)
            blocks[self.names[layer]] = [self.names[m] for m in order if m in members]
        return blocks

    def markable(self) -> list[str]:
        """Every layer with arithmetic (no inputs, constants or outputs), by name."""
        return [self.names[layer] for layer, kind in self.types.items() if kind not in _NOT_MARKED]
