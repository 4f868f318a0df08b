"""Model sources: detect what a model file is from its content, and what is known about it.

Supported kinds (see :class:`SourceKind`): TorchScript archives, ``torch.export`` archives (.pt2),
state_dict checkpoints (with ``--arch``, or deployopt checkpoints that name their own), whole pickled
``nn.Module`` files (only with ``trust_pickle``), ONNX models, OpenVINO IR (``.xml`` + ``.bin``) and Hugging Face
model folders (:mod:`~deployopt.sources.huggingface`). Detection reads the file's bytes, so a misnamed file is still
recognised, and every failure names the file and the fix.
Building the PyTorch module from a source is :mod:`deployopt.sources.loading`.
"""

from __future__ import annotations

import enum
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from deployopt.errors import InputFileError, UsageError, file_error
from deployopt.fsutil import sha256_file
from deployopt.sources import huggingface as hf
from deployopt.sources.openvino_ir import check_ir, ir_facts, ir_signature, looks_like_ir
from deployopt.sources.signature import Signature, refine

KNOWN_EXTENSIONS = (".pt", ".pth", ".pt2", ".ckpt", ".bin", ".onnx", ".jit", ".torchscript", ".xml")
METADATA_FILE = "deployopt.json"  # extra file inside TorchScript archives written by deployopt


class SourceKind(str, enum.Enum):
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "torch.export"
    CHECKPOINT = "checkpoint"  # a state_dict (possibly a deployopt checkpoint dict)
    PICKLED_MODULE = "pickled-module"
    ONNX = "onnx"
    OPENVINO_IR = "openvino-ir"
    HUGGINGFACE = "huggingface"  # a transformers / sentence-transformers folder

    @property
    def is_torch(self) -> bool:
        return self not in (SourceKind.ONNX, SourceKind.OPENVINO_IR)


@dataclass(frozen=True)
class SourceOptions:
    """How to interpret a model file: the CLI's --arch, --input, --trust-pickle, --task and --max-length."""

    arch: str | None = None
    inputs: tuple[str, ...] = ()
    trust_pickle: bool = False
    task: str | None = None  # Hugging Face folders: the task to export for [default: from the config]
    max_length: int | None = None  # Hugging Face text models: tokens per example [default: from the tokenizer]

    def to_json(self) -> dict:
        return {
            "arch": self.arch,
            "inputs": list(self.inputs),
            "trust_pickle": self.trust_pickle,
            "task": self.task,
            "max_length": self.max_length,
        }


@dataclass(frozen=True)
class ModelSource:
    """A detected model file and what is known about it (without loading torch where possible)."""

    path: Path
    kind: SourceKind
    sha256: str
    name: str
    signature: Signature | None = None
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    options: SourceOptions = SourceOptions()
    huggingface: hf.HuggingFaceModel | None = None

    @property
    def output_kind(self) -> tuple[str, str] | None:
        """What the model's outputs are, when the source says so (a Hugging Face task), and why."""
        return self.huggingface.output_kind if self.huggingface else None

    @property
    def text(self) -> hf.TextEncoding | None:
        """How text becomes this model's inputs (Hugging Face text models only)."""
        return self.huggingface.text if self.huggingface else None

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "kind": self.kind.value,
            "sha256": self.sha256,
            "name": self.name,
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "dataset": self.dataset,
            "signature": self.signature.to_json() if self.signature else None,
            "options": self.options.to_json(),
        } | ({"huggingface": self.huggingface.to_json()} if self.huggingface else {})


# ---------------------------------------------------------------------------------------------- detect


def _check_readable(path: Path) -> None:
    if not path.exists():
        if hf.looks_like_hub_id(str(path)):
            raise hf.hub_id_error(path)
        raise file_error(path, "model file not found", "check the path (relative paths start at the current directory)")
    if path.is_dir():
        if hf.looks_like_folder_model(path):
            return
        raise file_error(
            path,
            "is a directory but not a Hugging Face model folder (no config.json, modules.json or weights)",
            "pass the model file inside it, or a folder saved with save_pretrained",
        )
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise file_error(path, f"cannot be read ({exc.strerror})", "check its permissions") from exc
    if size == 0:
        raise file_error(path, "is empty (0 bytes)", "re-save the model; an interrupted save leaves empty files")


def _zip_kind(path: Path) -> SourceKind | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise file_error(
            path, f"is a truncated or corrupt archive ({exc})", "re-save or re-download the model"
        ) from exc
    if bad is not None:
        raise file_error(path, f"is a corrupt archive (bad entry {bad})", "re-save or re-download the model")
    if any(n.endswith("archive_format") or "serialized_exported_program" in n for n in names):
        return SourceKind.TORCH_EXPORT
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return SourceKind.TORCHSCRIPT
    if any(n.endswith("data.pkl") for n in names):
        return SourceKind.CHECKPOINT  # refined to PICKLED_MODULE when loading with weights_only fails
    return None


def _looks_like_onnx(path: Path) -> bool:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError, UnicodeDecodeError):
        return False
    return model.ir_version > 0 and len(model.graph.output) > 0


def detect_kind(path: Path) -> SourceKind:
    """Recognise a model file from its bytes; raise a one-line :class:`InputFileError` otherwise."""
    _check_readable(path)
    if path.is_dir():
        return SourceKind.HUGGINGFACE
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(path):
        kind = _zip_kind(path)
        if kind is None:
            raise file_error(
                path,
                "is a zip archive but not a PyTorch model",
                "pass a torch.save / torch.jit.save / torch.export.save file",
            )
        return kind
    if head[:1] == b"\x80":  # a legacy (non-zip) torch.save pickle
        return SourceKind.CHECKPOINT
    if looks_like_ir(path):
        return SourceKind.OPENVINO_IR
    if _looks_like_onnx(path):
        return SourceKind.ONNX
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raise file_error(path, "is not a valid ONNX model (truncated or corrupt protobuf)", "re-export it")
    if suffix in KNOWN_EXTENSIONS:
        raise file_error(
            path,
            f"is not a readable model ({suffix} file whose content is not a PyTorch or ONNX model)",
            "re-save it with torch.save, torch.jit.save, torch.export.save or torch.onnx.export",
        )
    raise file_error(
        path,
        f"unrecognised model format (extension '{suffix or 'none'}', content not PyTorch or ONNX)",
        f"pass one of {', '.join(KNOWN_EXTENSIONS)}",
    )


# ------------------------------------------------------------------------------------------- inspect


def inspect_source(path: str | Path, options: SourceOptions = SourceOptions()) -> ModelSource:
    """Detect the model kind and gather its name, signature and architecture; loads no weights for ONNX."""
    from deployopt import models

    path = Path(path)
    kind = detect_kind(path)
    if (options.task or options.max_length) and kind is not SourceKind.HUGGINGFACE:
        raise UsageError(f"--task / --max-length: {path} is a {kind.value} file; they apply to Hugging Face folders")
    if kind is SourceKind.HUGGINGFACE:
        return _inspect_folder(path, options)
    source = ModelSource(path=path, kind=kind, sha256=sha256_file(path), name=path.stem, options=options)
    if kind is SourceKind.CHECKPOINT:
        source = _inspect_checkpoint(source)
    elif kind is SourceKind.ONNX:
        source = replace(source, signature=_onnx_signature(path))
    elif kind is SourceKind.OPENVINO_IR:
        source = replace(source, signature=ir_signature(path, check_ir(path)))
    elif kind is SourceKind.TORCHSCRIPT:
        source = _inspect_torchscript(source)
    elif kind is SourceKind.TORCH_EXPORT:
        source = replace(source, signature=_torch_export_signature(path))
    if options.arch and source.arch is None:
        source = replace(source, arch=options.arch)
    entry = models.get_model(source.arch) if source.arch else None
    if options.arch and entry is None and kind is not SourceKind.CHECKPOINT:
        raise UsageError(
            f"--arch {options.arch}: {path} ({kind.value}) carries its own model; --arch names the "
            f"architecture of a state_dict checkpoint (registered names: {', '.join(models.model_names())}): drop it"
        )
    if entry is not None:
        if source.signature is None:
            source = replace(source, signature=Signature.parse(entry.signature))
        if source.dataset is None:
            source = replace(source, dataset=entry.dataset)
    if options.inputs:
        given = Signature.parse(options.inputs)
        if kind in (SourceKind.ONNX, SourceKind.OPENVINO_IR):  # the graph declares its inputs: only refine them
            given = refine(source.signature, given, path)
        source = replace(source, signature=given)
    return source


def _inspect_folder(path: Path, options: SourceOptions) -> ModelSource:
    if options.arch or options.inputs:
        raise UsageError(
            f"--arch / --input: {path} is a Hugging Face folder, which names its own architecture and inputs"
        )
    model, signature = hf.inspect_folder(path, options.task, options.max_length)
    name = path.resolve().parent.name if path.resolve().name in ("model", "models") else path.resolve().name
    sha256 = hf.folder_sha256(model)
    return ModelSource(path, SourceKind.HUGGINGFACE, sha256, name, signature, options=options, huggingface=model)


def torch_load(path: Path, *, weights_only: bool) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError:
        raise
    # torch.load's only input is the file: corrupt bytes fail in many ways (EOFError, UnicodeDecodeError, KeyError,
    # IndexError from the unpickler's stack, …), each one the file's fault, never deployopt's (not exit 70)
    except Exception as exc:
        raise file_error(
            path, f"is not a readable model: torch.load fails ({str(exc).splitlines()[0]})", "re-save the model"
        ) from exc


def _inspect_checkpoint(source: ModelSource) -> ModelSource:
    import pickle

    from deployopt.sources.checkpoint import is_deployopt_checkpoint

    try:
        obj = torch_load(source.path, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # not a class it refused: bytes that are no pickle at all
            raise file_error(
                source.path,
                "is not a readable model (a pickle that is corrupt)",
                "re-save it with torch.save, torch.jit.save, torch.export.save or torch.onnx.export",
            ) from exc
        # weights_only refuses arbitrary classes: this is a whole pickled module (or other object).
        pickled = replace(source, kind=SourceKind.PICKLED_MODULE)
        require_trust(pickled)
        return pickled
    if is_deployopt_checkpoint(obj):
        return replace(
            source,
            arch=source.options.arch or obj["arch"],
            arch_kwargs=dict(obj.get("arch_kwargs") or {}),
            signature=Signature.from_json(obj["signature"]) if obj.get("signature") else None,
            dataset=obj.get("dataset"),
        )
    if not isinstance(obj, dict):
        raise file_error(
            source.path,
            f"holds a {type(obj).__name__}, not a state_dict or model",
            "save model.state_dict() or the module itself",
        )
    return source


def require_trust(source: ModelSource) -> None:
    if not source.options.trust_pickle:
        raise file_error(
            source.path,
            "is a whole pickled nn.Module; loading it runs arbitrary code, so torch.load(weights_only=True) refused it",
            "if you trust the file pass --trust-pickle, or save model.state_dict() and pass --arch",
        )


def _inspect_torchscript(source: ModelSource) -> ModelSource:
    import json

    with zipfile.ZipFile(source.path) as archive:
        meta_names = [n for n in archive.namelist() if n.endswith(f"extra/{METADATA_FILE}")]
        if not meta_names:
            return source
        meta = json.loads(archive.read(meta_names[0]))
    return replace(
        source,
        signature=Signature.from_json(meta["signature"]) if meta.get("signature") else None,
        dataset=meta.get("dataset"),
    )


def _torch_export_signature(path: Path) -> Signature:
    """Read input names, shapes and dtypes from the placeholders of a saved ExportedProgram."""
    import torch

    from deployopt.sources.signature import TensorSpec

    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch.export.load raises many types for a damaged archive
        raise file_error(
            path,
            f"cannot be loaded as a torch.export archive ({str(exc).splitlines()[0]})",
            "re-save it with torch.export.save",
        ) from exc
    user_inputs = set(program.graph_signature.user_inputs)
    specs = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise file_error(path, f"input '{node.name}' is not a tensor", "export the model with tensor inputs only")
        shape = tuple(
            int(d) if isinstance(d, int) else ("batch" if axis == 0 else f"dim{axis}")
            for axis, d in enumerate(value.shape)
        )
        specs.append(TensorSpec(node.name, shape, str(value.dtype).removeprefix("torch.")))
    return Signature(tuple(specs))


def _onnx_signature(path: Path) -> Signature:
    import onnx

    from deployopt.sources.onnxutil import check_external_data, signature_from_onnx

    model = onnx.load_model(str(path), load_external_data=False)
    check_external_data(model, path)
    weights = {init.name for init in model.graph.initializer}
    if all(value.name in weights for value in model.graph.input):
        raise InputFileError(
            f"{path}: the graph has no inputs (its outputs are constants); there is nothing to run, "
            "optimise or verify — export the model with its inputs"
        )
    return signature_from_onnx(model)


def artifact_facts(path: Path) -> dict:
    """Precision and size of a built artifact: from a TensorRT engine's sidecar, the ONNX graph or OpenVINO IR
    (plus its node counts), or fp32 for a PyTorch file."""
    from deployopt.platform.tensorrt import is_engine_file, read_sidecar

    if is_engine_file(path):
        return {"precision": read_sidecar(path).source_precision, "size_bytes": path.stat().st_size}
    kind = detect_kind(path)
    if kind is SourceKind.HUGGINGFACE:
        return {"precision": "fp32", "size_bytes": hf.folder_size(hf.inspect_folder(path)[0])}
    if kind is SourceKind.ONNX:
        from deployopt.sources.onnxutil import describe

        return describe(path)
    if kind is SourceKind.OPENVINO_IR:
        return ir_facts(path)
    return {"precision": "fp32", "size_bytes": path.stat().st_size}


def model_name(source: ModelSource) -> str:
    """A filesystem-safe name for the run directory, from the model file's name."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in source.name) or "model"
