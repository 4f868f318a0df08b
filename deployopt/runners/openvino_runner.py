"""OpenVINO runner: an ONNX file or an OpenVINO IR, compiled for the CPU with one infer request.

Compiled with the latency hint (one stream, all ``threads`` on one request — how ``verify`` and ``bench`` call
it) and an explicit inference precision: OpenVINO's CPU plugin otherwise runs fp32 models in bf16 on CPUs that
have AMX/AVX512-BF16, which would change an fp32 artifact's numbers behind the user's back.
"""

from __future__ import annotations

import numpy as np

from deployopt.errors import BackendUnavailableError, InputFileError
from deployopt.runners.base import Runner

# RunnerSpec.precision → OpenVINO's INFERENCE_PRECISION_HINT
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16"}


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(
            "openvino is not installed; pip install 'deployopt[openvino]' (or choose --runtime onnxruntime)"
        ) from exc
    return openvino


def cpu_capabilities() -> list[str]:
    """The precisions OpenVINO's CPU plugin runs natively on this CPU, e.g. ``['FP32', 'INT8', 'BIN', ...]``;
    FP16 appears only where the CPU computes in it (AVX512-FP16 / AMX-FP16)."""
    ov = import_openvino()
    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def compile_config(threads: int | None, precision: str) -> dict[str, str]:
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


class OpenVinoRunner(Runner):
    def activate(self) -> None:
        ov = import_openvino()
        core = ov.Core()
        try:
            model = core.read_model(self.spec.path)
            self._compiled = core.compile_model(model, "CPU", compile_config(self.spec.threads, self.spec.precision))
        except RuntimeError as exc:  # OpenVINO reports unreadable files and unsupported ops as RuntimeError
            message = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise InputFileError(
                f"{self.spec.path}: OpenVINO cannot load the model ({message.strip()}); "
                "check the file, or run it with --runtime onnxruntime"
            ) from exc
        ran_in = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        if ran_in != INFERENCE_PRECISION[self.spec.precision]:  # the plugin silently overrides a hint it cannot honour
            raise BackendUnavailableError(
                f"{self.spec.path}: OpenVINO's CPU plugin runs this model in {ran_in}, not {self.spec.precision} as "
                "asked; fp16 needs a CPU with AVX512-FP16 or AMX-FP16 (deployopt doctor lists what this one runs)"
            )
        self._request = self._compiled.create_infer_request()
        self._outputs = [(port, port.get_any_name()) for port in self._compiled.outputs]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._request.infer(feeds)
        # copies: the request reuses its output buffers on the next call
        return {name: np.array(results[port], copy=True) for port, name in self._outputs}

    def deactivate(self) -> None:
        self._request = self._compiled = None
