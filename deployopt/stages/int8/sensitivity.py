"""Which quantized nodes cost the most accuracy: each quantized node's damage is how much further its output drifts from
fp32 than its input already had, measured over *every* verification sample (not one batch), as the mean
per-sample cosine error — the metric the verification judges by.

The fp32 graph and a quantized graph whose float tensors keep their fp32 names (QDQ, or dynamic int8) run side
by side with the compared tensors exposed as extra outputs, a few samples at a time so that a 224×224 CNN's
activations never sit in memory for the whole set. ONNX Runtime's ``qdq_loss_debug`` makes the same
comparison on one set of feeds; this does it streamed, per sample, and ranks the nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deployopt.data.eval_data import EvalData
from deployopt.stages.int8.quantize import COMPUTE_OPS

ANALYSIS_BATCH = 8  # samples per call: bounds the memory of every exposed activation


@dataclass(frozen=True)
class NodeDamage:
    node: str
    op_type: str
    damage: float  # extra mean (1 − cosine) of the node's output over its input's, across the samples

    def to_json(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "damage": self.damage}


FUSED_ACTIVATIONS = ("Relu", "Clip")  # the quantizer folds these into the producer's output range


def _session(path: Path, tensors: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """A session of ``path`` exposing the tensors named by the values of ``tensors`` (key: the fp32 name); returns
    the session and the fp32 → exposed name mapping of those the graph produces."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_model(str(path))
    produced = {out for node in model.graph.node for out in node.output}
    declared = {o.name for o in model.graph.output}
    exposed = {key: name for key, name in tensors.items() if name in produced or name in declared}
    for name in sorted(set(exposed.values()) - declared):
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, exposed


def _as_consumed(quantized: Path, tensors: list[str]) -> dict[str, str]:
    """Each fp32 tensor's counterpart in the quantized graph: the dequantized value the next node consumes
    (``T_DequantizeLinear_Output`` in ONNX Runtime's QDQ graphs), or the tensor itself where it is not quantized."""
    import onnx

    produced = {
        out for node in onnx.load_model(str(quantized), load_external_data=False).graph.node for out in node.output
    }
    return {t: f"{t}_DequantizeLinear_Output" if f"{t}_DequantizeLinear_Output" in produced else t for t in tensors}


def tensor_errors(fp32: Path, quantized: Path, tensors: list[str], data: EvalData) -> dict[str, float]:
    """Mean over all samples of 1 − cosine between each tensor's fp32 value and the value the quantized graph
    computes in its place."""
    reference, ref_names = _session(fp32, {t: t for t in tensors})
    candidate, cand_names = _session(quantized, _as_consumed(quantized, tensors))
    common = sorted(set(ref_names) & set(cand_names))
    totals = dict.fromkeys(common, 0.0)
    counts = dict.fromkeys(common, 0)
    for feeds in data.batches(ANALYSIS_BATCH):
        a = dict(zip(common, reference.run(common, feeds), strict=True))
        fetched = candidate.run([cand_names[t] for t in common], {k: v.copy() for k, v in feeds.items()})
        b = dict(zip(common, fetched, strict=True))
        for name in common:
            if a[name].shape != b[name].shape or a[name].ndim == 0 or not np.issubdtype(a[name].dtype, np.floating):
                continue
            x = a[name].reshape(a[name].shape[0], -1).astype(np.float64)
            y = b[name].reshape(x.shape).astype(np.float64)
            norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
            cos = np.where(norms > 0, (x * y).sum(1) / np.where(norms > 0, norms, 1.0), 1.0)
            totals[name] += float((1.0 - cos).sum())
            counts[name] += x.shape[0]
    return {name: totals[name] / counts[name] for name in common if counts[name]}


def _effective_output(node: Any, consumers: dict[str, list[Any]]) -> str:
    """A node's output after the activations the quantizer fuses into it (Conv → Relu: the Relu's output)."""
    tensor = node.output[0]
    while len(consumers.get(tensor, [])) == 1 and consumers[tensor][0].op_type in FUSED_ACTIVATIONS:
        tensor = consumers[tensor][0].output[0]
    return tensor


def rank_nodes(fp32: Path, quantized: Path, model: Any, excluded: list[str], data: EvalData) -> list[NodeDamage]:
    """The quantized nodes of ``model`` (not in ``excluded``), most damaging first. Nodes whose output drifts
    less than their input (noise averaging out in a residual Add) still round values: they come last, not never."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    import onnx

    produced = {t for n in onnx.load_model(str(quantized), load_external_data=False).graph.node for t in n.output}
    outputs = {n.name: _effective_output(n, consumers) for n in model.graph.node if n.output}
    # ORT's QDQ names: T_QuantizeLinear_Input when T is a graph output (its DequantizeLinear then yields T)
    rounded = {t for t in outputs.values() if {f"{t}_DequantizeLinear_Output", f"{t}_QuantizeLinear_Input"} & produced}
    # compute nodes, and every other node whose output the quantizer rounds to int8 (residual Adds, the Muls of
    # squeeze-excitation blocks, pooling, a final Sigmoid or Softmax): each is a place where accuracy can be lost
    nodes = [
        n
        for n in model.graph.node
        if n.name not in excluded and n.output and (n.op_type in COMPUTE_OPS or outputs[n.name] in rounded)
    ]
    errors = tensor_errors(fp32, quantized, sorted(set(outputs.values()) | {n.input[0] for n in nodes}), data)
    damages = [
        NodeDamage(n.name, n.op_type, errors.get(outputs[n.name], 0.0) - errors.get(n.input[0], 0.0)) for n in nodes
    ]
    return sorted(damages, key=lambda d: d.damage, reverse=True)
