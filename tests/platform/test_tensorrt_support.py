"""Engine sidecars and the compatibility check that runs before TensorRT is asked to load an engine."""

from __future__ import annotations

import sys

import pytest

from deployopt.errors import BackendUnavailableError, InputFileError
from deployopt.platform.gpu import GpuInfo
from deployopt.platform.tensorrt import (
    EngineSidecar,
    check_compatible,
    has_builder_precision_flags,
    is_engine_file,
    read_sidecar,
    sidecar_path,
    version_tuple,
)
from deployopt.runners import RunnerSpec, create_runner, spec_for_model
from tests.fakes.fake_tensorrt import make_fake_tensorrt

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 79.1)
H200 = GpuInfo(0, "NVIDIA H200", "9.0", 139.8)
T4 = GpuInfo(0, "Tesla T4", "7.5", 15.0)


def sidecar(**changes) -> EngineSidecar:
    fields = {
        "tensorrt_version": "10.13.0.35",
        "gpu": H100,
        "source_onnx": "model.onnx",
        "source_sha256": "0" * 64,
        "source_precision": "fp16",
        "builder_flags": ["FP16"],
        "profiles": {"input": [[1, 1, 8, 8], [8, 1, 8, 8], [32, 1, 8, 8]]},
        "signature": [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32", "dim_values": {}}],
        "options": {},
        "engine_sha256": "1" * 64,
        "engine_bytes": 10,
        "build_seconds": 1.0,
    }
    return EngineSidecar(**(fields | changes))


def test_versions():
    assert version_tuple("10.13.0.35") == (10, 13, 0, 35)
    assert version_tuple("11.0.0rc1") == (11, 0, 0)
    with pytest.raises(ValueError):
        version_tuple("latest")
    assert has_builder_precision_flags("10.13.0.35") and not has_builder_precision_flags("11.0.0")


def test_same_version_and_gpu_is_compatible():
    check_compatible(sidecar(), "m.plan", "10.13.0.35", H100)
    check_compatible(sidecar(), "m.plan", "10.13.0.99", None)  # build number differences are the same release


def test_other_tensorrt_release_is_refused_naming_both_versions():
    with pytest.raises(BackendUnavailableError, match=r"built with TensorRT 10\.13\.0\.35.*has TensorRT 10\.14\.1"):
        check_compatible(sidecar(), "m.plan", "10.14.1.2", H100)


def test_version_compatible_engine_runs_on_newer_release_of_same_major_only():
    compatible = sidecar(version_compatible=True)
    check_compatible(compatible, "m.plan", "10.14.1.2", H100)
    for newer_major_or_older in ("11.0.0.1", "10.12.0.1"):
        with pytest.raises(BackendUnavailableError, match="version-compatible"):
            check_compatible(compatible, "m.plan", newer_major_or_older, H100)


def test_other_gpu_is_refused_naming_both_unless_hardware_compatible():
    with pytest.raises(BackendUnavailableError, match=r"built on NVIDIA H100 80GB HBM3 .*this GPU is NVIDIA H200"):
        check_compatible(sidecar(), "m.plan", "10.13.0.35", H200)
    check_compatible(sidecar(hardware_compat="same-compute-capability"), "m.plan", "10.13.0.35", H200)
    with pytest.raises(BackendUnavailableError, match=r"compute capability 7\.5"):
        check_compatible(sidecar(hardware_compat="same-compute-capability"), "m.plan", "10.13.0.35", T4)
    check_compatible(sidecar(hardware_compat="ampere-plus"), "m.plan", "10.13.0.35", H200)
    with pytest.raises(BackendUnavailableError, match=r"Ampere and newer.*Tesla T4"):
        check_compatible(sidecar(hardware_compat="ampere-plus"), "m.plan", "10.13.0.35", T4)


def test_sidecar_files(tmp_path):
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"engine")
    assert is_engine_file(engine) and not is_engine_file(tmp_path / "model.onnx")
    with pytest.raises(InputFileError, match=r"no sidecar model\.plan\.json"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(InputFileError, match="not a readable deployopt engine sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(sidecar().model_dump_json())
    assert read_sidecar(engine).gpu == H100
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(b"engine")
    sidecar_path(renamed).write_text(sidecar().model_dump_json())
    assert spec_for_model(str(renamed)).backend == "tensorrt"


def test_runner_refuses_a_mismatched_engine_before_loading_it(tmp_path, monkeypatch):
    """No GPU needed: the version check runs before CUDA or TensorRT touch the file."""
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"not really an engine")
    sidecar_path(engine).write_text(sidecar().model_dump_json())
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("11.1.0.4"))
    with pytest.raises(
        BackendUnavailableError, match=r"TensorRT 10\.13\.0\.35, but this machine has TensorRT 11\.1\.0\.4"
    ):
        create_runner(RunnerSpec("tensorrt", str(engine), device="cuda")).activate()


def test_verify_and_bench_on_an_engine_without_tensorrt_exit_5(run_cli, digits_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as if not installed
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"engine")
    sidecar_path(engine).write_text(sidecar().model_dump_json())
    code, _, err = run_cli("verify", digits_checkpoint, engine)
    assert code == 5 and "TensorRT's Python package is not installed" in err
    code, _, err = run_cli("bench", engine, "--batch-sizes", "1")
    assert code == 5 and "TensorRT's Python package is not installed" in err
