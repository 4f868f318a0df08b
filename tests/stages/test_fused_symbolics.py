"""Traced attention (PyTorch's fused fast paths) exports to standard ONNX and matches the traced model."""

import numpy as np
import onnx
import pytest
import torch

from deployopt.errors import StageError
from deployopt.sources.detect import SourceOptions, inspect_source
from deployopt.stages.export import ExportConfig, export_onnx
from tests.conftest import needs_torchvision


class _Attention(torch.nn.Module):
    def __init__(self, norm_first: bool, activation: str):
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(16, 4, batch_first=True)
        layer = torch.nn.TransformerEncoderLayer(
            16, 4, 32, batch_first=True, norm_first=norm_first, activation=activation
        )
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x):
        y, weights = self.attention(x, x, x)  # need_weights: the averaged weights are an output too
        return self.encoder(y), weights


class _MaskedAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x):
        padding = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
        padding[:, -1] = True
        return self.attention(x, x, x, key_padding_mask=padding, need_weights=False)[0]


def _trace(module: torch.nn.Module, example: torch.Tensor, path) -> set[str]:
    with torch.no_grad():
        traced = torch.jit.trace(module.eval(), example)
    traced.save(str(path))
    return {node.kind() for node in traced.inlined_graph.nodes()}


def _export_and_compare(path, input_spec: str, example: torch.Tensor, tmp_path) -> onnx.ModelProto:
    import onnxruntime as ort

    source = inspect_source(path, SourceOptions(inputs=(input_spec,)))
    out = tmp_path / "model.onnx"
    export_onnx(source, source.signature, out, ExportConfig())
    model = onnx.load(str(out))
    assert {n.domain for n in model.graph.node} <= {""}  # standard ONNX only: portable to any runtime
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    traced = torch.jit.load(str(path))
    for batch in (1, 3):  # the batch stays dynamic through the decomposition
        x = example[:1].repeat(batch, *([1] * (example.dim() - 1))) + torch.randn(batch, *example.shape[1:])
        with torch.no_grad():
            expected = traced(x)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        got = session.run(None, {"x": x.numpy()})
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-5)
    return model


@pytest.mark.parametrize(("norm_first", "activation"), [(False, "relu"), (True, "gelu")])
def test_traced_multi_head_attention_and_encoder_layers_export(norm_first, activation, tmp_path):
    torch.manual_seed(0)
    example = torch.randn(2, 5, 16)
    kinds = _trace(_Attention(norm_first, activation), example, tmp_path / "attention.pt")
    assert {"aten::_native_multi_head_attention", "aten::_transformer_encoder_layer_fwd"} <= kinds
    model = _export_and_compare(tmp_path / "attention.pt", "x:batch,5,16", example, tmp_path)
    ops = {n.op_type for n in model.graph.node}
    assert {"Softmax", "LayerNormalization", "MatMul"} <= ops
    assert ("Erf" in ops) == (activation == "gelu")


@needs_torchvision
def test_traced_vision_transformer_exports(tmp_path):
    """torchvision's ViT (vit_b_16's code at a test-sized width) as users ship it: traced under no_grad."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    example = torch.randn(2, 3, 32, 32)
    assert "aten::_native_multi_head_attention" in _trace(vit, example, tmp_path / "vit.pt")
    _export_and_compare(tmp_path / "vit.pt", "x:batch,3,32,32", example, tmp_path)


def test_masked_fused_attention_names_the_workaround(tmp_path):
    example = torch.randn(2, 5, 16)
    assert "aten::_native_multi_head_attention" in _trace(_MaskedAttention(), example, tmp_path / "masked.pt")
    source = inspect_source(tmp_path / "masked.pt", SourceOptions(inputs=("x:batch,5,16",)))
    with pytest.raises(StageError, match="set_fastpath_enabled"):
        export_onnx(source, source.signature, tmp_path / "m.onnx", ExportConfig())
