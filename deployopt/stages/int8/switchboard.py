"""A simulation of a quantized model in which every node's int8 rounding can be switched on or off per run.

Why: which nodes to keep in float is a question about the *final output*. A node's local error says little
about it (the first convolution of a mobile network rounds the image and costs more top-1 agreement than
dozens of later layers whose local error is larger). Measuring each node's effect on the output by
re-quantizing the model once per node costs minutes per node on a real CNN. Instead, the fp32 graph is
rewritten once: each input of a quantized node passes through ``Where(switch[n], DequantizeLinear(
QuantizeLinear(x)), x)`` with the very scales, zero points and integer weights of the quantized candidate
(weights: its DequantizeLinear of the int8 weight). One ONNX Runtime session then evaluates any subset of
nodes in int8 — the same arithmetic as the Q/DQ graph, run in float.

Reads ONNX Runtime's QDQ graphs: a quantized node keeps its name, and each input it reads through a
DequantizeLinear is matched to the same input position of the fp32 node of that name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deployopt.errors import error_reason

SWITCH_INPUT = "deployopt_int8_switch"


@dataclass
class Switchboard:
    """The rewritten model's session and the node names in switch order."""

    session: Any
    nodes: list[str]

    def run(self, feeds: dict[str, np.ndarray], int8_nodes: set[str], outputs: list[str]) -> list[np.ndarray]:
        switch = np.array([name in int8_nodes for name in self.nodes], dtype=bool)
        try:
            return self.session.run(outputs, {**feeds, SWITCH_INPUT: switch})
        except Exception as exc:  # ORT's own error types: the rewrite broke a shape the original handles
            raise SimulationError(f"{type(exc).__name__}: {error_reason(exc, 200)}") from exc


def _quantization_of(qdq: Any) -> tuple[dict[str, dict[int, Any]], dict[str, Any], dict[str, Any]]:
    """From a QDQ graph: per node, the DequantizeLinear feeding each input position; the QuantizeLinear of each
    quantized graph output (by output name); the initializers."""
    producers = {out: node for node in qdq.graph.node for out in node.output}
    inits = {init.name: init for init in qdq.graph.initializer}
    fed: dict[str, dict[int, Any]] = {}
    for node in qdq.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for position, tensor in enumerate(node.input):
            dq = producers.get(tensor)
            if dq is not None and dq.op_type == "DequantizeLinear" and _is_rounding(dq, producers, inits):
                fed.setdefault(node.name, {})[position] = dq
    output_q = {}
    for output in qdq.graph.output:
        dq = producers.get(output.name)
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                output_q[output.name] = q
    return fed, output_q, inits


def _is_rounding(dq: Any, producers: dict[str, Any], inits: dict[str, Any]) -> bool:
    """An activation's Q→DQ pair or an 8-bit weight; int32 biases (rounding far below the output's) are left out."""
    from onnx import TensorProto

    source = dq.input[0]
    if source in inits:
        return inits[source].data_type in (TensorProto.INT8, TensorProto.UINT8)
    q = producers.get(source)
    return q is not None and q.op_type == "QuantizeLinear"


def build_switchboard(fp32: Any, qdq_path: Path) -> Switchboard | None:
    """The switchable simulation of ``qdq_path`` over the fp32 model ``fp32``; None when the two graphs share no
    quantized node (a QOperator or dynamic-int8 candidate has no Q/DQ pairs to borrow) or differ in opset."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    qdq = onnx.load_model(str(qdq_path))
    if _opset(qdq) != _opset(fp32):  # the quantizer raised the opset: the fp32 ops would change meaning
        return None
    fed, output_q, qdq_inits = _quantization_of(qdq)
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    graph = model.graph
    producers = {out: node.name for node in graph.node for out in node.output}
    by_name = {node.name: node for node in graph.node}
    switched = [name for name in by_name if name in fed]
    for name in output_q:
        if producers.get(name) in by_name and producers[name] not in switched:
            switched.append(producers[name])
    if not switched:
        return None
    index = {name: i for i, name in enumerate(switched)}
    graph.input.append(helper.make_tensor_value_info(SWITCH_INPUT, TensorProto.BOOL, [len(switched)]))
    added_inits: set[str] = set()
    new_nodes: list[Any] = []
    rounded: dict[str, str] = {}  # tensor → its Q/DQ value (one pair per tensor, shared by its consumers)

    def borrow(names) -> None:
        for n in names:
            if n and n in qdq_inits and n not in added_inits:
                graph.initializer.append(qdq_inits[n])
                added_inits.add(n)

    def switch_of(node_name: str) -> str:
        out = f"{SWITCH_INPUT}_{index[node_name]}"
        if out not in rounded:
            position = helper.make_tensor(f"{out}_index", TensorProto.INT64, [], [index[node_name]])
            graph.initializer.append(position)
            new_nodes.append(helper.make_node("Gather", [SWITCH_INPUT, position.name], [out], axis=0))
            rounded[out] = out
        return out

    def fake_quant(tensor: str, q_inputs: list[str], dq: Any) -> str:
        key = f"{tensor}|{q_inputs[1]}"
        if key not in rounded:
            borrow(q_inputs[1:])
            axis = [a for a in dq.attribute if a.name == "axis"]
            q_out, dq_out = f"{tensor}_sim_q_{len(rounded)}", f"{tensor}_sim_dq_{len(rounded)}"
            q = helper.make_node("QuantizeLinear", [tensor, *q_inputs[1:]], [q_out])
            q.attribute.extend(axis)
            d = helper.make_node("DequantizeLinear", [q_out, *q_inputs[1:]], [dq_out])
            d.attribute.extend(axis)
            new_nodes.extend([q, d])
            rounded[key] = dq_out
        return rounded[key]

    def weight_value(dq: Any) -> str:
        borrow(dq.input)
        out = f"{dq.output[0]}_sim"
        if out not in rounded:
            d = helper.make_node("DequantizeLinear", list(dq.input), [out])
            d.attribute.extend(dq.attribute)
            new_nodes.append(d)
            rounded[out] = out
        return out

    qdq_producers = {out: node for node in qdq.graph.node for out in node.output}
    for node in list(graph.node):
        if node.name not in fed:
            new_nodes.append(node)
            continue
        for position, dq in fed[node.name].items():
            if position >= len(node.input) or not node.input[position]:
                continue
            original = node.input[position]
            if dq.input[0] in qdq_inits:  # an int8 weight
                value = weight_value(dq)
            else:
                q = qdq_producers[dq.input[0]]
                value = fake_quant(original, list(q.input), dq)
            chosen = f"{original}_sim_{node.name}_{position}"
            new_nodes.append(helper.make_node("Where", [switch_of(node.name), value, original], [chosen]))
            node.input[position] = chosen
        new_nodes.append(node)
    for output in graph.output:
        q = output_q.get(output.name)
        producer = producers.get(output.name)
        if q is None or producer not in index:
            continue
        raw = f"{output.name}_sim_float"
        for node in new_nodes:
            for i, tensor in enumerate(node.output):
                if tensor == output.name:
                    node.output[i] = raw
            for i, tensor in enumerate(node.input):
                if tensor == output.name:
                    node.input[i] = raw
        dq = qdq_producers[output.name]
        value = fake_quant(raw, list(q.input), dq)
        new_nodes.append(helper.make_node("Where", [switch_of(producer), value, raw], [output.name]))
    del graph.node[:]
    graph.node.extend(_topological(new_nodes, {i.name for i in graph.input} | {i.name for i in graph.initializer}))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own error types: a graph shape this rewrite does not cover
        raise SimulationError(f"{type(exc).__name__}: {error_reason(exc, 200)}") from exc
    return Switchboard(session, switched)


class SimulationError(Exception):
    """ONNX Runtime refused or failed to run the rewritten graph; the caller ranks another way and says why."""


def _opset(model: Any) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """``nodes`` ordered so every input is produced before it is read (ONNX requires it)."""
    ready = set(available) | {""}
    pending, ordered = list(nodes), []
    while pending:
        rest = []
        for node in pending:
            if all(t in ready for t in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # inputs from outside the graph (subgraph captures): keep the order
            ordered += rest
            break
        pending = rest
    return ordered
