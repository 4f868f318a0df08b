"""OpenVINO IR files (``model.xml`` + ``model.bin``): recognised, checked and described from their bytes.

Nothing here imports ``openvino``: a build or ``inspect`` on a machine without it still says what the file is,
and a bad pair is refused before any runtime loads it. The IR's XML lists every layer; ``Parameter`` layers are
the inputs, ``Const`` layers point into the ``.bin`` by offset and size, so a truncated ``.bin`` is caught by
comparing those with its length. deployopt keeps a model's signature in the IR's ``rt_info`` (as it does in ONNX
metadata), so the dynamic dims keep their names (``batch``, ``seq``) through the conversion.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from deployopt.errors import file_error
from deployopt.sources.signature import Signature, TensorSpec

RT_INFO_SECTION = "deployopt"
RT_INFO_SIGNATURE = "signature"
RT_INFO_PRECISION = "precision"  # the precision deployopt judged the IR at
RT_INFO_INFERENCE = "inference_precision"  # the precision it is compiled in (fp32, bf16, fp16: its float layers)
# IR element types → numpy dtype names (the ones a model input can have)
_DTYPES = {
    "f32": "float32",
    "f16": "float16",
    "f64": "float64",
    "bf16": "bfloat16",
    "i64": "int64",
    "i32": "int32",
    "i8": "int8",
    "u8": "uint8",
    "boolean": "bool",
}
_INT8_TYPES = {"i8", "u8", "i4", "u4"}
_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")


def looks_like_ir(path: Path) -> bool:
    """An XML file whose root element is OpenVINO's ``<net>`` (read from its first bytes only)."""
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip()
    return (head.startswith(b"<?xml") and b"<net " in head) or head.startswith(b"<net ")


def weights_path(path: Path) -> Path:
    return path.with_suffix(".bin")


def _parse(path: Path) -> ElementTree.Element:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise file_error(
            path, f"is not a readable OpenVINO IR (truncated or corrupt XML: {exc})", "re-save it"
        ) from exc
    if root.tag != "net" or root.find("layers") is None:
        raise file_error(path, "is an XML file but not an OpenVINO IR (no <net><layers>)", "pass the IR's .xml")
    return root


def check_ir(path: Path) -> ElementTree.Element:
    """The parsed IR, once its ``.bin`` is known to be a file inside the model's folder that holds every
    constant the XML points to; each problem is one line naming the file and the fix."""
    root = _parse(path)
    consts = [layer.find("data") for layer in root.iter("layer") if layer.get("type") == "Const"]
    needed = max((int(d.get("offset", 0)) + int(d.get("size", 0)) for d in consts if d is not None), default=0)
    weights = weights_path(path)
    folder = path.resolve().parent
    if weights.is_symlink() and not weights.resolve().is_relative_to(folder):
        raise file_error(
            path,
            f"its weights file {weights.name} points outside the model's folder ({weights.resolve()})",
            "copy the .bin next to the .xml instead of linking it",
        )
    if needed and not weights.is_file():
        raise file_error(path, f"its weights file {weights.name} is missing", "copy the .bin saved with the .xml")
    if needed and weights.stat().st_size < needed:
        raise file_error(
            path,
            f"its weights file {weights.name} is {weights.stat().st_size} bytes, the XML needs {needed} (truncated)",
            "copy the .bin again",
        )
    return root


def ir_signature(path: Path, root: ElementTree.Element) -> Signature:
    """deployopt's saved signature when the IR carries one, else the ``Parameter`` layers' names, element types
    and shapes (a dynamic dim, ``?`` or a range, is ``batch`` on axis 0 and ``<input>_dimN`` elsewhere)."""
    saved = root.find(f"rt_info/{RT_INFO_SECTION}/{RT_INFO_SIGNATURE}")
    if saved is not None and saved.get("value"):
        return Signature.from_json(json.loads(saved.get("value")))
    specs = []
    for layer in root.iter("layer"):
        if layer.get("type") != "Parameter":
            continue
        data = layer.find("data")
        port = layer.find("output/port")
        names = (port.get("names") if port is not None else None) or layer.get("name")
        name = names.split(",")[0].strip()
        shape: list[int | str] = []
        for axis, dim in enumerate((data.get("shape") or "").split(",") if data is not None else []):
            dim = dim.strip()
            if not dim:
                continue
            if dim.isdigit():
                shape.append(int(dim))
            else:
                shape.append("batch" if axis == 0 else f"{_IDENTIFIER.sub('_', name)}_dim{axis}")
        element = data.get("element_type", "f32") if data is not None else "f32"
        if element not in _DTYPES:
            raise file_error(
                path, f"input '{name}' has element type {element}, which deployopt cannot feed", "convert it to f32"
            )
        specs.append(TensorSpec(name, tuple(shape), _DTYPES[element]))
    if not specs:
        raise file_error(path, "the IR has no Parameter (input) layers", "convert the model with its inputs")
    return Signature(tuple(specs))


def ir_facts(path: Path) -> dict:
    """Precision (int8 when it has FakeQuantize or 8-bit constants, fp16 when its weights are fp16), the precision
    it is compiled in (``inference_precision``: what deployopt judged it at, else fp16 for fp16 weights, else
    fp32), layer counts and size (``.xml`` + ``.bin``) of an IR, for reports and the manifest."""
    root = check_ir(path)
    layers = list(root.iter("layer"))
    types = [layer.get("type") for layer in layers]
    const_types = {(layer.find("data").get("element_type") or "") for layer in layers if layer.get("type") == "Const"}
    saved = root.find(f"rt_info/{RT_INFO_SECTION}/{RT_INFO_PRECISION}")
    if saved is not None and saved.get("value") in ("fp32", "fp16", "bf16", "int8"):
        precision = saved.get("value")
    elif "FakeQuantize" in types or const_types & _INT8_TYPES:
        precision = "int8"
    elif "f16" in const_types:  # compressed weights (ov.save_model(..., compress_to_fp16=True))
        precision = "fp16"
    else:
        precision = "fp32"
    counts: dict[str, int] = {}
    for kind in types:
        counts[kind] = counts.get(kind, 0) + 1
    inference = root.find(f"rt_info/{RT_INFO_SECTION}/{RT_INFO_INFERENCE}")
    if inference is not None and inference.get("value") in ("fp32", "fp16", "bf16"):
        inference_precision = inference.get("value")
    else:  # an IR deployopt did not make, or made before it recorded this: fp16 weights are computed in fp16
        inference_precision = "fp16" if precision == "fp16" else "fp32"
    weights = weights_path(path)
    return {
        "precision": precision,
        "inference_precision": inference_precision,
        "size_bytes": path.stat().st_size + (weights.stat().st_size if weights.is_file() else 0),
        "nodes": len(layers),
        "op_counts": dict(sorted(counts.items())),
        "ir_version": int(root.get("version", 0)),
        "weights_file": weights.name,
    }
