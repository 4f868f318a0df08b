"""`build --target tensorrt` without a GPU: the pre-flight refusal, and the engine stages through the run
directory (cached per source graph, options and GPU), driven by the fake tensorrt module."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys

import pytest

from deployopt.platform.gpu import GpuInfo
from deployopt.rundir import RunDirectory
from deployopt.stages.engine.build import EngineConfig
from tests.fakes.fake_tensorrt import make_fake_tensorrt

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 79.1)
H200 = GpuInfo(0, "NVIDIA H200", "9.0", 139.8)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend this GPU is present (in both modules that ask), with a fake TensorRT 10 installed."""
    current = {"gpu": H100}
    for module in ("deployopt.stages.engine.build", "deployopt.stages.engine"):
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


def _context(run, fp32, config=None, engine=EngineConfig()):
    """A build context whose fp32 step is done: ``fp32`` is the onnx-fp32 (and onnx-fp16) artifact."""
    from deployopt.data.plan import DataPlan
    from deployopt.flow.build import BuildConfig
    from deployopt.fsutil import sha256_file
    from deployopt.sources.detect import inspect_source
    from deployopt.stages.base import Artifact, BuildContext

    config = config or BuildConfig()
    source = inspect_source(fp32)
    data = DataPlan(source.signature, config.data_sources(dataclasses.replace(source, dataset="digits")))
    ctx = BuildContext(run, source, source.signature, config, data, lambda message: None, engine=engine)
    for name in ("onnx-fp32", "onnx-fp16"):
        ctx.artifacts[name] = Artifact(fp32, sha256_file(fp32))
    return ctx


def test_engine_stage_is_cached_per_graph_options_and_gpu(fake_gpu, digits_fp32, tmp_path):
    from deployopt.stages.engine import EngineStep

    def build_engine(run, engine):
        ctx = _context(run, digits_fp32, engine=engine)
        EngineStep("trt-fp16", "onnx-fp16").run(ctx)
        return ctx

    with RunDirectory(tmp_path / "run") as run:
        first = build_engine(run, EngineConfig())
        assert first.artifacts["trt-fp16"].path.name == "model-fp16.plan" and not first.steps[0].cached
        sidecar = json.loads((tmp_path / "run" / "model-fp16.plan.json").read_text())
        assert sidecar["gpu"]["name"] == H100.name and sidecar["profiles"]["input"][2] == [32, 1, 8, 8]
        assert "TensorRT 10.13.0.35 on NVIDIA H100" in first.steps[0].summary
        assert build_engine(run, EngineConfig()).steps[0].cached
        assert not build_engine(run, EngineConfig(max_batch=8)).steps[0].cached
        fake_gpu["gpu"] = H200
        assert not build_engine(run, EngineConfig(max_batch=8)).steps[0].cached


def test_tensorrt_steps_make_a_symmetric_qdq_graph_and_an_engine_per_precision(fake_gpu, digits_fp32, tmp_path):
    import onnx

    from deployopt.flow.build import BuildConfig
    from deployopt.measure.bench import BenchConfig
    from deployopt.stages.engine import tensorrt_steps

    config = BuildConfig(bench=BenchConfig(batch_sizes=(1,)))
    with RunDirectory(tmp_path / "run") as run:
        ctx = _context(run, digits_fp32, config)
        for step in tensorrt_steps(make_int8=True):
            step.run(ctx)
    made = [(name, ctx.artifacts[name]) for name in ("onnx-int8-tensorrt", "trt-fp16", "trt-int8")]
    assert [s.stage for s in ctx.steps] == ["int8-tensorrt", "engine trt-fp16", "engine trt-int8"]
    qdq = onnx.load_model(str(made[0][1].path))
    zero_points = [
        onnx.numpy_helper.to_array(init)
        for init in qdq.graph.initializer
        if init.name.endswith("zero_point") and init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    ]
    assert zero_points and all(z.dtype.name == "int8" and not z.any() for z in zero_points)  # S8S8, symmetric
    engine_flags = json.loads(made[2][1].path.read_bytes())["flags"]
    assert engine_flags == ["INT8", "FP16"]
