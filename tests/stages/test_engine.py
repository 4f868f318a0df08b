"""Engine stage logic without a GPU: profiles, options, TensorRT 10-vs-11 branching, parser and builder
errors, timing cache and sidecar, driven through a fake ``tensorrt`` module (tests/fakes)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from deployopt.errors import StageError, UsageError
from deployopt.platform.gpu import GpuInfo
from deployopt.sources.signature import Signature
from deployopt.stages.engine.build import EngineConfig, build_engine, builder_flag_names, compute_profiles, parse_size
from tests.fakes.fake_tensorrt import make_fake_tensorrt

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 79.1)


@pytest.fixture
def fake_trt(monkeypatch):
    """Install a fake tensorrt module (version and failures chosen per test) and pretend an H100 is present."""
    monkeypatch.setattr("deployopt.stages.engine.build.require_cuda_gpu", lambda device="cuda": H100)

    def install(version: str = "10.13.0.35", **behaviour):
        module = make_fake_tensorrt(version, **behaviour)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        return module

    return install


@pytest.fixture(scope="module")
def digits_fp16(digits_fp32, tmp_path_factory):
    from deployopt.stages.fp16 import Fp16Config, convert_fp16

    path = tmp_path_factory.mktemp("engine") / "digits-fp16.onnx"
    convert_fp16(digits_fp32, path, Fp16Config())
    return path


def test_default_profile_is_batch_1_opt_max_from_the_signature(digits_signature):
    profiles = compute_profiles(digits_signature, EngineConfig(max_batch=64))
    assert profiles == {"input": ((1, 1, 8, 8), (8, 1, 8, 8), (64, 1, 8, 8))}
    assert compute_profiles(digits_signature, EngineConfig(max_batch=4))["input"][1] == (4, 1, 8, 8)


def test_default_profile_uses_typical_values_of_other_dynamic_dims():
    signature = Signature.parse(["input_ids:batch,seq=128:int64", "attention_mask:batch,seq=128:int64"])
    profiles = compute_profiles(signature, EngineConfig(opt_batch=2, max_batch=16))
    assert profiles["input_ids"] == ((1, 1), (2, 128), (16, 128))
    no_typical = Signature.parse(["x:batch,seq"])
    with pytest.raises(UsageError, match="--shapes x:MIN/OPT/MAX"):
        compute_profiles(no_typical, EngineConfig())


def test_shape_override_replaces_the_default(digits_signature):
    config = EngineConfig(shapes=("input:2x1x8x8/16x1x8x8/256x1x8x8",))
    assert compute_profiles(digits_signature, config)["input"] == ((2, 1, 8, 8), (16, 1, 8, 8), (256, 1, 8, 8))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image:1x1x8x8/1x1x8x8/1x1x8x8", "no input 'image'.*inputs: input"),
        ("input:1x1x8x8/8x1x8x8", "NAME:MIN/OPT/MAX"),
        ("input:1x1x8/8x1x8x8/9x1x8x8", "MIN .* does not fit"),
        ("input:1x3x8x8/8x3x8x8/9x3x8x8", "does not fit input input:batch,1,8,8"),
        ("input:8x1x8x8/1x1x8x8/9x1x8x8", "MIN ≤ OPT ≤ MAX"),
        ("input:ax1x8x8/1x1x8x8/9x1x8x8", "not a shape"),
    ],
)
def test_bad_shape_overrides_name_the_problem(digits_signature, text, message):
    with pytest.raises(UsageError, match=message):
        compute_profiles(digits_signature, EngineConfig(shapes=(text,)))


def test_option_validation():
    assert parse_size("4GiB") == 4 * 2**30 and parse_size("512M") == 512 * 2**20 and parse_size("1000") == 1000
    with pytest.raises(UsageError, match="not a size"):
        parse_size("lots")
    with pytest.raises(ValueError, match="not a size"):
        EngineConfig(workspace="four gigs")
    with pytest.raises(ValueError, match="min_batch ≤ opt_batch ≤ max_batch"):
        EngineConfig(opt_batch=64, max_batch=32)
    with pytest.raises(ValueError):
        EngineConfig(opt_level=9)
    with pytest.raises(ValueError):
        EngineConfig(device="cpu")


def test_precision_flags_only_on_tensorrt_10():
    plain = EngineConfig()
    assert builder_flag_names("10.13.0.35", "fp16", plain) == ["FP16"]
    assert builder_flag_names("10.13.0.35", "int8", plain) == ["INT8", "FP16"]
    assert builder_flag_names("10.13.0.35", "fp32", plain) == []
    for precision in ("fp32", "fp16", "int8"):
        assert builder_flag_names("11.1.0.4", precision, plain) == []
    both = EngineConfig(sparse_weights=True, version_compatible=True)
    assert builder_flag_names("11.1.0.4", "int8", both) == ["SPARSE_WEIGHTS", "VERSION_COMPATIBLE"]


def _built(path):
    return json.loads(path.read_bytes())


def test_tensorrt_10_build_sets_flags_profile_workspace_and_writes_the_sidecar(fake_trt, digits_fp16, tmp_path):
    fake_trt("10.13.0.35")
    out = tmp_path / "digits.plan"
    config = EngineConfig(workspace="1GiB", opt_level=5, hardware_compat="ampere-plus", max_batch=64)
    sidecar = build_engine(digits_fp16, out, Signature.parse(["input:batch,1,8,8"]), config)
    built = _built(out)
    assert built["flags"] == ["FP16"]
    assert built["pools"] == {"WORKSPACE": 2**30}
    assert built["profiles"] == [{"input": [[1, 1, 8, 8], [8, 1, 8, 8], [64, 1, 8, 8]]}]
    assert built["opt_level"] == 5 and built["hardware_compat"] == "AMPERE_PLUS"
    assert sidecar.tensorrt_version == "10.13.0.35" and sidecar.gpu == H100
    assert sidecar.source_precision == "fp16" and sidecar.builder_flags == ["FP16"]
    assert sidecar.engine_bytes == out.stat().st_size and sidecar.created
    assert sidecar.profiles == {"input": [[1, 1, 8, 8], [8, 1, 8, 8], [64, 1, 8, 8]]}


def test_tensorrt_11_build_takes_precision_from_the_graph_alone(fake_trt, digits_fp16, tmp_path):
    """The fake 11.x has no FP16/INT8 flags at all: touching them would raise AttributeError."""
    fake_trt("11.1.0.4")
    out = tmp_path / "digits.plan"
    sidecar = build_engine(digits_fp16, out, Signature.parse(["input:batch,1,8,8"]), EngineConfig(sparse_weights=True))
    assert _built(out)["flags"] == ["SPARSE_WEIGHTS"]
    assert sidecar.builder_flags == ["SPARSE_WEIGHTS"] and sidecar.source_precision == "fp16"


def test_parser_errors_name_the_onnx_node(fake_trt, digits_fp32, tmp_path):
    import onnx

    first = onnx.load_model(str(digits_fp32)).graph.node[0]
    fake_trt(parse_errors=[("Unsupported operator", 0)])
    with pytest.raises(StageError, match=rf"node '{first.name}' \({first.op_type}\): Unsupported operator"):
        build_engine(digits_fp32, tmp_path / "x.plan", Signature.parse(["input:batch,1,8,8"]))
    assert not (tmp_path / "x.plan").exists()


def test_builder_failure_reports_tensorrt_s_reason(fake_trt, digits_fp32, tmp_path):
    fake_trt(build_fails=True)
    with pytest.raises(StageError, match="could not build an engine: Error Code 4: out of workspace"):
        build_engine(digits_fp32, tmp_path / "x.plan", Signature.parse(["input:batch,1,8,8"]))


def test_timing_cache_is_read_and_updated(fake_trt, digits_fp32, tmp_path):
    fake_trt()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"previous")
    build_engine(
        digits_fp32, tmp_path / "a.plan", Signature.parse(["input:batch,1,8,8"]), EngineConfig(timing_cache=cache)
    )
    assert cache.read_bytes() == b"previous+tuned"


def test_api_engine_writes_engine_and_sidecar_next_to_it(fake_trt, digits_fp32, tmp_path):
    from deployopt.api import engine
    from deployopt.platform.tensorrt import read_sidecar

    fake_trt()
    out = tmp_path / "digits.plan"
    engine(digits_fp32, out)
    sidecar = read_sidecar(out)
    assert sidecar.signature[0]["name"] == "input" and sidecar.source_precision == "fp32"
    assert (tmp_path / "digits.plan.json").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_engine_without_tensorrt_exits_5_naming_the_package(run_cli, digits_fp32, tmp_path):
    code, _, err = run_cli("engine", digits_fp32, "-o", tmp_path / "x.plan")
    assert code == 5
    assert "TensorRT's Python package is not installed" in err and "pypi.nvidia.com" in err
    assert "Traceback" not in err and not (tmp_path / "x.plan").exists()


def test_engine_without_a_gpu_exits_5_naming_what_is_missing(monkeypatch, run_cli, digits_fp32, tmp_path):
    from deployopt.platform import gpu

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt())
    monkeypatch.setattr(gpu, "cuda_problem", lambda: "no NVIDIA driver is loaded on this machine")
    code, _, err = run_cli("engine", digits_fp32, "-o", tmp_path / "x.plan")
    assert code == 5 and "no usable CUDA GPU: no NVIDIA driver" in err


def test_engine_refuses_pytorch_input(run_cli, digits_checkpoint, tmp_path):
    code, _, err = run_cli("engine", digits_checkpoint, "-o", tmp_path / "x.plan")
    assert code == 3 and "engine takes ONNX" in err


def test_bad_engine_options_exit_2(run_cli, digits_fp32):
    code, _, err = run_cli("engine", digits_fp32, "--opt-batch", "64", "--max-batch", "8")
    assert code == 2 and "opt_batch" in err
