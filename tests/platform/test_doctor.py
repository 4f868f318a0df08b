"""`deployopt doctor` says which backends work here and why the others do not."""

from __future__ import annotations

import importlib.util

from deployopt.platform import doctor


def test_doctor_lists_every_backend_with_a_reason(run_cli):
    code, out, _ = run_cli("doctor")
    assert code == 0
    names = [line.split()[1] for line in out.splitlines()]
    assert names == [
        "deployopt",
        "cpu",
        "pytorch",
        "cuda-gpu",
        "onnxruntime",
        "onnxruntime-cuda",
        "onnxruntime-tensorrt",
        "openvino",
        *(["openvino-bf16", "openvino-fp16"] if importlib.util.find_spec("openvino") else []),
        "tensorrt",
    ]
    checks = {c.name: c for c in doctor.diagnose()}
    assert checks["onnxruntime"].usable and "CPUExecutionProvider" in checks["onnxruntime"].detail
    if importlib.util.find_spec("tensorrt") is None:
        assert not checks["tensorrt"].usable and "not installed" in checks["tensorrt"].detail


def test_doctor_flags_both_onnxruntime_packages_installed(monkeypatch):
    versions = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}
    monkeypatch.setattr(doctor, "_installed", versions.get)
    check = doctor._onnxruntime_checks(gpu_usable=False)[0]
    assert not check.usable and "both onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1" in check.detail


def test_doctor_says_a_gpu_provider_would_fall_back_without_a_gpu(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(doctor, "_installed", {"onnxruntime-gpu": "1.31.1"}.get)
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    checks = {c.name: c for c in doctor._onnxruntime_checks(gpu_usable=False)}
    assert not checks["onnxruntime-cuda"].usable and "would fall back" in checks["onnxruntime-cuda"].detail
    checks = {c.name: c for c in doctor._onnxruntime_checks(gpu_usable=True)}
    assert checks["onnxruntime-cuda"].usable
