"""ONNX graphs generated for tests and benchmarks whose point is their size, not their weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def waveform_model(path: Path, samples: int, channels: int = 32, layers: int = 6, classes: int = 8) -> Path:
    """An audio classifier over raw waveforms (batch, 1, samples): ``layers`` 1-D convolutions of ``channels``
    with ReLU, global pooling, a linear head. Its activations grow with the input: one sample of a 9 s, 16 kHz
    waveform makes ~70 MiB of intermediate tensors at 32 channels and six layers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, current, width = [], [], "waveform", 1
    for i in range(layers):
        w = rng.normal(0, (2.0 / (width * 9)) ** 0.5, (channels, width, 9)).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"conv{i}.weight"))
        nodes.append(helper.make_node("Conv", [current, f"conv{i}.weight"], [f"conv{i}"], pads=[4, 4], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        current, width = f"relu{i}", channels
    weights.append(numpy_helper.from_array(rng.normal(0, 0.3, (classes, channels)).astype(np.float32), "head.weight"))
    weights.append(numpy_helper.from_array(np.zeros(classes, np.float32), "head.bias"))
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["features"], name="flatten"),
        helper.make_node("Gemm", ["features", "head.weight", "head.bias"], ["logits"], transB=1, name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "waveform",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", 1, samples])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def waveforms(count: int, samples: int, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """``count`` different waveforms (batch, 1, samples): a few harmonics of a drifting pitch in noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    out = np.empty((count, 1, samples), np.float32)
    for i in range(count):
        pitch = rng.uniform(100, 400) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t))
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        voice = sum(np.sin(k * phase) / k for k in range(1, 5))
        out[i, 0] = 0.3 * voice + rng.normal(0, 0.05, samples)
    return out
