"""``deployopt doctor``: which backends, providers and GPU paths are usable on this machine, and why not.

Each check imports its library in isolation and reports the reason it is unusable in one line, so a
user sees at once that (say) TensorRT is missing while ONNX Runtime CPU works.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from dataclasses import asdict, dataclass

from deployopt import __version__


@dataclass(frozen=True)
class Check:
    name: str
    usable: bool
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_checks() -> list[Check]:
    from deployopt.platform.gpu import cuda_problem, require_cuda_gpu

    try:
        import torch
    except ImportError as exc:
        return [Check("pytorch", False, f"not importable: {exc}")]
    checks = [Check("pytorch", True, f"{torch.__version__} (CUDA build: {torch.version.cuda or 'no'})")]
    problem = cuda_problem()
    if problem:
        checks.append(Check("cuda-gpu", False, problem))
    else:
        gpu = require_cuda_gpu()
        checks.append(
            Check("cuda-gpu", True, f"{gpu.name}, compute capability {gpu.compute_capability}, {gpu.memory_gib} GiB")
        )
    return checks


def _onnxruntime_checks(gpu_usable: bool) -> list[Check]:
    cpu_dist, gpu_dist = _installed("onnxruntime"), _installed("onnxruntime-gpu")
    if cpu_dist and gpu_dist:
        return [
            Check(
                "onnxruntime",
                False,
                f"both onnxruntime {cpu_dist} and onnxruntime-gpu {gpu_dist} are installed and overwrite each "
                "other; uninstall both and install one extra: deployopt[cpu] or deployopt[gpu]",
            )
        ]
    try:
        import onnxruntime
    except ImportError as exc:
        return [Check("onnxruntime", False, f"not installed ({exc}); pip install 'deployopt[cpu]' or '[gpu]'")]
    providers = onnxruntime.get_available_providers()
    checks = [Check("onnxruntime", True, f"{onnxruntime.__version__}, providers: {', '.join(providers)}")]
    for provider, label in (
        ("CUDAExecutionProvider", "onnxruntime-cuda"),
        ("TensorrtExecutionProvider", "onnxruntime-tensorrt"),
    ):
        if provider not in providers:
            checks.append(Check(label, False, f"{provider} is not in this build (install deployopt[gpu])"))
        elif not gpu_usable:
            checks.append(Check(label, False, f"{provider} is built in but there is no usable GPU; it would fall back"))
        else:
            checks.append(Check(label, True, f"{provider} available (activation is checked per session)"))
    return checks


def _tensorrt_check(gpu_usable: bool) -> Check:
    from deployopt.errors import BackendUnavailableError
    from deployopt.platform.tensorrt import import_tensorrt

    try:
        trt = import_tensorrt()
    except BackendUnavailableError as exc:
        return Check("tensorrt", False, str(exc))
    if not gpu_usable:
        return Check("tensorrt", False, f"TensorRT {trt.__version__} is installed but there is no usable GPU")
    return Check("tensorrt", True, f"TensorRT {trt.__version__}")


def _openvino_checks() -> list[Check]:
    """OpenVINO's CPU plugin, the precisions it runs natively here, and whether build makes its bf16 and fp16
    variants on this CPU (the build's own decision: BF16 with AMX-BF16/AVX512-BF16, FP16 with
    AVX512-FP16/AMX-FP16)."""
    from deployopt.errors import BackendUnavailableError
    from deployopt.runners.openvino_runner import (
        NATIVE_PRECISIONS,
        cpu_capabilities,
        import_openvino,
        native_precision_problem,
    )

    try:
        ov = import_openvino()
    except BackendUnavailableError as exc:
        return [Check("openvino", False, str(exc))]
    checks = [Check("openvino", True, f"{ov.__version__}, CPU runs: {', '.join(cpu_capabilities())}")]
    for precision in NATIVE_PRECISIONS:
        problem = native_precision_problem(precision)
        detail = problem or f"build makes openvino-{precision}: the CPU computes in {precision}"
        checks.append(Check(f"openvino-{precision}", problem is None, detail))
    return checks


def diagnose() -> list[Check]:
    """Every check, in the order a user needs them: Python and CPU, PyTorch and GPU, ONNX Runtime, OpenVINO,
    TensorRT."""
    from deployopt.platform.cpu import describe_cpu

    checks = [Check("deployopt", True, f"{__version__} on Python {sys.version.split()[0]}, {platform.platform()}")]
    checks.append(Check("cpu", True, describe_cpu()))
    checks += _torch_checks()
    gpu_usable = any(c.name == "cuda-gpu" and c.usable for c in checks)
    checks += _onnxruntime_checks(gpu_usable)
    checks += _openvino_checks()
    checks.append(_tensorrt_check(gpu_usable))
    return checks
