"""Runners: one interface (activate / infer / deactivate) over every inference backend."""

from __future__ import annotations

import importlib

from deployopt.errors import UsageError
from deployopt.runners.base import Runner, RunnerSpec

# backend name → "module:class"; modules are imported only when a runner of that backend is made.
BACKENDS = {
    "torch": "deployopt.runners.torch_runner:TorchRunner",
    "onnxruntime": "deployopt.runners.onnxruntime_runner:OnnxRuntimeRunner",
}


def create_runner(spec: RunnerSpec) -> Runner:
    try:
        module_name, class_name = BACKENDS[spec.backend].split(":")
    except KeyError:
        raise UsageError(f"unknown backend '{spec.backend}'; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module_name), class_name)(spec)


def spec_for_model(
    path: str,
    *,
    source_options: dict | None = None,
    threads: int | None = None,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> RunnerSpec:
    """Pick the backend from the file's content: ONNX → onnxruntime, any PyTorch format → torch."""
    from pathlib import Path

    from deployopt.sources import SourceKind, detect_kind

    backend = "onnxruntime" if detect_kind(Path(path)) is SourceKind.ONNX else "torch"
    return RunnerSpec(
        backend=backend, path=str(path), threads=threads, providers=providers, source_options=dict(source_options or {})
    )


__all__ = ["BACKENDS", "Runner", "RunnerSpec", "create_runner", "spec_for_model"]
