"""A Triton Inference Server model repository from a finished build: ``DIR/<name>/config.pbtxt`` and
``DIR/<name>/1/<model file>`` for the recommended artifact (or every passing variant).

Each config is built as Triton's own ``ModelConfig`` protobuf (the schema ``tritonclient`` ships), written as text,
and parsed back before it is moved into place — a field Triton does not know cannot be written. What goes in it is
read from the artifact itself: input and output names, Triton data types and dims (``-1`` for dynamic ones), and
``max_batch_size`` > 0 only when every input and output is batched on axis 0 (then ``dims`` leave the batch out and
``dynamic_batching`` is on); the thread settings are the ones the build's benchmark measured with.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployopt.errors import BackendUnavailableError, InputFileError, UsageError, file_error
from deployopt.fsutil import read_json
from deployopt.sources.signature import Signature

# runtime → (config field, its value, the model file name Triton looks for in the version folder)
BACKENDS = {
    "onnxruntime": ("platform", "onnxruntime_onnx", "model.onnx"),
    "openvino": ("backend", "openvino", "model.xml"),
    "tensorrt": ("platform", "tensorrt_plan", "model.plan"),
}
TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


class TritonConfig(BaseModel):
    """Options of ``deployopt triton`` (``build --triton-repo`` uses the defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    all_variants: bool = Field(False, description="every passing variant, not only the recommended one")
    max_batch_size: int | None = Field(
        None, ge=1, description="largest batch Triton may form [default: the largest batch size the build measured]"
    )
    queue_delay_us: int = Field(100, ge=0, description="dynamic batching: how long a request may wait for others (µs)")
    instances: int = Field(1, ge=1, description="model instances on the target (instance_group count)")
    force: bool = Field(False, description="replace model folders that already exist in the repository")


@dataclass(frozen=True)
class TensorIO:
    """One input or output as Triton sees it: dims with -1 for dynamic axes."""

    name: str
    dims: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class TritonModel:
    name: str
    variant: str
    runtime: str
    folder: Path
    config: str  # the config.pbtxt text
    caveat: str = ""  # what Triton may run differently from what was verified (serving_caveat)

    def to_json(self) -> dict:
        fields = {"name": self.name, "variant": self.variant, "runtime": self.runtime, "folder": str(self.folder)}
        return fields | ({"caveat": self.caveat} if self.caveat else {})


def model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise BackendUnavailableError(
            f"Triton model repositories need tritonclient's ModelConfig schema ({exc}): pip install 'deployopt[triton]'"
        ) from exc
    return model_config_pb2


def _onnx_io(path: Path) -> tuple[list[TensorIO], list[TensorIO]]:
    import onnx

    from deployopt.sources.onnxutil import numpy_dtype

    graph = onnx.load_model(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}

    def io(value) -> TensorIO:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim)
        return TensorIO(value.name, dims, numpy_dtype(tensor.elem_type))

    return [io(v) for v in graph.input if v.name not in weights], [io(v) for v in graph.output]


def _openvino_io(path: Path) -> tuple[list[TensorIO], list[TensorIO]]:
    from deployopt.runners.openvino_runner import import_openvino

    model = import_openvino().Core().read_model(str(path))

    def io(port) -> TensorIO:
        dims = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return TensorIO(port.get_any_name(), dims, str(port.get_element_type().to_dtype()))

    return [io(p) for p in model.inputs], [io(p) for p in model.outputs]


def _engine_io(path: Path) -> tuple[list[TensorIO], list[TensorIO], int | None]:
    """Inputs from the sidecar's signature, outputs from the ONNX graph the engine was built from, and the largest
    batch its optimisation profiles allow."""
    from deployopt.platform.tensorrt import read_sidecar

    sidecar = read_sidecar(path)
    signature = Signature.from_json(sidecar.signature)
    inputs = [
        TensorIO(s.name, tuple(d if isinstance(d, int) else -1 for d in s.shape), s.dtype) for s in signature.inputs
    ]
    source = Path(sidecar.source_onnx)
    source = source if source.is_file() else path.parent / source.name  # a run directory moved or seen elsewhere
    if not source.is_file():
        raise file_error(path, f"the ONNX graph it was built from ({source}) is gone", "rebuild the engine")
    profile_max = [shapes[2][0] for shapes in sidecar.profiles.values() if shapes]
    return inputs, _onnx_io(source)[1], min(profile_max) if profile_max else None


def model_config(
    name: str, artifact: Path, runtime: str, threads: int, batch_sizes: list[int], config: TritonConfig
) -> Any:
    """The ``ModelConfig`` message for one artifact (see the module docstring for what each field comes from)."""
    pb2 = model_config_pb2()
    if runtime not in BACKENDS:
        raise UsageError(f"{artifact}: runs on {runtime}, which has no Triton backend here ({', '.join(BACKENDS)})")
    limit = None
    if runtime == "tensorrt":
        inputs, outputs, limit = _engine_io(artifact)
    else:
        inputs, outputs = (_openvino_io if runtime == "openvino" else _onnx_io)(artifact)
    batched = all(t.dims and t.dims[0] == -1 for t in (*inputs, *outputs))
    max_batch = min(config.max_batch_size or max(batch_sizes), limit or 1 << 30) if batched else 0
    field, value, filename = BACKENDS[runtime]
    message = pb2.ModelConfig(name=name, max_batch_size=max_batch, default_model_filename=filename)
    setattr(message, field, value)
    for tensors, add in ((inputs, message.input.add), (outputs, message.output.add)):
        for tensor in tensors:
            if tensor.dtype not in TRITON_TYPES:
                raise UsageError(f"{artifact}: tensor '{tensor.name}' is {tensor.dtype}, which Triton has no type for")
            dims = tensor.dims[1:] if max_batch else tensor.dims
            add(name=tensor.name, data_type=pb2.DataType.Value(TRITON_TYPES[tensor.dtype]), dims=list(dims))
    if max_batch:
        preferred = [b for b in batch_sizes if 1 < b <= max_batch]
        message.dynamic_batching.preferred_batch_size.extend(preferred)
        message.dynamic_batching.max_queue_delay_microseconds = config.queue_delay_us
    kind = pb2.ModelInstanceGroup.KIND_GPU if runtime == "tensorrt" else pb2.ModelInstanceGroup.KIND_CPU
    message.instance_group.add(count=config.instances, kind=kind)
    parameters = {
        "onnxruntime": {"intra_op_thread_count": threads, "inter_op_thread_count": 1, "execution_mode": 0},
        "openvino": _openvino_parameters(artifact, threads) if runtime == "openvino" else {},
    }.get(runtime, {})
    for key, setting in parameters.items():
        message.parameters[key].string_value = str(setting)
    return message


def _openvino_parameters(artifact: Path, threads: int) -> dict[str, Any]:
    """The settings the benchmark compiled the IR with (the runner's own), in the keys Triton's OpenVINO backend
    reads: the latency hint, one stream, the threads, and ``HINT_BF16`` for an IR judged in bf16. The backend
    has no key for f32 (see :func:`serving_caveat`)."""
    from deployopt.runners.openvino_runner import compile_config

    precision = _inference_precision(artifact)
    settings = compile_config(threads, precision)
    parameters = {"PERFORMANCE_HINT": settings["PERFORMANCE_HINT"], "NUM_STREAMS": 1}
    parameters["INFERENCE_NUM_THREADS"] = settings["INFERENCE_NUM_THREADS"]
    return parameters | ({"HINT_BF16": "YES"} if precision == "bf16" else {})


def _inference_precision(artifact: Path) -> str:
    from deployopt.runners import spec_for_model

    return spec_for_model(str(artifact)).precision


def serving_caveat(variant: str, runtime: str, artifact: Path) -> str:
    """What Triton may run differently from what deployopt verified: its OpenVINO backend cannot be told f32, so on
    CPUs with AMX-BF16/AVX512-BF16 it runs an IR judged in f32 in OpenVINO's default bf16 there."""
    if runtime != "openvino" or _inference_precision(artifact) != "fp32":
        return ""
    return (
        f"{variant} was verified in f32; Triton's OpenVINO backend has no f32 setting, so on a CPU with AMX-BF16 or "
        "AVX512-BF16 it runs it in bf16 — serve the openvino-bf16 or an ONNX Runtime artifact there to run what "
        "was verified"
    )


def _validated_text(message: Any) -> str:
    """The config as text, parsed back into a fresh ``ModelConfig`` (a field Triton does not know fails here)."""
    from google.protobuf import text_format

    text = text_format.MessageToString(message)
    parsed = text_format.Parse(text, model_config_pb2().ModelConfig())
    if parsed != message:
        raise AssertionError(f"config.pbtxt of {message.name} does not read back as written")
    return text


def _chosen(report: dict, run_dir: Path, config: TritonConfig) -> list[dict]:
    passing = [v for v in report["variants"] if v.get("role") != "reference" and (v.get("verify") or {}).get("passed")]
    if config.all_variants:
        if not passing:
            raise InputFileError(f"{run_dir}: no variant passed its verification; nothing to serve")
        return passing
    recommendations = report.get("recommendations") or []
    if not recommendations:
        raise InputFileError(
            f"{run_dir}: the build recommended no artifact (built with --no-bench, or none passed); rebuild with the "
            "benchmark, or pass --all for every passing variant"
        )
    chosen = max(recommendations, key=lambda r: r["batch"])  # a server batches requests: the largest batch decides
    return [v for v in passing if v["name"] == chosen["variant"]]


def write_repository(
    run_dir: str | Path, repository: str | Path, config: TritonConfig = TritonConfig()
) -> list[TritonModel]:
    """Write the Triton model folders of a finished run (its ``report.json``) into ``repository``."""
    run_dir = Path(run_dir)
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise file_error(run_dir, "has no report.json", "pass the run directory of a finished `deployopt build`")
    report = read_json(report_path)
    if not isinstance(report, dict) or not {"model", "variants", "threads", "batch_sizes"} <= set(report):
        raise file_error(report_path, "is damaged or not a deployopt report", "rerun `deployopt build` for this run")
    return write_models(report, run_dir, Path(repository), config)


def write_models(report: dict, run_dir: Path, repository: Path, config: TritonConfig) -> list[TritonModel]:
    """The recommended artifact (or every passing variant) of ``report`` as Triton model folders. Every config is
    made and checked before anything is written; each folder is assembled aside and renamed into place."""
    model_config_pb2()  # missing tritonclient: refused before anything is written
    planned = []
    for variant in _chosen(report, run_dir, config):
        name = report["model"] if not config.all_variants else f"{report['model']}-{variant['name']}"
        if (repository / name).exists() and not config.force:
            raise UsageError(f"{repository / name}: already exists; pass --force to replace it")
        # artifacts live in the run directory; the report's paths are relative to where the build ran
        artifact = run_dir / Path(variant["path"]).name
        if not artifact.is_file():
            raise file_error(artifact, f"({variant['name']}) is missing from the run directory", "rerun the build")
        message = model_config(name, artifact, variant["runtime"], report["threads"], report["batch_sizes"], config)
        planned.append((name, variant, artifact, _validated_text(message)))
    repository.mkdir(parents=True, exist_ok=True)
    return [_write_model(repository, *plan) for plan in planned]


def _write_model(repository: Path, name: str, variant: dict, artifact: Path, text: str) -> TritonModel:
    target = repository / name
    with tempfile.TemporaryDirectory(dir=repository, prefix=f".{name}.") as staging:
        folder = Path(staging) / name
        (folder / "1").mkdir(parents=True)
        filename = BACKENDS[variant["runtime"]][2]
        shutil.copyfile(artifact, folder / "1" / filename)
        if variant["runtime"] == "openvino":  # the IR's weights
            shutil.copyfile(artifact.with_suffix(".bin"), folder / "1" / Path(filename).with_suffix(".bin"))
        (folder / "config.pbtxt").write_text(text, encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
    caveat = serving_caveat(variant["name"], variant["runtime"], artifact)
    return TritonModel(name, variant["name"], variant["runtime"], target, text, caveat)
