"""TensorRT facts that need no GPU: importing it with a clear error, version branching, the engine sidecar.

A serialized engine only runs on the TensorRT version and the GPU that built it (unless it was built
version- or hardware-compatible). TensorRT's own failure on a mismatch is an opaque deserialization
error, so every engine gets a sidecar ``<engine>.json`` and :func:`check_compatible` compares it with
the running TensorRT and GPU *before* TensorRT is asked to load anything.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from deployopt.errors import BackendUnavailableError, InputFileError
from deployopt.fsutil import read_json
from deployopt.platform.gpu import GpuInfo

SIDECAR_FORMAT = "deployopt.engine/1"
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
HardwareCompat = Literal["none", "ampere-plus", "same-compute-capability"]


def import_tensorrt():
    """The ``tensorrt`` module, or a :class:`BackendUnavailableError` saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            "TensorRT's Python package is not installed (or its libnvinfer libraries are missing): "
            f"{exc}; install it from NVIDIA's index: pip install --extra-index-url https://pypi.nvidia.com tensorrt"
        ) from exc
    return tensorrt


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.13.2.6' → (10, 13, 2, 6); a pre-release suffix is cut off ('11.0.0rc1' → (11, 0, 0))."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    if not match:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return tuple(int(part) for part in match.group(0).split("."))


def trt_major(version: str) -> int:
    return version_tuple(version)[0]


def has_builder_precision_flags(version: str) -> bool:
    """TensorRT ≤ 10 takes FP16/INT8 builder flags; 11 removed them (networks are always strongly typed)."""
    return trt_major(version) <= 10


class EngineSidecar(BaseModel):
    """What ``<engine>.json`` records about how and where an engine was built."""

    model_config = ConfigDict(extra="forbid")

    format: str = SIDECAR_FORMAT
    tensorrt_version: str
    gpu: GpuInfo
    source_onnx: str
    source_sha256: str
    source_precision: str  # fp32 / fp16 / int8, read from the ONNX graph: in TensorRT 11 it *is* the precision
    builder_flags: list[str]
    profiles: dict[str, list[list[int]]]  # input → [min, opt, max]
    signature: list[dict]  # deployopt Signature JSON, so verify and bench can feed the engine
    options: dict  # EngineConfig
    sparse_weights: bool = False
    version_compatible: bool = False
    hardware_compat: HardwareCompat = "none"
    engine_sha256: str
    engine_bytes: int
    build_seconds: float
    created: str = ""

    def stamp(self) -> EngineSidecar:
        return self.model_copy(update={"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def is_engine_file(path: str | Path) -> bool:
    """An engine is recognised by its sidecar, or by a TensorRT file suffix."""
    path = Path(path)
    return sidecar_path(path).exists() or path.suffix.lower() in ENGINE_SUFFIXES


def read_sidecar(engine: str | Path) -> EngineSidecar:
    path = sidecar_path(engine)
    if not path.exists():
        raise InputFileError(
            f"{engine}: no sidecar {path.name} next to the engine, so its TensorRT version, GPU and input "
            "signature are unknown; rebuild it with `deployopt engine`"
        )
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise InputFileError(f"{path}: not a readable deployopt engine sidecar; rebuild it with `deployopt engine`")
    return EngineSidecar.model_validate(data)


def check_compatible(sidecar: EngineSidecar, engine: str | Path, tensorrt_version: str, gpu: GpuInfo | None) -> None:
    """Raise a clear error naming both sides when this TensorRT or GPU cannot run the engine.

    Version: an engine runs only on the TensorRT release that built it; a version-compatible one on that
    release or a later one of the same major version. GPU (skipped when ``gpu`` is None): same model by
    default, same compute capability or any Ampere-or-newer GPU when built hardware-compatible.
    """
    built, running = version_tuple(sidecar.tensorrt_version), version_tuple(tensorrt_version)
    if sidecar.version_compatible:
        version_ok = built[0] == running[0] and running[:3] >= built[:3]
        rule = "a version-compatible engine needs the same major version, same or newer release"
    else:
        version_ok = built[:3] == running[:3]
        rule = "rebuild it here, or build it with --version-compatible"
    if not version_ok:
        raise BackendUnavailableError(
            f"{engine}: built with TensorRT {sidecar.tensorrt_version}, but this machine has TensorRT "
            f"{tensorrt_version} ({rule})"
        )
    if gpu is None:
        return
    ours = f"{gpu.name} (compute capability {gpu.compute_capability})"
    theirs = f"{sidecar.gpu.name} (compute capability {sidecar.gpu.compute_capability})"
    if sidecar.hardware_compat == "ampere-plus":
        if version_tuple(gpu.compute_capability) < (8, 0):
            raise BackendUnavailableError(
                f"{engine}: built hardware-compatible for Ampere and newer GPUs, but this GPU is {ours}"
            )
    elif sidecar.hardware_compat == "same-compute-capability":
        if gpu.compute_capability != sidecar.gpu.compute_capability:
            raise BackendUnavailableError(f"{engine}: built for the compute capability of {theirs}; this GPU is {ours}")
    elif gpu.name != sidecar.gpu.name:
        raise BackendUnavailableError(
            f"{engine}: built on {theirs}, but this GPU is {ours}; rebuild it here or build it with "
            "--hardware-compat same-compute-capability / ampere-plus"
        )
