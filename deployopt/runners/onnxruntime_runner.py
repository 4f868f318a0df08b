"""ONNX Runtime runner with an explicit execution-provider list.

onnxruntime-gpu silently falls back to the CPU when CUDA is unusable; this runner checks
``session.get_providers()`` after creating the session and fails if the first requested provider is not
the one that is active.
"""

from __future__ import annotations

import numpy as np

from deployopt.errors import BackendUnavailableError, InputFileError, error_reason
from deployopt.runners.base import Runner


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnxruntime is not installed; install exactly one runtime: pip install 'deployopt[cpu]' "
            "(or 'deployopt[gpu]' for onnxruntime-gpu)"
        ) from exc
    return onnxruntime


class OnnxRuntimeRunner(Runner):
    def activate(self) -> None:
        ort = import_onnxruntime()
        requested = list(self.spec.providers)
        available = ort.get_available_providers()
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime provider(s) {missing} are not available in this onnxruntime build "
                f"(available: {available}); install the matching package or choose another provider"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # fatal only: every error ORT raises becomes deployopt's one-line message; its own log line is a second
        options.log_severity_level = 4
        if self.spec.threads:
            options.intra_op_num_threads = self.spec.threads
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(self.spec.path, options, providers=requested)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, NoSuchFile, ...)
            raise InputFileError(
                f"{self.spec.path}: ONNX Runtime cannot load the model ({error_reason(exc)}); "
                "check it with onnx.checker or re-export it"
            ) from exc
        active = self._session.get_providers()
        if not active or active[0] != requested[0]:
            raise BackendUnavailableError(
                f"ONNX Runtime did not activate {requested[0]} (active: {active}); it silently fell back — "
                "check the CUDA/cuDNN installation or request CPUExecutionProvider"
            )
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def active_providers(self) -> list[str]:
        return self._session.get_providers()

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(self._outputs, feeds)
        return dict(zip(self._outputs, results, strict=True))

    def deactivate(self) -> None:
        self._session = None
