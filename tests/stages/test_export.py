"""The export stage on real models: dynamic batch, exporter choice and fallback, readable failures."""

import numpy as np
import onnx
import pytest
import torch

from deployopt.errors import StageError, UsageError
from deployopt.sources.detect import SourceOptions, inspect_source
from deployopt.stages.export import ExportConfig, export_onnx
from tests.conftest import needs_torchvision


class _Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum().item() > 0:  # data-dependent branch: torch.export refuses, tracing takes one path
            return x * 2
        return x - 1


@torch.library.custom_op("deployopt_test::mystery", mutates_args=())
def _mystery(x: torch.Tensor) -> torch.Tensor:
    return x * 3


@_mystery.register_fake
def _(x):
    return torch.empty_like(x)


class _UsesCustomOp(torch.nn.Module):
    def forward(self, x):
        return torch.ops.deployopt_test.mystery(x) + 1


def _ort_outputs(path, batch):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 1, 8, 8)).astype(np.float32)
    return x, session.run(None, {"input": x})[0]


def test_checkpoint_exports_with_dynamo_and_dynamic_batch(digits_checkpoint, digits_module, tmp_path, capfd):
    source = inspect_source(digits_checkpoint)
    out = tmp_path / "m.onnx"
    result = export_onnx(source, source.signature, out, ExportConfig())
    assert result.exporter == "dynamo" and result.fallback_reason is None and result.opset == 18
    model = onnx.load(str(out))
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # the batch axis is symbolic
    assert len(model.graph.initializer) > 0 and not any(i.data_location for i in model.graph.initializer)
    for batch in (1, 7):
        x, y = _ort_outputs(out, batch)
        with torch.inference_mode():
            expected = digits_module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(y, expected, atol=1e-4)
    captured = capfd.readouterr()
    assert "[torch.onnx]" not in captured.out + captured.err  # exporter chatter stays out of the terminal
    assert "[torch.onnx]" in result.log  # ... and is kept for the run directory's log


def test_torchscript_archive_uses_the_torchscript_exporter(digits_torchscript, tmp_path):
    source = inspect_source(digits_torchscript, SourceOptions(inputs=("input:batch,1,8,8",)))
    result = export_onnx(source, source.signature, tmp_path / "ts.onnx", ExportConfig())
    assert result.exporter == "torchscript"
    _, y = _ort_outputs(tmp_path / "ts.onnx", 3)
    assert y.shape == (3, 10)


def test_explicit_exporter_choice_is_honoured(digits_checkpoint, tmp_path):
    source = inspect_source(digits_checkpoint)
    result = export_onnx(source, source.signature, tmp_path / "m.onnx", ExportConfig(exporter="torchscript"))
    assert result.exporter == "torchscript"


def test_export_fallback_is_recorded_when_torch_export_fails(tmp_path):
    """A model with data-dependent Python control flow defeats torch.export; the TorchScript exporter traces it."""
    path = tmp_path / "branchy.pt"
    torch.save(_Branchy(), path)
    source = inspect_source(path, SourceOptions(trust_pickle=True, inputs=("x:batch,4",)))
    result = export_onnx(source, source.signature, tmp_path / "b.onnx", ExportConfig())
    assert result.exporter == "torchscript"
    assert result.fallback_reason.startswith("dynamo exporter failed")


def test_unsupported_operator_is_named(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save(_UsesCustomOp(), path)
    source = inspect_source(path, SourceOptions(trust_pickle=True, inputs=("x:batch,4",)))
    with pytest.raises(StageError, match="unsupported operator deployopt_test::mystery"):
        export_onnx(source, source.signature, tmp_path / "c.onnx", ExportConfig())


def test_wrong_input_shape_is_reported_before_export(digits_checkpoint, tmp_path):
    source = inspect_source(digits_checkpoint, SourceOptions(inputs=("input:batch,3,8,8",)))
    with pytest.raises(UsageError, match="check the --input shapes"):
        export_onnx(source, source.signature, tmp_path / "m.onnx", ExportConfig())


@needs_torchvision
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision_architectures_export_and_match(arch, tmp_path):
    import onnxruntime as ort
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / f"{arch}.pth"
    model = torchvision.models.get_model(arch, weights=None).eval()
    torch.save(model.state_dict(), path)
    source = inspect_source(path, SourceOptions(arch=f"torchvision:{arch}", inputs=("input:batch,3,64,64",)))
    result = export_onnx(source, source.signature, tmp_path / "m.onnx", ExportConfig())
    assert result.exporter == "dynamo"
    x = torch.randn(2, 3, 64, 64)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = model(x).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-3, rtol=1e-3)
