"""What each model output is, so the judge applies the checks that mean something for it.

* ``logits``: class scores — top-1, decisive-sample agreement, top-5, KL (:mod:`.classes`).
* ``embedding``: a vector compared by direction — cosine (mean and worst sample).
* ``regression``: numbers on their own scale (scores, boxes, maps) — abs/rel error and the correlation of the
  candidate's values with the reference's.
* ``multilabel``: independent yes/no per element (sigmoid or tanh heads, bits) — agreement per element after the
  threshold (0.5 for probabilities, 0 for signed scores).
* ``image``: an image (or image-like map) the size of an input — PSNR against the reference; when the output is
  the input plus a small residual (denoising, super-resolution refinement), the residual (output − input) is
  judged by cosine too, so closeness to the input cannot hide damage to what the model adds.

The kind comes from ``--outputs`` (``KIND`` for every output, ``NAME=KIND`` for one) or is detected, first from
the graph (the op that produces the output: Softmax → logits, Sigmoid/Tanh → multilabel, a pooling or an L2
normalisation → embedding), then from the reference's values on the verification data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deployopt.errors import UsageError

KINDS = ("logits", "embedding", "regression", "multilabel", "image")
# ops that pass a value through unchanged in kind: the producer that says what the output is sits behind them
_PASSTHROUGH = {
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast",
    "DequantizeLinear", "QuantizeLinear", "Dropout",
}  # fmt: skip
_PRODUCER_KIND = {
    "Softmax": "logits",
    "LogSoftmax": "logits",
    "Sigmoid": "multilabel",
    "Tanh": "multilabel",
    "HardSigmoid": "multilabel",
    "LpNormalization": "embedding",
    "GlobalAveragePool": "embedding",
    "GlobalMaxPool": "embedding",
    "ReduceMean": "embedding",
    "ReduceMax": "embedding",
}
# an output this close to an input of its shape (relative distance) is that input plus a residual
RESIDUAL_DISTANCE = 0.5
EMBEDDING_MIN_WIDTH = 64  # non-negative rows this wide without a class head: pooled features, not scores


def parse_declared(values: tuple[str, ...]) -> dict[str | None, str]:
    """``--outputs`` values: ``KIND`` (every output; key None) or ``NAME=KIND`` (one output)."""
    declared: dict[str | None, str] = {}
    for value in values:
        name, _, kind = value.rpartition("=")
        if kind not in (*KINDS, "auto"):
            raise UsageError(f"--outputs {value}: the kind must be one of {', '.join(KINDS)} or auto (NAME=KIND)")
        declared[name or None] = kind
    return declared


def graph_producers(path: str | Path | None) -> dict[str, str]:
    """Each graph output of an ONNX model → the op that gives it its meaning (behind reshapes, casts, Q/DQ)."""
    if path is None or Path(path).suffix != ".onnx":
        return {}
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    by_output = {out: node for node in graph.node for out in node.output}
    producers = {}
    for output in graph.output:
        node = by_output.get(output.name)
        while node is not None and node.op_type in _PASSTHROUGH and node.input:
            node = by_output.get(node.input[0])
        if node is not None:
            producers[output.name] = node.op_type
    return producers


def detect_kind(ref: np.ndarray, inputs: dict[str, np.ndarray], producer: str | None) -> tuple[str, str]:
    """The kind of one output from its producer op and its reference values, with the reason in words."""
    per_sample = ref[0].size if ref.ndim else 1
    kind = _PRODUCER_KIND.get(producer or "")
    if per_sample > 1 and (kind == "multilabel" or (kind in ("logits", "embedding") and ref.ndim == 2)):
        return kind, f"a {producer} head"
    if residual_source(ref, inputs) is not None or _image_like(ref, inputs):
        return "image", "the size of an input image"
    if ref.ndim != 2 or ref.shape[1] < 2:
        return "regression", "not a row of scores"
    x = ref.astype(np.float64)
    if np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-3):
        return "embedding", "unit-norm rows"
    if (x >= 0).all() and (x <= 1).all() and not np.allclose(x.sum(axis=1), 1.0, atol=1e-3):
        return "multilabel", "values in [0, 1] that are not one distribution"
    if (x >= 0).all() and not np.allclose(x.sum(axis=1), 1.0, atol=1e-3):
        if x.shape[1] >= EMBEDDING_MIN_WIDTH:
            return "embedding", "wide non-negative rows (pooled features)"
        return "regression", "non-negative values on their own scale, not class scores"
    return "logits", "rows of signed scores"


def classify_outputs(
    names: list[str],
    arrays: list[np.ndarray],
    inputs: dict[str, np.ndarray],
    graph: str | Path | None,
    declared: tuple[str, ...] = (),
    known: tuple[str, str] | None = None,
) -> dict[str, tuple[str, str]]:
    """Every output's kind and why: declared (``NAME=KIND``, then ``KIND``), else ``known`` from the model's source
    (a Hugging Face task: kind and reason), else detected."""
    chosen = parse_declared(declared)
    producers = graph_producers(graph)
    kinds = {}
    for name, ref in zip(names, arrays, strict=True):
        kind = chosen.get(name, chosen.get(None, "auto"))
        declared_as = "--outputs " + (f"{name}={kind}" if name in chosen else kind)
        if kind != "auto":
            kinds[name] = (kind, declared_as)
        elif known is not None:
            kinds[name] = known
        else:
            kinds[name] = detect_kind(ref, inputs, producers.get(name))
    return kinds


def resolve_kinds(names, arrays, inputs, graph, declared: tuple[str, ...] = ()) -> dict[str, str]:
    """:func:`classify_outputs` without the reasons."""
    return {name: kind for name, (kind, _) in classify_outputs(names, arrays, inputs, graph, declared).items()}


def kinds_note(kinds: dict[str, tuple[str, str]]) -> str:
    """The report's line on how the outputs were judged."""
    return "outputs judged as: " + "; ".join(f"{name} → {kind} ({why})" for name, (kind, why) in kinds.items())


def residual_source(ref: np.ndarray, inputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """The input this output is a residual on (same shape, within :data:`RESIDUAL_DISTANCE`), if any."""
    for value in inputs.values():
        if value.shape == ref.shape and np.issubdtype(value.dtype, np.floating):
            distance = np.linalg.norm(ref - value) / max(float(np.linalg.norm(ref)), 1e-12)
            if distance < RESIDUAL_DISTANCE:
                return value
    return None


def _image_like(ref: np.ndarray, inputs: dict[str, np.ndarray]) -> bool:
    """A 4-D output with the spatial size of a 4-D input and image-like channels (1, 3 or 4)."""
    if ref.ndim != 4:
        return False
    return any(v.ndim == 4 and v.shape[-2:] == ref.shape[-2:] and ref.shape[1] in (1, 3, 4) for v in inputs.values())


def psnr(ref: np.ndarray, cand: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, the peak being the reference's range (inf when identical)."""
    mse = float(np.mean((cand.astype(np.float64) - ref.astype(np.float64)) ** 2))
    peak = float(ref.max() - ref.min()) if ref.size else 0.0
    if mse == 0:
        return float("inf")
    return 10 * np.log10(max(peak, 1e-12) ** 2 / mse)


def correlation(ref: np.ndarray, cand: np.ndarray) -> float | None:
    """Pearson correlation of the candidate's values with the reference's (None for a constant reference)."""
    r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    if r.size < 2 or r.std() == 0:
        return None
    if c.std() == 0:
        return 0.0
    return float(np.corrcoef(r, c)[0, 1])


def element_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    """Share of elements on the same side of the threshold: 0.5 for values in [0, 1], else 0."""
    threshold = 0.5 if (ref >= 0).all() and (ref <= 1).all() else 0.0
    return float(((ref > threshold) == (cand > threshold)).mean())
