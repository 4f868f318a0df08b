"""Which quantized nodes cost the most accuracy, two ways:

* :func:`rank_by_output` (Q/DQ candidates): each node alone in int8, everything else in float, judged at the
  model's *outputs* by the verification's own metrics (cosine, top-1 agreement) — on a switchable simulation
  of the candidate (:mod:`.switchboard`), so no re-quantization per node.
* :func:`rank_nodes` (dynamic int8, whose graphs have no Q/DQ pairs to switch): how much further each node's
  output drifts from fp32 than its input had, as mean per-sample cosine error. The fp32 and quantized graphs
  run side by side with the compared tensors exposed as extra outputs, a few samples at a time so that a
  224×224 CNN's activations never sit in memory for the whole set (ONNX Runtime's ``qdq_loss_debug`` makes the
  same comparison on one set of feeds; this does it streamed, per sample, and ranks the nodes).

Both measure over verification samples, not one batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deployopt.data.eval_data import EvalData
from deployopt.stages.int8.quantize import COMPUTE_OPS
from deployopt.stages.precision_search import NodeDamage, output_damage, ranking_sample_indices, seconds_per_sample

ANALYSIS_BATCH = 8  # samples per call: bounds the memory of every exposed activation


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


def _produced(path: Path) -> set[str]:
    import onnx

    return {out for node in onnx.load_model(str(path), load_external_data=False).graph.node for out in node.output}


def _as_consumed(produced: set[str], tensors: list[str]) -> dict[str, str]:
    """Each fp32 tensor's counterpart in the quantized graph (whose tensors are ``produced``): the dequantized
    value the next node consumes (``T_DequantizeLinear_Output`` in ONNX Runtime's QDQ graphs), or the tensor
    itself where it is not quantized."""
    return {t: f"{t}_DequantizeLinear_Output" if f"{t}_DequantizeLinear_Output" in produced else t for t in tensors}


def tensor_errors(
    fp32: Path, quantized: Path, tensors: list[str], data: EvalData, batch: int = ANALYSIS_BATCH
) -> dict[str, float]:
    """Mean over all samples of 1 − cosine between each tensor's fp32 value and the value the quantized graph
    computes in its place, ``batch`` samples at a time (every tensor is held: the memory budget sets it)."""
    reference, ref_names = _session(fp32, {t: t for t in tensors})
    candidate, cand_names = _session(quantized, _as_consumed(_produced(quantized), tensors))
    common = sorted(set(ref_names) & set(cand_names))
    totals = dict.fromkeys(common, 0.0)
    counts = dict.fromkeys(common, 0)
    for feeds in data.batches(batch):
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


def rank_nodes(
    fp32: Path, quantized: Path, model: Any, excluded: list[str], data: EvalData, batch: int = ANALYSIS_BATCH
) -> list[NodeDamage]:
    """The quantized nodes of ``model`` (not in ``excluded``), most damaging first. Nodes whose output drifts
    less than their input (noise averaging out in a residual Add) still round values: they come last, not never."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    produced = _produced(quantized)
    outputs = {n.name: _effective_output(n, consumers) for n in model.graph.node if n.output}
    # ORT's QDQ names: T_QuantizeLinear_Input when T is a graph output (its DequantizeLinear then yields T)
    rounded = {t for t in outputs.values() if {f"{t}_DequantizeLinear_Output", f"{t}_QuantizeLinear_Input"} & produced}
    # compute nodes, and every other node whose output the quantizer rounds to int8 (residual Adds, the Muls of
    # squeeze-excitation blocks, pooling, a final Sigmoid or Softmax): each is a place where accuracy can be lost
    nodes = [
        n
        for n in model.graph.node
        if n.name not in excluded and n.input and n.output and (n.op_type in COMPUTE_OPS or outputs[n.name] in rounded)
    ]
    compared = {outputs[n.name] for n in nodes} | {n.input[0] for n in nodes}
    errors = tensor_errors(fp32, quantized, sorted(compared), data, batch)
    # a graph input enters exact: the rounding of it to int8 is the consuming node's damage
    graph_inputs = {i.name for i in model.graph.input}
    damages = [
        NodeDamage(
            n.name,
            n.op_type,
            errors.get(outputs[n.name], 0.0) - (0.0 if n.input[0] in graph_inputs else errors.get(n.input[0], 0.0)),
        )
        for n in nodes
    ]
    return sorted(damages, key=lambda d: d.damage, reverse=True)


def rank_by_output(fp32: Any, qdq: Path, excluded: list[str], data: EvalData) -> list[NodeDamage] | None:
    """Blocks of the Q/DQ candidate ``qdq`` by the damage each does alone at the outputs, most damaging first;
    None when the candidate has no Q/DQ pairs to simulate.

    A block is a compute node with the quantized elementwise nodes it feeds up to the next compute node
    (a convolution's Add, Clip, Div and Mul of hard-swish): ranking blocks rather than single nodes keeps the
    simulated runs to about one per convolution. The sample count is fitted to a time budget."""
    from deployopt.stages.int8.switchboard import build_switchboard

    board = build_switchboard(fp32, qdq)
    if board is None:
        return None
    blocks = _blocks(fp32, [name for name in board.nodes if name not in excluded])
    outputs = [o.name for o in fp32.graph.output]
    per_sample = seconds_per_sample(lambda feeds: board.run(feeds, set(), outputs), data)
    feeds = data.take(ranking_sample_indices(data, per_sample, len(blocks)))
    reference = board.run(feeds, set(), outputs)
    op_types = {n.name: n.op_type for n in fp32.graph.node}
    damages = [
        NodeDamage(leader, op_types[leader], output_damage(reference, board.run(feeds, set(members), outputs)), members)
        for leader, members in blocks.items()
    ]
    return sorted(damages, key=lambda d: d.damage, reverse=True)


def _blocks(model: Any, switched: list[str]) -> dict[str, list[str]]:
    """Each switched node under the nearest compute node upstream of it (following its first computed input);
    a node with no compute node above it leads its own block."""
    producer = {out: node for node in model.graph.node for out in node.output}
    by_name = {node.name: node for node in model.graph.node}
    wanted = set(switched)
    blocks: dict[str, list[str]] = {}
    for name in switched:
        node, leader = by_name[name], None
        while node is not None:
            if node.op_type in COMPUTE_OPS and node.name in wanted:
                leader = node.name
                break
            node = next((producer[t] for t in node.input if t in producer), None)  # skip constant operands
        blocks.setdefault(leader or name, []).append(name)
    return blocks
