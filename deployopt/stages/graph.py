"""Graph optimisation stage (graph pruning): a float ONNX model → a smaller, equivalent ONNX model.

onnxslim does the portable rewrites (constant folding, dead-node and unused-initializer removal,
Identity/Dropout elimination, Conv+BN fusion, shape simplification). ONNX Runtime's offline optimiser
at the *basic* level is then tried and kept only if it removes further nodes: basic rewrites stay in
standard ONNX ops, so the result still loads in TensorRT (extended/all levels emit ORT-only fused ops,
which is why they are left to ORT's own session-time optimisation).

A pass is kept only if its result still computes what the graph did: same output shapes and values on one
batch of the build's verification data (onnxslim trusts declared output shapes, and a model that declares
the wrong one came out with another output shape).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployopt.errors import InputFileError, StageError, error_reason
from deployopt.sources.onnxutil import op_counts
from deployopt.stages.base import BuildContext
from deployopt.types import ONNX_FP32


class GraphConfig(BaseModel):
    """Options of the graph stage (``deployopt optimize`` / the ``graph`` section of a pipeline)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    onnxslim: bool = Field(True, description="graph simplification with onnxslim")
    ort_basic: bool = Field(True, description="try ONNX Runtime's basic offline optimiser; kept only if it helps")


@dataclass
class GraphResult:
    nodes_before: int
    nodes_after: int
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    size_before: int
    size_after: int
    passes: list[str]  # the passes that changed the graph and were kept
    seconds: float
    notes: list[str]  # why a requested pass was not kept

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"seconds": round(self.seconds, 3)}


PROBE_TOLERANCE = 1e-2  # max |difference| relative to the output's scale: catches broken rewrites, not rounding
SERIALIZABLE_BYTES = 2**31 - 2**26  # protobuf's 2 GB limit: larger graphs are not probed in memory


def optimize_graph(
    in_path: Path, out_path: Path, config: GraphConfig, probe: dict[str, np.ndarray] | None = None
) -> GraphResult:
    """Write the optimised graph to ``out_path``; the input file is only read. With ``probe`` (one batch of
    inputs), a pass whose result computes other outputs than its input graph is not kept."""
    import onnx

    started = time.perf_counter()
    try:
        model = onnx.load_model(str(in_path))
    except Exception as exc:
        raise InputFileError(f"{in_path}: cannot be loaded as ONNX ({exc}); re-export it") from exc
    before = op_counts(model)
    passes: list[str] = []
    notes: list[str] = []
    # Every kept pass must pass ONNX's checker as strictly as the source does: its full check rejects
    # some valid graphs that ORT runs (function bodies), and some optimiser results (onnxslim's shapes).
    source_failure = _check_failure(model, full=True)
    full = source_failure is None
    if not full:
        if (basic := _check_failure(model, full=False)) is not None:
            raise InputFileError(f"{in_path}: not a valid ONNX model ({basic}); re-export it")
        notes.append(f"the model as given fails ONNX's full shape check ({source_failure}); passes checked without it")
    candidates = []
    if config.onnxslim:
        candidates.append(("onnxslim", _onnxslim))
    if config.ort_basic:
        candidates.append(("onnxruntime-basic", lambda m: _ort_basic(m, in_path)))
    for name, optimise in candidates:
        candidate, reason = optimise(model)
        if candidate is not None and (failure := _check_failure(candidate, full)) is not None:
            candidate, reason = None, f"its result fails ONNX's checker ({failure})"
        if candidate is not None and probe is not None and (changed := _changed_outputs(model, candidate, probe)):
            candidate, reason = None, changed
        if name == "onnxruntime-basic" and candidate is not None and not _fewer_nodes(candidate, model):
            candidate, reason = None, "it removed no nodes"
        if candidate is None:
            notes.append(f"{name} not kept: {reason}")
        else:
            model = candidate
            passes.append(name)
    onnx.save_model(model, str(out_path))
    return GraphResult(
        nodes_before=sum(before.values()),
        nodes_after=len(model.graph.node),
        ops_before=before,
        ops_after=op_counts(model),
        size_before=in_path.stat().st_size,
        size_after=out_path.stat().st_size,
        passes=passes,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def _changed_outputs(model: Any, candidate: Any, feeds: dict[str, np.ndarray]) -> str | None:
    """How ``candidate`` computes something other than ``model`` on ``feeds`` (None when it does not, or when
    the comparison cannot be made: the model fails on these inputs, which verification reports itself)."""
    if max(model.ByteSize(), candidate.ByteSize()) > SERIALIZABLE_BYTES:
        return None
    expected = _run(model, feeds)
    if expected is None:
        return None
    got = _run(candidate, feeds)
    if got is None:
        return "ONNX Runtime cannot run its result"
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            shape = "missing" if have is None else f"shape {list(have.shape)}"
            return f"it changed output '{name}' ({list(want.shape)} → {shape}) on the verification inputs"
        if np.issubdtype(want.dtype, np.floating):
            scale = float(np.abs(np.nan_to_num(want, posinf=0, neginf=0)).max(initial=0.0)) or 1.0
            diff = np.abs(np.nan_to_num(have.astype(np.float64) - want, nan=np.inf)).max(initial=0.0)
            if diff > PROBE_TOLERANCE * scale and not np.array_equal(have, want, equal_nan=True):
                return f"it changed output '{name}' (max difference {diff:.3g}) on the verification inputs"
        elif not np.array_equal(have, want):
            return f"it changed output '{name}' on the verification inputs"
    return None


def _run(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failure here is an answer, not an error to print
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {k: v.copy() for k, v in feeds.items()}), strict=True))
    except Exception:  # ORT's own error types: cannot load or cannot run
        return None


def _fewer_nodes(candidate: Any, model: Any) -> bool:
    return len(candidate.graph.node) < len(model.graph.node)


def _check_failure(model: Any, full: bool) -> str | None:
    """Why ONNX's checker rejects ``model`` (first line), or None when it passes."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=full)
    except Exception as exc:  # ValidationError, InferenceError
        return error_reason(exc, 200)
    return None


def _onnxslim(model: Any) -> tuple[Any | None, str | None]:
    """onnxslim's rewrites, or (None, why not): a graph it cannot handle is kept as it is, and the
    report says so (the graph is valid — ONNX Runtime checks it next — only not simplified)."""
    import onnxslim

    try:
        return onnxslim.slim(model), None
    except Exception as exc:  # onnxslim raises assorted types on graphs it cannot handle
        return None, f"it failed on this graph ({type(exc).__name__}: {exc})"


def _ort_basic(model: Any, in_path: Path) -> tuple[Any | None, str | None]:
    """ORT's basic-level offline optimisation, or (None, why it cannot be used)."""
    import onnx

    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnxruntime is not installed"
    with tempfile.TemporaryDirectory(prefix="deployopt-graph-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save_model(model, str(src))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(dst)
        options.log_severity_level = 4  # its failure is raised as one StageError line
        try:
            ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise StageError(
                f"{in_path}: ONNX Runtime cannot load the graph ({exc}); "
                "rerun with --no-ort-basic to skip its optimiser"
            ) from exc
        optimized = onnx.load_model(str(dst))
    # Keep only results that stay in the standard ONNX domain (portable to TensorRT and other runtimes).
    if any(node.domain not in ("", "ai.onnx") for node in optimized.graph.node):
        return None, "its result uses ONNX Runtime-only operators"
    return optimized, None


class GraphStep:
    """``build``'s graph step: the raw ONNX graph → ``model-fp32.onnx``, the ``onnx-fp32`` artifact."""

    name = "graph"

    def run(self, ctx: BuildContext) -> None:
        ctx.progress("graph: optimising the ONNX graph")
        config, exported = ctx.config.graph, ctx.exported
        outcome = ctx.run.run_stage(
            self.name,
            config,
            {"model": exported.sha256},
            {"model": "model-fp32.onnx"},
            lambda out: optimize_graph(exported.path, out["model"], config, _probe(ctx)).to_json(),
        )
        ctx.add_artifact(ONNX_FP32, outcome)
        ctx.record(self.name, outcome, graph_summary(outcome.record["details"]))


def _probe(ctx: BuildContext) -> dict[str, np.ndarray]:
    """Two samples of the verification data (the model's own batch when fixed), for the pass check."""
    return next(ctx.data.verification.batches(2))


def graph_summary(details: dict) -> str:
    before, after = details["ops_before"], details["ops_after"]
    changed = [
        f"{op} {before.get(op, 0)}→{after.get(op, 0)}"
        for op in sorted(set(before) | set(after))
        if before.get(op, 0) != after.get(op, 0)
    ]
    passes = ", ".join(details["passes"]) or "none"
    notes = "".join(f"; {note}" for note in details.get("notes", []))
    return (
        f"passes kept: {passes}; nodes {details['nodes_before']} → {details['nodes_after']}"
        f" ({', '.join(changed) if changed else 'no op-type count changed'}); "
        f"size {details['size_before']:,} → {details['size_after']:,} bytes{notes}"
    )
