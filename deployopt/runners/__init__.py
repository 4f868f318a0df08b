"""Runners: one interface (activate / infer / deactivate) over every inference backend."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from deployopt.errors import UsageError
from deployopt.runners.base import Runner, RunnerSpec

if TYPE_CHECKING:
    from deployopt.sources.detect import ModelSource

# backend name → "module:class"; modules are imported only when a runner of that backend is made.
BACKENDS = {
    "torch": "deployopt.runners.torch_runner:TorchRunner",
    "onnxruntime": "deployopt.runners.onnxruntime_runner:OnnxRuntimeRunner",
    "tensorrt": "deployopt.runners.tensorrt_runner:TensorRTRunner",
    "openvino": "deployopt.runners.openvino_runner:OpenVinoRunner",
}
# Runtimes an ONNX file can run on (an OpenVINO IR runs only on OpenVINO).
ONNX_RUNTIMES = ("onnxruntime", "openvino")


def create_runner(spec: RunnerSpec) -> Runner:
    try:
        module_name, class_name = BACKENDS[spec.backend].split(":")
    except KeyError:
        raise UsageError(f"unknown backend '{spec.backend}'; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module_name), class_name)(spec)


# --provider choices of the CLI → ONNX Runtime provider lists (the first one must become active).
PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


def reference_spec(source: ModelSource, threads: int | None = None) -> RunnerSpec:
    """The runner for an original model: PyTorch eager, or ONNX Runtime when the source is already ONNX."""
    from deployopt.sources.detect import SourceKind

    backend = {SourceKind.ONNX: "onnxruntime", SourceKind.OPENVINO_IR: "openvino"}.get(source.kind, "torch")
    return RunnerSpec(backend=backend, path=str(source.path), threads=threads, source_options=source.options.to_json())


def spec_for_model(
    path: str,
    *,
    source_options: dict | None = None,
    threads: int | None = None,
    provider: str = "cpu",
    device: str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    runtime: str = "onnxruntime",
) -> RunnerSpec:
    """Pick the backend from the file: a TensorRT engine (sidecar or .plan) → tensorrt, an OpenVINO IR →
    openvino, ONNX → ``runtime`` (onnxruntime with ``provider``, or openvino), PyTorch → torch on ``device``."""
    from pathlib import Path

    from deployopt.platform.tensorrt import is_engine_file
    from deployopt.sources.detect import SourceKind, detect_kind

    if provider not in PROVIDERS:
        raise UsageError(f"unknown provider '{provider}'; known: {', '.join(PROVIDERS)}")
    if is_engine_file(path):
        return RunnerSpec("tensorrt", str(path), device=device if device.startswith("cuda") else "cuda")
    if runtime not in ONNX_RUNTIMES:
        raise UsageError(f"unknown runtime '{runtime}'; known: {', '.join(ONNX_RUNTIMES)}")
    kind = detect_kind(Path(path))
    if kind is SourceKind.OPENVINO_IR:  # compiled in the precision it was judged at (fp16 weights: fp16)
        from deployopt.sources.openvino_ir import ir_facts

        inference = ir_facts(Path(path))["inference_precision"]
        return RunnerSpec("openvino", str(path), threads=threads, precision=inference)
    if kind is SourceKind.ONNX and runtime == "openvino":
        return RunnerSpec("openvino", str(path), threads=threads)
    if kind is SourceKind.ONNX:
        return RunnerSpec("onnxruntime", str(path), threads=threads, providers=PROVIDERS[provider])
    return RunnerSpec(
        "torch",
        str(path),
        threads=threads,
        source_options=dict(source_options or {}),
        device=device,
        precision=precision,
        compile=compile,
    )


__all__ = ["BACKENDS", "ONNX_RUNTIMES", "PROVIDERS", "Runner", "RunnerSpec", "create_runner", "spec_for_model"]
