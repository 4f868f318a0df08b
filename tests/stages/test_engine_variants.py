"""`build --target tensorrt` without a GPU: the pre-flight refusal, and the engine stages through the run
directory (cached per source graph, options and GPU), driven by the fake tensorrt module."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from deployopt.platform.gpu import GpuInfo
from deployopt.rundir import RunDirectory
from deployopt.sources.signature import Signature
from deployopt.stages.engine.build import EngineConfig
from tests.fakes.fake_tensorrt import make_fake_tensorrt

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 79.1)
H200 = GpuInfo(0, "NVIDIA H200", "9.0", 139.8)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend this GPU is present (in both modules that ask), with a fake TensorRT 10 installed."""
    current = {"gpu": H100}
    for module in ("deployopt.stages.engine.build", "deployopt.stages.engine.variants"):
        monkeypatch.setattr(f"{module}.require_cuda_gpu", lambda device="cuda": current["gpu"])
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.13.0.35"))
    return current


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_build_for_tensorrt_without_tensorrt_stops_before_any_work(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli("build", digits_checkpoint, "--target", "tensorrt", "-o", out, "--no-bench")
    assert code == 5
    assert "TensorRT's Python package is not installed" in err and "Traceback" not in err
    assert not out.exists()


def test_engine_stage_is_cached_per_graph_options_and_gpu(fake_gpu, digits_fp32, tmp_path):
    from deployopt.fsutil import sha256_file
    from deployopt.stages.engine.variants import make_engine

    signature = Signature.parse(["input:batch,1,8,8"])
    source_hash = sha256_file(digits_fp32)
    with RunDirectory(tmp_path / "run") as run:
        first = make_engine(run, "trt-fp16", digits_fp32, source_hash, signature, EngineConfig())
        assert first.path.name == "model-fp16.plan" and not first.stage["cached"]
        sidecar = json.loads((tmp_path / "run" / "model-fp16.plan.json").read_text())
        assert sidecar["gpu"]["name"] == H100.name and sidecar["profiles"]["input"][2] == [32, 1, 8, 8]
        assert "TensorRT 10.13.0.35 on NVIDIA H100" in first.stage["summary"]
        assert make_engine(run, "trt-fp16", digits_fp32, source_hash, signature, EngineConfig()).stage["cached"]
        assert not make_engine(run, "trt-fp16", digits_fp32, source_hash, signature, EngineConfig(max_batch=8)).stage[
            "cached"
        ]
        fake_gpu["gpu"] = H200
        assert not make_engine(run, "trt-fp16", digits_fp32, source_hash, signature, EngineConfig(max_batch=8)).stage[
            "cached"
        ]


def test_tensorrt_variants_make_a_symmetric_qdq_graph_and_an_engine_per_precision(fake_gpu, digits_fp32, tmp_path):
    import onnx

    from deployopt.data.eval_data import dataset_data
    from deployopt.flow.variants import QuantizedVariants
    from deployopt.fsutil import sha256_file
    from deployopt.measure.bench import BenchConfig
    from deployopt.measure.verify import Budget
    from deployopt.stages.engine.variants import tensorrt_variants

    signature = Signature.parse(["input:batch,1,8,8"])
    with RunDirectory(tmp_path / "run") as run:
        made = tensorrt_variants(
            run, digits_fp32, sha256_file(digits_fp32), digits_fp32, signature, QuantizedVariants(), "digits",
            dataset_data(signature, "digits", "test"), Budget(), BenchConfig(batch_sizes=(1,)), EngineConfig(),
            lambda message: None,
        )  # fmt: skip
    assert [name for name, _ in made] == ["onnx-int8-tensorrt", "trt-fp16", "trt-int8"]
    qdq = onnx.load_model(str(made[0][1].path))
    zero_points = [
        onnx.numpy_helper.to_array(init)
        for init in qdq.graph.initializer
        if init.name.endswith("zero_point") and init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    ]
    assert zero_points and all(z.dtype.name == "int8" and not z.any() for z in zero_points)  # S8S8, symmetric
    engine_flags = json.loads(made[2][1].path.read_bytes())["flags"]
    assert engine_flags == ["INT8", "FP16"]
