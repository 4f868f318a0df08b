"""The one interface every backend implements; ``verify`` and ``bench`` use nothing else.

A runner is created cheaply (no heavy imports), loads its model in :meth:`Runner.activate`, runs
numpy feeds through :meth:`Runner.infer` and releases everything in :meth:`Runner.deactivate`. Use it
as a context manager. Adding a backend is one file in this package plus one line in ``BACKENDS``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RunnerSpec:
    """Everything needed to rebuild a runner in another process (the bench workers), as plain data."""

    backend: str  # a key of deployopt.runners.BACKENDS: "torch", "onnxruntime", "tensorrt", "openvino"
    path: str
    threads: int | None = None
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    source_options: dict[str, Any] = field(default_factory=dict)  # SourceOptions.to_json() for torch
    device: str = "cpu"  # torch: "cpu" / "cuda[:N]"; tensorrt: "cuda[:N]"
    precision: str = "fp32"  # torch: "fp16" runs the module in half precision; openvino: inference precision
    compile: bool = False  # torch: wrap the module in torch.compile

    def to_json(self) -> dict:
        return {
            "backend": self.backend,
            "path": self.path,
            "threads": self.threads,
            "providers": list(self.providers),
            "source_options": dict(self.source_options),
            "device": self.device,
            "precision": self.precision,
            "compile": self.compile,
        }

    @classmethod
    def from_json(cls, data: dict) -> RunnerSpec:
        return cls(
            backend=data["backend"],
            path=data["path"],
            threads=data.get("threads"),
            providers=tuple(data.get("providers") or ("CPUExecutionProvider",)),
            source_options=dict(data.get("source_options") or {}),
            device=data.get("device", "cpu"),
            precision=data.get("precision", "fp32"),
            compile=bool(data.get("compile", False)),
        )


class Runner(abc.ABC):
    """Load once, infer many times, release.

    GPU backends also set :attr:`last_compute_ms` after each :meth:`infer`: the device time of the
    computation alone (CUDA events), beside the end-to-end time that includes copies and synchronisation.
    """

    def __init__(self, spec: RunnerSpec) -> None:
        self.spec = spec
        self.is_active = False
        self.last_compute_ms: float | None = None

    @property
    def name(self) -> str:
        return f"{self.spec.backend}:{self.spec.path}"

    @abc.abstractmethod
    def activate(self) -> None:
        """Load the model and allocate whatever inference needs."""

    @abc.abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; return the outputs in the model's output order."""

    @abc.abstractmethod
    def deactivate(self) -> None:
        """Release the model and its memory."""

    def __enter__(self) -> Runner:
        self.activate()
        self.is_active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()
        self.is_active = False
