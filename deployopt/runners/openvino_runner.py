"""OpenVINO runner: an ONNX file or an OpenVINO IR, compiled for the CPU with one infer request.

Compiled with the latency hint (one stream, all ``threads`` on one request — how ``verify`` and ``bench`` call
it) and an explicit inference precision: OpenVINO's CPU plugin otherwise runs fp32 models in bf16 on CPUs that
have AMX/AVX512-BF16, which would change an fp32 artifact's numbers behind the user's back. A bf16 or fp16
artifact is compiled in that precision; layers its IR marks (``DisablePrecisionConversion``) stay in f32.
:func:`compile_config` is the one place those settings are made: the runner, the recommended load code and the
Triton config all take them from it.
"""

from __future__ import annotations

import numpy as np

from deployopt.errors import BackendUnavailableError, InputFileError, error_reason
from deployopt.runners.base import Runner

# RunnerSpec.precision → OpenVINO's INFERENCE_PRECISION_HINT; "default": OpenVINO's own choice (bf16 on CPUs
# with AMX-BF16/AVX512-BF16), what a user gets who loads a model without settings — the benchmarks' baseline
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "default": None}
# a low inference precision → (OpenVINO's OPTIMIZATION_CAPABILITIES entry, the CPU features that give it)
NATIVE_PRECISIONS = {"bf16": ("BF16", "AMX-BF16 or AVX512-BF16"), "fp16": ("FP16", "AVX512-FP16 or AMX-FP16")}


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
    BF16 appears with AMX-BF16/AVX512-BF16, FP16 only where the CPU computes in it (AVX512-FP16 / AMX-FP16)."""
    ov = import_openvino()
    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def native_precision_problem(precision: str) -> str | None:
    """None when OpenVINO's CPU plugin computes in ``precision`` (bf16, fp16) on this CPU; otherwise why not, in
    one line naming the CPU and its flags. Every decision to make, expect or refuse a bf16/fp16 OpenVINO artifact
    goes through here (the build, its tests, ``doctor``). Raises BackendUnavailableError without openvino."""
    from deployopt.platform.cpu import describe_cpu

    capability, needs = NATIVE_PRECISIONS[precision]
    capabilities = cpu_capabilities()
    if capability in capabilities:
        return None
    return (
        f"OpenVINO's CPU plugin computes in {precision} only on CPUs with {needs}; this one ({describe_cpu()}) "
        f"runs {', '.join(capabilities)}"
    )


def compile_config(threads: int | None, precision: str) -> dict[str, str]:
    """The compile settings of an artifact judged at ``precision`` (RunnerSpec.precision)."""
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if INFERENCE_PRECISION[precision] is not None:
        config["INFERENCE_PRECISION_HINT"] = INFERENCE_PRECISION[precision]
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
            raise InputFileError(
                f"{self.spec.path}: OpenVINO cannot load the model ({error_reason(exc)}); "
                "check the file, or run it with --runtime onnxruntime"
            ) from exc
        ran_in = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        asked = INFERENCE_PRECISION[self.spec.precision]
        if asked is not None and ran_in != asked:  # the plugin silently overrides a hint it cannot honour
            raise BackendUnavailableError(
                f"{self.spec.path}: OpenVINO's CPU plugin runs this model in {ran_in}, not {self.spec.precision} as "
                f"asked; {_why_not(self.spec.precision)}"
            )
        self._request = self._compiled.create_infer_request()
        self._outputs = [(port, port.get_any_name()) for port in self._compiled.outputs]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._request.infer(feeds)
        # copies: the request reuses its output buffers on the next call
        return {name: np.array(results[port], copy=True) for port, name in self._outputs}

    def deactivate(self) -> None:
        self._request = self._compiled = None


def _why_not(precision: str) -> str:
    problem = native_precision_problem(precision) if precision in NATIVE_PRECISIONS else None
    return problem or "deployopt doctor lists the precisions this CPU runs"
