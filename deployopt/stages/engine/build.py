"""Engine stage: an ONNX artifact → a serialized TensorRT engine plus its sidecar ``<engine>.json``.

Precision comes from the ONNX graph, never from a guess: an fp16-converted graph or an explicit Q/DQ
int8 graph (``deployopt quantize --int8 --target tensorrt``). TensorRT 11 reads it from the graph alone
(strongly typed networks; builder precision flags and calibrators are gone); on TensorRT 10 the matching
FP16 / INT8 builder flags are set so those kernels are allowed. One optimization profile covers every
dynamic input: by default batch 1 (min), ``opt_batch`` (opt) and ``max_batch`` (max), other symbolic
dimensions at their typical value from the signature; ``--shapes`` overrides per input.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deployopt.errors import StageError, UsageError
from deployopt.fsutil import sha256_file, write_bytes_atomic
from deployopt.platform.gpu import GpuInfo, require_cuda_gpu
from deployopt.platform.tensorrt import EngineSidecar, HardwareCompat, has_builder_precision_flags, import_tensorrt
from deployopt.sources.signature import Signature, TensorSpec

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """'4GiB', '512M', '1.5G', '1048576' → bytes (binary units; KB/MB/GB are read as KiB/MiB/GiB too)."""
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(f"'{text}' is not a size; use e.g. 4GiB, 512MiB or a number of bytes")
    unit = (match.group(2) or "").upper()[:1]
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in re.split(r"[x,]", text.strip()) if d)
    except ValueError:
        raise UsageError(f"'{text}' is not a shape; write dimensions as in --input, e.g. 1,3,224,224") from None
    if not dims or any(d < 1 for d in dims):
        raise UsageError(f"'{text}': every dimension of a profile shape must be a positive integer")
    return dims


class EngineConfig(BaseModel):
    """Options of ``deployopt engine`` (and of the engine step of ``deployopt build --target tensorrt``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shapes: tuple[str, ...] = Field(
        (),
        description="profile for a dynamic input, NAME:MIN/OPT/MAX with shapes as in --input, "
        "e.g. input:1,3,8,8/8,3,8,8/32,3,8,8 (repeatable)",
    )
    min_batch: int = Field(1, ge=1, description="smallest batch the engine accepts")
    opt_batch: int | None = Field(None, ge=1, description="batch TensorRT tunes kernels for; default min(8, max)")
    max_batch: int = Field(32, ge=1, description="largest batch the engine accepts")
    workspace: str | None = Field(None, description="builder workspace limit, e.g. 4GiB; default: TensorRT's")
    timing_cache: Path | None = Field(None, description="read and update this timing cache file (faster rebuilds)")
    sparse_weights: bool = Field(False, description="allow 2:4 sparse kernels for weights that have the pattern")
    version_compatible: bool = Field(False, description="engine runs on later TensorRT releases of the same major")
    hardware_compat: HardwareCompat = Field("none", description="GPUs beyond the building one the engine runs on")
    opt_level: int | None = Field(None, ge=0, le=5, description="builder optimization level (TensorRT default 3)")
    device: str = Field("cuda", pattern=r"^cuda(:\d+)?$", description="GPU that builds (and runs) the engine")

    @field_validator("workspace")
    @classmethod
    def _valid_workspace(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_size(value)
            except UsageError as exc:  # pydantic reports ValueErrors with the field's name (and pipeline line)
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _ordered_batches(self) -> EngineConfig:
        if not self.min_batch <= self.resolved_opt_batch <= self.max_batch:
            raise ValueError(
                f"need min_batch ≤ opt_batch ≤ max_batch, got {self.min_batch} ≤ {self.opt_batch} ≤ {self.max_batch}"
            )
        return self

    @property
    def resolved_opt_batch(self) -> int:
        return self.opt_batch if self.opt_batch is not None else max(self.min_batch, min(8, self.max_batch))


def _default_range(spec: TensorSpec, config: EngineConfig) -> ShapeRange:
    """Batch min / opt / max; other dynamic dims from 1 (min) to their typical value (opt and max)."""
    if spec.unsized_dims:  # an engine's profile is a lasting choice: no default size for it
        raise UsageError(
            f"input '{spec.name}' has a dynamic dimension without a typical value; "
            f"give the profile with --shapes {spec.name}:MIN/OPT/MAX"
        )
    low, opt, high = (spec.concrete_shape(b) for b in (config.min_batch, config.resolved_opt_batch, config.max_batch))
    low = tuple(
        1 if isinstance(d, str) and axis != spec.batch_axis else v
        for axis, (d, v) in enumerate(zip(spec.shape, low, strict=True))
    )
    return low, opt, high


def _parse_override(text: str, signature: Signature) -> tuple[str, ShapeRange]:
    name, sep, ranges = text.rpartition(":")
    parts = ranges.split("/")
    if not sep or len(parts) != 3:
        raise UsageError(f"--shapes '{text}': write NAME:MIN/OPT/MAX, e.g. input:1,3,224,224/8,3,224,224/32,3,224,224")
    spec = next((s for s in signature.inputs if s.name == name), None)
    if spec is None:
        raise UsageError(f"--shapes '{text}': the model has no input '{name}' (inputs: {', '.join(signature.names)})")
    low, opt, high = (_dims(p) for p in parts)
    for label, dims in (("MIN", low), ("OPT", opt), ("MAX", high)):
        if not spec.accepts(dims):
            raise UsageError(f"--shapes '{text}': {label} {dims} does not fit input {spec.to_text()}")
    if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
        raise UsageError(f"--shapes '{text}': need MIN ≤ OPT ≤ MAX in every dimension")
    return name, (low, opt, high)


def compute_profiles(signature: Signature, config: EngineConfig) -> dict[str, ShapeRange]:
    """One (min, opt, max) per input: overrides from ``config.shapes``, defaults from the signature.

    Fully static inputs get min = opt = max, which TensorRT accepts for a fixed-shape network too.
    """
    overrides = dict(_parse_override(text, signature) for text in config.shapes)
    return {spec.name: overrides.get(spec.name) or _default_range(spec, config) for spec in signature.inputs}


def builder_flag_names(tensorrt_version: str, precision: str, config: EngineConfig) -> list[str]:
    """The ``trt.BuilderFlag`` members to set. TensorRT 11: none for precision (the graph decides)."""
    flags = []
    if has_builder_precision_flags(tensorrt_version):
        # A Q/DQ graph needs INT8 to keep its int8 kernels; FP16 lets the layers left in float use half.
        flags += {"fp16": ["FP16"], "int8": ["INT8", "FP16"]}.get(precision, [])
    if config.sparse_weights:
        flags.append("SPARSE_WEIGHTS")
    if config.version_compatible:
        flags.append("VERSION_COMPATIBLE")
    return flags


def _make_logger(trt):
    """A TensorRT logger that keeps warnings and errors, so a failed build can say why."""

    class KeepingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, msg) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                self.messages.append(str(msg))

    return KeepingLogger()


def _parser_errors(parser, onnx_path: Path) -> str:
    """Every parser error with the ONNX node it concerns (name and op type) when TensorRT names one."""
    import onnx

    nodes = onnx.load_model(str(onnx_path), load_external_data=False).graph.node
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node_name = error.node_name() if hasattr(error, "node_name") else ""
        index = error.node()
        if not node_name and 0 <= index < len(nodes):
            node_name = nodes[index].name
        op = error.node_operator() if hasattr(error, "node_operator") else ""
        if not op and 0 <= index < len(nodes):
            op = nodes[index].op_type
        where = f"node '{node_name or index}' ({op or '?'})" if index >= 0 or node_name else "model"
        lines.append(f"{where}: {error.desc()}")
    return "; ".join(lines) or "no error details"


def _configure(trt, builder, network, config: EngineConfig, flags: list[str], profiles: dict[str, ShapeRange]):
    builder_config = builder.create_builder_config()
    if config.workspace is not None:
        builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, parse_size(config.workspace))
    for flag in flags:
        builder_config.set_flag(getattr(trt.BuilderFlag, flag))
    if config.opt_level is not None:
        builder_config.builder_optimization_level = config.opt_level
    if config.hardware_compat != "none":
        level = config.hardware_compat.upper().replace("-", "_")
        builder_config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    network_inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    unknown = sorted(set(profiles) - set(network_inputs))
    if unknown:
        raise StageError(f"profile names input(s) {unknown} that the parsed network does not have")
    profile = builder.create_optimization_profile()
    dynamic = [name for name, tensor in network_inputs.items() if any(d < 0 for d in tuple(tensor.shape))]
    for name in dynamic:
        if name not in profiles:
            raise StageError(f"dynamic input '{name}' has no optimization profile; pass --shapes {name}:MIN/OPT/MAX")
        profile.set_shape(name, *profiles[name])
    if dynamic:
        builder_config.add_optimization_profile(profile)
    return builder_config


def _load_timing_cache(builder_config, path: Path | None):
    data = path.read_bytes() if path is not None and path.exists() else b""
    cache = builder_config.create_timing_cache(data)
    builder_config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(
    onnx_path: str | Path, out: str | Path, signature: Signature, config: EngineConfig = EngineConfig()
) -> EngineSidecar:
    """Parse ``onnx_path``, build an engine into ``out`` and return its sidecar (the caller writes it).

    Raises :class:`BackendUnavailableError` without TensorRT or a GPU, :class:`StageError` when the
    parser or the builder fails (parser errors name the ONNX node).
    """
    from deployopt.sources.onnxutil import describe

    onnx_path, out = Path(onnx_path), Path(out)
    trt = import_tensorrt()
    gpu: GpuInfo = require_cuda_gpu(config.device)
    precision = describe(onnx_path)["precision"]
    flags = builder_flag_names(trt.__version__, precision, config)
    profiles = compute_profiles(signature, config)
    logger = _make_logger(trt)
    started = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise StageError(f"{onnx_path}: TensorRT's ONNX parser failed: {_parser_errors(parser, onnx_path)}")
    builder_config = _configure(trt, builder, network, config, flags, profiles)
    cache = _load_timing_cache(builder_config, config.timing_cache)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        detail = "; ".join(logger.messages[-3:]) or "TensorRT gave no reason"
        raise StageError(f"{onnx_path}: TensorRT could not build an engine: {detail}")
    write_bytes_atomic(out, bytes(serialized))
    if config.timing_cache is not None:
        write_bytes_atomic(config.timing_cache, bytes(cache.serialize()))
    return EngineSidecar(
        tensorrt_version=trt.__version__,
        gpu=gpu,
        source_onnx=str(onnx_path),
        source_sha256=sha256_file(onnx_path),
        source_precision=precision,
        builder_flags=flags,
        profiles={name: [list(shape) for shape in shapes] for name, shapes in profiles.items()},
        signature=signature.to_json(),
        options=config.model_dump(mode="json"),
        sparse_weights=config.sparse_weights,
        version_compatible=config.version_compatible,
        hardware_compat=config.hardware_compat,
        engine_sha256=sha256_file(out),
        engine_bytes=out.stat().st_size,
        build_seconds=round(time.perf_counter() - started, 3),
    ).stamp()
