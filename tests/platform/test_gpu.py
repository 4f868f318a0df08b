"""GPU paths, run wherever a CUDA GPU (and, for engines, TensorRT) exists; skipped with the reason elsewhere.

Everything here goes through the same API as the CPU tests: a GPU candidate is verified against the
CPU PyTorch reference, and benchmarks report device compute time beside end-to-end latency.
"""

from __future__ import annotations

import importlib.util

import pytest

from deployopt.platform.gpu import cuda_problem
from tests.conftest import needs_torchvision

CUDA_PROBLEM = cuda_problem()
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(CUDA_PROBLEM is not None, reason=f"no CUDA GPU: {CUDA_PROBLEM}")]
needs_tensorrt = pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT's Python package is not installed")


def _ort_cuda_problem() -> str | None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return f"onnxruntime {onnxruntime.__version__} here has no CUDAExecutionProvider (install deployopt[gpu])"
    return None


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_pytorch_on_the_gpu_matches_the_cpu_reference(digits_checkpoint, precision):
    from deployopt.api import RuntimeOptions, VerifyConfig, verify_models

    result = verify_models(
        digits_checkpoint,
        digits_checkpoint,
        config=VerifyConfig(),
        runtime=RuntimeOptions(device="cuda", torch_precision=precision),
    )
    assert result.passed, result.failures
    assert result.candidate_accuracy is not None and result.candidate_accuracy >= result.reference_accuracy - 1.0


def test_gpu_bench_reports_device_time_beside_end_to_end(digits_checkpoint):
    from deployopt.api import BenchConfig, RuntimeOptions, bench_models

    measurements = bench_models(
        [digits_checkpoint],
        config=BenchConfig(batch_sizes=(1, 64), min_seconds=0.2),
        runtime=RuntimeOptions(device="cuda"),
    )
    assert [m.batch for m in measurements] == [1, 64]
    for m in measurements:
        assert m.gpu_p50_ms is not None and 0 < m.gpu_p50_ms <= m.p50_ms


def test_onnxruntime_cuda_provider_is_active_or_refused_loudly(digits_onnx):
    from deployopt.api import RuntimeOptions, verify_models
    from deployopt.errors import BackendUnavailableError

    problem = _ort_cuda_problem()
    if problem is not None:
        with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
            verify_models(digits_onnx, digits_onnx, runtime=RuntimeOptions(provider="cuda"))
        pytest.skip(problem)
    assert verify_models(digits_onnx, digits_onnx, runtime=RuntimeOptions(provider="cuda")).passed


@pytest.fixture(scope="module")
def digits_int8_tensorrt(digits_fp32, tmp_path_factory):
    from deployopt.api import Int8Config, QuantizeData, quantize

    path = tmp_path_factory.mktemp("trt") / "digits-int8-qdq.onnx"
    quantize(digits_fp32, path, int8=Int8Config(target="tensorrt"), data=QuantizeData(dataset="digits"))
    return path


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_engine_for_digits_builds_verifies_and_benchmarks(
    precision, digits_checkpoint, digits_fp32, digits_int8_tensorrt, tmp_path
):
    from deployopt.api import BenchConfig, Fp16Config, bench_models, engine, verify_models
    from deployopt.stages.fp16 import convert_fp16

    onnx_path = digits_int8_tensorrt
    if precision == "fp16":
        onnx_path = tmp_path / "digits-fp16.onnx"
        convert_fp16(digits_fp32, onnx_path, Fp16Config())
    plan = tmp_path / f"digits-{precision}.plan"
    sidecar = engine(onnx_path, plan)
    assert sidecar.source_precision == precision
    result = verify_models(digits_checkpoint, plan)
    assert result.passed, result.failures
    (m,) = bench_models([plan], config=BenchConfig(batch_sizes=(32,), min_seconds=0.2))
    assert m.gpu_p50_ms is not None and m.throughput > 0


@needs_tensorrt
@needs_torchvision
def test_tensorrt_resnet18_fp16_engine_verifies(tmp_path):
    import torch
    import torchvision

    from deployopt.api import SourceOptions, engine, export, verify_models
    from deployopt.api import quantize as run_quantize
    from deployopt.stages.fp16 import Fp16Config

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().eval().state_dict(), weights)
    options = SourceOptions(arch="torchvision:resnet18", inputs=("input:batch,3,224,224",))
    export(weights, tmp_path / "r18.onnx", options)
    run_quantize(tmp_path / "r18.onnx", tmp_path / "r18-fp16.onnx", fp16=Fp16Config())
    engine(tmp_path / "r18-fp16.onnx", tmp_path / "r18.plan")
    assert verify_models(weights, tmp_path / "r18.plan", options).passed


@needs_tensorrt
def test_build_for_tensorrt_verifies_and_benchmarks_the_engines(digits_checkpoint, tmp_path):
    from deployopt.api import BenchConfig, BuildConfig, build

    config = BuildConfig(out=tmp_path / "run", target="tensorrt", bench=BenchConfig(batch_sizes=(1, 32)))
    report = build(digits_checkpoint, config)
    assert report.passed, report.failures
    for name in ("trt-fp16", "trt-int8"):
        variant = report.variant(name)
        assert variant is not None and variant.latency[32]["gpu_p50_ms"] > 0
        assert variant.accuracy >= report.variants[0].accuracy - 1.0
