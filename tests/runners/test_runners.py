"""Both runners behind the one interface, and the loud failure when a provider is not active."""

import numpy as np
import pytest

from deployopt.data.eval_data import generate_data
from deployopt.errors import BackendUnavailableError, InputFileError, UsageError
from deployopt.runners import RunnerSpec, create_runner, spec_for_model


def test_torch_and_onnxruntime_runners_agree(digits_checkpoint, digits_onnx, digits_signature):
    feeds = generate_data(digits_signature, 6).inputs
    outputs = []
    for spec in (spec_for_model(str(digits_checkpoint)), spec_for_model(str(digits_onnx))):
        runner = create_runner(spec)
        with runner as active:
            assert active.is_active
            result = active.infer(feeds)
        assert not runner.is_active
        assert list(result) == ["output"] and result["output"].shape == (6, 10)
        outputs.append(result["output"])
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-4)


def test_backend_is_chosen_from_content(digits_checkpoint, digits_onnx):
    assert spec_for_model(str(digits_checkpoint)).backend == "torch"
    assert spec_for_model(str(digits_onnx)).backend == "onnxruntime"


def test_requested_provider_that_is_not_available_fails_loudly(digits_onnx):
    spec = RunnerSpec("onnxruntime", str(digits_onnx), providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"), create_runner(spec):
        pass


def test_silent_provider_fallback_is_detected(digits_onnx, monkeypatch):
    """onnxruntime-gpu without a usable GPU creates the session on CPU; the runner must refuse it."""
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    real_session = onnxruntime.InferenceSession

    def falls_back(path, options, providers):
        return real_session(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(onnxruntime, "InferenceSession", falls_back)
    spec = RunnerSpec("onnxruntime", str(digits_onnx), providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    with pytest.raises(BackendUnavailableError, match="silently fell back"), create_runner(spec):
        pass


def test_threads_are_applied(digits_onnx):
    with create_runner(RunnerSpec("onnxruntime", str(digits_onnx), threads=1)) as runner:
        assert runner.active_providers == ["CPUExecutionProvider"]


def test_onnx_runtime_rejecting_a_model_names_the_file(tmp_path, digits_onnx):
    import onnx

    model = onnx.load(str(digits_onnx))
    model.graph.node[0].op_type = "NoSuchOp"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with (
        pytest.raises(InputFileError, match="ONNX Runtime cannot load"),
        create_runner(RunnerSpec("onnxruntime", str(bad))),
    ):
        pass


def test_unknown_backend():
    with pytest.raises(UsageError, match="unknown backend"):
        create_runner(RunnerSpec("tensorflow", "x"))
