"""ONNX translations for PyTorch's fused inference fast paths, which the TorchScript exporter lacks.

``torch.jit.trace`` under ``no_grad`` records what eval-mode modules actually run, and for attention that
is a fused kernel: ``nn.MultiheadAttention`` becomes ``aten::_native_multi_head_attention`` and
``nn.TransformerEncoderLayer`` becomes ``aten::_transformer_encoder_layer_fwd`` (torchvision's ViT and
every ``nn.TransformerEncoder`` users trace). Both are decomposed here into standard ONNX ops (MatMul,
Softmax, LayerNormalization, Erf), the same maths the unfused modules run. Attention masks are not
translated: a traced model with one gets an error naming the workaround.
"""

from __future__ import annotations

import math
from typing import Any

MASK_WORKAROUND = "trace the model with torch.backends.mha.set_fastpath_enabled(False), or save its state_dict instead"
_registered: set[int] = set()


def register_fused_symbolics(opset: int) -> None:
    """Make the TorchScript exporter translate the fused attention ops (idempotent per opset)."""
    import torch

    if opset in _registered:
        return
    torch.onnx.register_custom_op_symbolic("aten::_native_multi_head_attention", _native_mha, opset)
    torch.onnx.register_custom_op_symbolic("aten::_transformer_encoder_layer_fwd", _encoder_layer, opset)
    _registered.add(opset)


def _const(g: Any, values: list[int] | list[float], dtype: Any = None) -> Any:
    import torch

    return g.op("Constant", value_t=torch.tensor(values, dtype=dtype or torch.int64))


def _int(value: Any) -> int:
    from torch.onnx import symbolic_helper

    return int(symbolic_helper._maybe_get_const(value, "i"))


def _require_no_mask(mask: Any, op: str) -> None:
    from torch.onnx import errors, symbolic_helper

    if not symbolic_helper._is_none(mask):
        raise errors.SymbolicValueError(f"{op} with an attention mask is not translated; {MASK_WORKAROUND}", mask)


def _linear(g: Any, x: Any, weight: Any, bias: Any) -> Any:
    """x @ weight.T + bias, as nn.Linear computes it."""
    return g.op("Add", g.op("MatMul", x, g.op("Transpose", weight, perm_i=[1, 0])), bias)


def _attention(g: Any, query: Any, key: Any, value: Any, embed_dim: int, heads: int, qkv_w: Any, qkv_b: Any):
    """Scaled dot-product attention over ``heads`` heads; returns (context [B,L,E], weights [B,H,L,S])."""
    head_dim = embed_dim // heads
    split = _const(g, [embed_dim] * 3)
    w_q, w_k, w_v = g.op("Split", qkv_w, split, axis_i=0, outputs=3)
    b_q, b_k, b_v = g.op("Split", qkv_b, split, axis_i=0, outputs=3)
    by_head = _const(g, [0, -1, heads, head_dim])  # 0 keeps the batch as it is, -1 is the length

    def heads_of(x: Any, w: Any, b: Any, perm: list[int]) -> Any:
        return g.op("Transpose", g.op("Reshape", _linear(g, x, w, b), by_head), perm_i=perm)

    q = heads_of(query, w_q, b_q, [0, 2, 1, 3])  # [B, H, L, D]
    k = heads_of(key, w_k, b_k, [0, 2, 3, 1])  # [B, H, D, S]
    v = heads_of(value, w_v, b_v, [0, 2, 1, 3])  # [B, H, S, D]
    import torch

    scale = g.op("Constant", value_t=torch.tensor(1.0 / math.sqrt(head_dim), dtype=torch.float32))
    weights = g.op("Softmax", g.op("Mul", g.op("MatMul", q, k), scale), axis_i=-1)
    context = g.op("Transpose", g.op("MatMul", weights, v), perm_i=[0, 2, 1, 3])
    return g.op("Reshape", context, _const(g, [0, -1, embed_dim])), weights


def _native_mha(
    g: Any,
    query: Any,
    key: Any,
    value: Any,
    embed_dim: Any,
    num_head: Any,
    qkv_weight: Any,
    qkv_bias: Any,
    proj_weight: Any,
    proj_bias: Any,
    mask: Any = None,
    need_weights: Any = None,
    average_attn_weights: Any = None,
    mask_type: Any = None,
) -> tuple[Any, Any]:
    from torch.onnx import symbolic_helper

    _require_no_mask(mask, "aten::_native_multi_head_attention")
    context, weights = _attention(g, query, key, value, _int(embed_dim), _int(num_head), qkv_weight, qkv_bias)
    average = symbolic_helper._is_none(average_attn_weights) or bool(
        symbolic_helper._maybe_get_const(average_attn_weights, "b")
    )
    if average:  # ReduceMean's axes became an input in opset 18
        if g.opset >= 18:
            weights = g.op("ReduceMean", weights, _const(g, [1]), keepdims_i=0)
        else:
            weights = g.op("ReduceMean", weights, axes_i=[1], keepdims_i=0)
    return _linear(g, context, proj_weight, proj_bias), weights


def _gelu(g: Any, x: Any) -> Any:
    """Exact GELU, 0.5·x·(1 + erf(x/√2)), in ops every opset has."""
    import torch

    def scalar(v: float) -> Any:
        return g.op("Constant", value_t=torch.tensor(v, dtype=torch.float32))

    erf = g.op("Erf", g.op("Mul", x, scalar(1 / math.sqrt(2))))
    return g.op("Mul", g.op("Mul", x, scalar(0.5)), g.op("Add", erf, scalar(1.0)))


def _encoder_layer(
    g: Any,
    src: Any,
    embed_dim: Any,
    num_heads: Any,
    qkv_weight: Any,
    qkv_bias: Any,
    proj_weight: Any,
    proj_bias: Any,
    use_gelu: Any,
    norm_first: Any,
    eps: Any,
    norm_weight_1: Any,
    norm_bias_1: Any,
    norm_weight_2: Any,
    norm_bias_2: Any,
    ffn_weight_1: Any,
    ffn_bias_1: Any,
    ffn_weight_2: Any,
    ffn_bias_2: Any,
    mask: Any = None,
    mask_type: Any = None,
) -> Any:
    from torch.onnx import errors, symbolic_helper

    _require_no_mask(mask, "aten::_transformer_encoder_layer_fwd")
    if g.opset < 17:
        raise errors.SymbolicValueError(
            "aten::_transformer_encoder_layer_fwd needs LayerNormalization: use --opset 17 or later", src
        )
    dim, heads = _int(embed_dim), _int(num_heads)
    epsilon = float(symbolic_helper._maybe_get_const(eps, "f"))
    gelu = bool(symbolic_helper._maybe_get_const(use_gelu, "b"))

    def norm(x: Any, w: Any, b: Any) -> Any:
        return g.op("LayerNormalization", x, w, b, axis_i=-1, epsilon_f=epsilon)

    def attend(x: Any) -> Any:
        context, _ = _attention(g, x, x, x, dim, heads, qkv_weight, qkv_bias)
        return _linear(g, context, proj_weight, proj_bias)

    def feed_forward(x: Any) -> Any:
        hidden = _linear(g, x, ffn_weight_1, ffn_bias_1)
        hidden = _gelu(g, hidden) if gelu else g.op("Relu", hidden)
        return _linear(g, hidden, ffn_weight_2, ffn_bias_2)

    if bool(symbolic_helper._maybe_get_const(norm_first, "b")):
        x = g.op("Add", src, attend(norm(src, norm_weight_1, norm_bias_1)))
        return g.op("Add", x, feed_forward(norm(x, norm_weight_2, norm_bias_2)))
    x = norm(g.op("Add", src, attend(src)), norm_weight_1, norm_bias_1)
    return norm(g.op("Add", x, feed_forward(x)), norm_weight_2, norm_bias_2)
