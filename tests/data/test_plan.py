"""The one data resolver: its precedence, and each source loaded once however many steps ask."""

from __future__ import annotations

import numpy as np
import pytest

import deployopt.data.plan as plan_module
from deployopt.data.plan import DataPlan, DataSources
from deployopt.errors import UsageError
from deployopt.sources.signature import Signature

SIGNATURE = Signature.parse(["input:batch,1,8,8"])


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    data, calib = tmp_path / "data.npz", tmp_path / "calib.npz"
    np.savez(data, input=rng.standard_normal((10, 1, 8, 8)).astype(np.float32), labels=np.arange(10) % 3)
    np.savez(calib, input=rng.standard_normal((200, 1, 8, 8)).astype(np.float32))
    return data, calib


def test_verification_precedence(files):
    data, calib = files

    def origin(**sources):
        return DataPlan(SIGNATURE, DataSources(**sources)).verification.origin

    assert origin(data=data, dataset="digits", calibration=calib) == str(data)
    assert origin(dataset="digits", calibration=calib) == "dataset:digits/test"
    from_calibration = DataPlan(SIGNATURE, DataSources(calibration=calib, samples=64, calibration_samples=100))
    assert from_calibration.verification.origin == str(calib) and from_calibration.verification.num_samples == 100
    generated = DataPlan(SIGNATURE, DataSources(samples=7)).verification
    assert generated.origin.startswith("generated") and generated.num_samples == 7


def test_calibration_precedence(files):
    _, calib = files
    assert DataPlan(SIGNATURE, DataSources(calibration=calib, dataset="digits")).calibration.origin == str(calib)
    assert DataPlan(SIGNATURE, DataSources(dataset="digits")).calibration.origin == "dataset:digits/val"
    assert DataPlan(SIGNATURE, DataSources()).calibration is None


def test_each_source_is_loaded_once(files, monkeypatch):
    _, calib = files
    calls = []
    real = plan_module.load_calibration
    monkeypatch.setattr(plan_module, "load_calibration", lambda *a: calls.append(a) or real(*a))
    plan = DataPlan(SIGNATURE, DataSources(calibration=calib, calibration_samples=32))
    for _ in range(3):  # the int8 step, the TensorRT int8 step and verification all ask
        assert plan.calibration.num_samples == 32
        assert plan.verification.num_samples == 64
    assert len(calls) == 1
    np.testing.assert_array_equal(plan.calibration.inputs["input"], plan.verification.inputs["input"][:32])


def test_labels_without_data_are_refused(files):
    data, _ = files
    with pytest.raises(UsageError, match="--labels needs --data"):
        DataPlan(SIGNATURE, DataSources(labels=data))
