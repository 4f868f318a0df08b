"""fp16 stage: an fp32 ONNX model → a float16 model that ONNX Runtime actually loads.

Uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``) with float32 inputs/outputs
kept by default, so callers feed the same arrays. Converters routinely produce graphs that ONNX
Runtime refuses (a node without an fp16 kernel, a Cast whose type no longer matches); instead of
shipping such a file, the node named in the load error is kept in fp32 and conversion is retried.
Every node kept in fp32 is reported. On CPUs without fp16 arithmetic this is a size win, not a speed-up.
"""

from __future__ import annotations

import re
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployopt.data.eval_data import data_fingerprint
from deployopt.data.memory import TWO_GRAPHS_ALL_TENSORS
from deployopt.errors import BackendUnavailableError, RuntimeCrashError, StageError, error_reason
from deployopt.isolation import child_progress, run_isolated
from deployopt.measure.verify import Judge
from deployopt.runners import RunnerSpec
from deployopt.sources.onnxutil import already_quantized, load_model, name_nodes
from deployopt.stages.base import BuildContext
from deployopt.stages.fp16_graph import drop_round_trips, load_error
from deployopt.stages.fp16_sensitivity import most_sensitive
from deployopt.stages.precision_search import AttemptTiming, named_briefly, time_attempts
from deployopt.types import ONNX_FP32, Precision, PrecisionSearch, SearchAttempt

MAX_FALLBACKS = 50
ANALYSIS_SAMPLES = 32  # samples whose every tensor the sensitivity ranking compares (fewer under a memory budget)
DEFAULT_MAX_ROUNDS = 4
_NODE_IN_ERROR = re.compile(r"node(?: with name)?\s*[:=]?\s*'?\"?([A-Za-z0-9_./:\-]+)")


class Fp16Config(BaseModel):
    """Options of ``deployopt quantize --fp16`` (and the fp16 variant of ``build``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_io_types: bool = Field(True, description="keep float32 inputs and outputs")
    block: tuple[str, ...] = Field((), description="op types kept in fp32 besides the converter's list (repeatable)")
    max_rounds: int = Field(
        DEFAULT_MAX_ROUNDS,
        ge=0,
        description="when fp16 misses its budget: rounds of keeping the most damaging nodes in fp32 and retrying",
    )


@dataclass
class Fp16Attempt:
    round: int
    kept_fp32: list[str]  # nodes kept in fp32 for accuracy so far
    passed: bool
    failures: list[str]
    max_rel_error: float | None
    cosine: float | None
    metrics: dict[str, float] = field(default_factory=dict)  # VerifyResult.headline()
    slack: float | None = None  # VerifyResult.slack
    p50_ms: dict[int, float] = field(default_factory=dict)  # timed beside the fp32 graph when the search searched
    speedup: dict[int, float] = field(default_factory=dict)


@dataclass
class Fp16Result:
    blocked_op_types: list[str]
    fallback_nodes: list[str]  # kept in fp32 because ONNX Runtime refused (or crashed on) them in fp16
    fp16_nodes: int
    fp32_nodes: int
    seconds: float
    accuracy_nodes: list[str] = field(default_factory=list)  # kept in fp32 to meet the accuracy budget
    attempts: list[Fp16Attempt] = field(default_factory=list)
    passed: bool | None = None  # None: converted without an accuracy check
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def convert_fp16(in_path: Path, out_path: Path, config: Fp16Config) -> Fp16Result:
    """Convert and prove that ONNX Runtime loads the result; the input file is only read."""
    started = time.perf_counter()
    model, op_block = _prepare(in_path, config)
    converted, node_block = _loadable(model, config, op_block, [], in_path)
    return _finish(converted, out_path, config, node_block, started)


def convert_fp16_within_budget(
    in_path: Path,
    out_path: Path,
    config: Fp16Config,
    judge: Judge,
    threads: int | None = None,
    progress=lambda message: None,
    analysis_batch: int = ANALYSIS_SAMPLES,
    timing: AttemptTiming | None = None,
) -> Fp16Result:
    """Convert, verify with ``judge`` — the final verification itself (same reference outputs, data and
    budget, so an accepted model cannot fail it) — and while the budget is missed keep the nodes that lose the
    most accuracy in fp32 and retry (``config.max_rounds`` times), as Polygraphy's ``debug precision`` and
    ModelOpt's AutoCast do. A round that comes out worse than the best so far is undone: its nodes are set
    aside and the next round ranks the rest on the best candidate. Every attempt is recorded (and, with
    ``timing``, timed beside the fp32 graph when there was more than one); the best one is written even when none
    passes."""
    import onnx

    started = time.perf_counter()
    model, op_block = _prepare(in_path, config)
    attempts: list[Fp16Attempt] = []
    kept: list[str] = []
    set_aside: list[str] = []  # nodes of rounds that made it worse: not kept, not ranked again
    best: tuple[tuple, Any, list[str], list[str]] | None = None  # rank, model, node block, kept
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="deployopt-fp16-") as tmp:
        named, best_path = Path(tmp) / "fp32.onnx", Path(tmp) / "best-fp16.onnx"
        onnx.save_model(model, str(named))
        for round_index in range(config.max_rounds + 1):
            progress(f"fp16: round {round_index + 1}, {len(kept)} node(s) kept in fp32 for accuracy")
            converted, node_block = _loadable(model, config, op_block, kept, in_path)
            candidate = Path(tmp) / f"fp16-round{round_index + 1}.onnx"
            onnx.save_model(converted, str(candidate))
            fp16_spec = RunnerSpec("onnxruntime", str(candidate), threads=threads)
            result = judge(fp16_spec)
            worst = max(result.outputs, key=lambda o: o.max_rel_error, default=None)
            attempts.append(
                Fp16Attempt(
                    round_index + 1,
                    list(kept),
                    result.passed,
                    result.failures,
                    worst.max_rel_error if worst else None,
                    min((o.cosine for o in result.outputs), default=None),
                    result.headline(),
                    result.slack,
                )
            )
            # passing first, then any with metrics (a shape or output-count failure has none), then the closest
            rank = (not result.passed, worst is None, worst.max_rel_error if worst else 0.0)
            if best is None or rank < best[0]:
                best = (rank, converted, node_block, list(kept))
                onnx.save_model(converted, str(best_path))
            elif kept:
                undone = [n for n in kept if n not in best[3]]
                set_aside += undone
                kept = list(best[3])
                notes.append(
                    f"round {round_index + 1} undone (worse than round {_round_of(attempts, best)}): "
                    f"{len(undone)} node(s) set aside"
                )
            if result.passed or round_index == config.max_rounds:
                break
            newly, why = most_sensitive(
                model,
                named,
                best_path,
                op_block,
                [*best[2], *set_aside],
                judge.data.head(analysis_batch),
                round_index,
            )
            if newly:
                notes.append(f"round {round_index + 2}: kept in fp32 ({why}): {', '.join(newly)}")
            else:
                notes.append(
                    f"stopped after round {round_index + 1}: no fp16 node's output loses more accuracy than its inputs"
                )
                break
            kept = [*kept, *newly]
        if timing is not None and len(attempts) > 1:
            progress(f"fp16: timing {len(attempts)} attempt(s) beside fp32 at batch {timing.batch}")
            rounds = [RunnerSpec("onnxruntime", str(Path(tmp) / f"fp16-round{a.round}.onnx")) for a in attempts]
            time_attempts(timing, attempts, rounds, judge.data)
    _, converted, node_block, best_kept = best
    result = _finish(converted, out_path, config, [n for n in node_block if n not in best_kept], started)
    result.accuracy_nodes = [n for n in node_block if n in best_kept]
    result.attempts, result.passed, result.notes = attempts, any(a.passed for a in attempts), notes
    return result


def _round_of(attempts: list[Fp16Attempt], best: tuple) -> int:
    """The round whose kept list the best candidate has."""
    return next(a.round for a in attempts if a.kept_fp32 == best[3])


def _prepare(in_path: Path, config: Fp16Config) -> tuple[Any, list[str]]:
    try:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    except ImportError as exc:
        raise BackendUnavailableError("fp16 conversion needs onnxruntime: pip install 'deployopt[cpu]'") from exc
    return name_nodes(load_model(in_path)), sorted(set(DEFAULT_OP_BLOCK_LIST) | set(config.block))


def _loadable(
    model: Any, config: Fp16Config, op_block: list[str], keep: list[str], in_path: Path
) -> tuple[Any, list[str]]:
    """The fp16 model with ``keep`` in fp32, plus whatever nodes ONNX Runtime refuses in fp16."""
    node_block = list(keep)
    with tempfile.TemporaryDirectory(prefix="deployopt-fp16-") as tmp:
        probe = Path(tmp) / "probe.onnx"
        for _ in range(MAX_FALLBACKS):
            converted = _convert(model, config, op_block, node_block)
            refused = load_error(converted, probe)
            if refused is None:
                return converted, node_block
            culprits = _node_named_in(refused, converted, node_block) or _search_culprits(
                model, config, op_block, node_block, probe
            )
            if not culprits:
                raise StageError(
                    f"{in_path}: ONNX Runtime refuses the fp16 model ({refused[:300]}) and no node or op "
                    "type kept in fp32 fixes it; pass --fp16-block OPTYPE"
                )
            node_block += culprits
    raise StageError(f"{in_path}: fp16 conversion still fails after keeping {len(node_block)} nodes in fp32")


def _finish(converted: Any, out_path: Path, config: Fp16Config, fallback: list[str], started: float) -> Fp16Result:
    import onnx

    onnx.save_model(converted, str(out_path))
    fp16_nodes, fp32_nodes = _count_precision(converted)
    return Fp16Result(sorted(config.block), fallback, fp16_nodes, fp32_nodes, time.perf_counter() - started)


def _convert(model: Any, config: Fp16Config, op_block: list[str], node_block: list[str]) -> Any:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        converted = convert_float_to_float16(
            onnx.ModelProto.FromString(model.SerializeToString()),
            keep_io_types=config.keep_io_types,
            op_block_list=op_block,
            node_block_list=list(node_block),
        )
    except Exception as exc:  # the converter asserts on graphs it does not handle (e.g. subgraph initializers)
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        raise StageError(
            f"onnxruntime's fp16 converter fails on this graph ({type(exc).__name__} at {where}"
            + (f": {error_reason(exc, 200)}" if str(exc) else "")
            + ")"
        ) from exc
    return drop_round_trips(converted, set(node_block) | {n.name for n in model.graph.node if n.op_type in op_block})


def _search_culprits(
    model: Any, config: Fp16Config, op_block: list[str], node_block: list[str], probe: Path
) -> list[str]:
    """When the error names no node: find an op type whose nodes, kept in fp32, make the model load
    (fewest nodes first), then narrow it to the single node that suffices when there is one."""
    by_type: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in op_block and node.name not in node_block:
            by_type.setdefault(node.op_type, []).append(node.name)
    for names in sorted(by_type.values(), key=len):
        if load_error(_convert(model, config, op_block, node_block + names), probe) is not None:
            continue
        if len(names) > 1:
            for name in names:
                if load_error(_convert(model, config, op_block, [*node_block, name]), probe) is None:
                    return [name]
        return names
    return []


def _node_named_in(error: str, model: Any, already: list[str]) -> list[str]:
    """The original node named by an ORT load error (converter-inserted Casts map back to their node)."""
    names = {node.name for node in model.graph.node}
    for candidate in _NODE_IN_ERROR.findall(error):
        for name in (candidate, candidate.rsplit("_input_cast", 1)[0], candidate.rsplit("_output_cast", 1)[0]):
            if name in names and name not in already and not name.startswith("graph_"):
                return [name]
    return []


def _count_precision(model: Any) -> tuple[int, int]:
    """Nodes whose first output is fp16 vs everything else (approximated through value_info)."""
    from onnx import TensorProto

    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    fp16 = sum(1 for node in model.graph.node if node.output and types.get(node.output[0]) == TensorProto.FLOAT16)
    return fp16, len(model.graph.node) - fp16


class Fp16Step:
    """``build``'s fp16 variant: ``model-fp16.onnx`` from the optimised fp32 graph."""

    name = "fp16"
    variant = "onnx-fp16"

    def run(self, ctx: BuildContext) -> None:
        config, fp32 = ctx.config.quantize.fp16, ctx.artifacts[ONNX_FP32]
        if reason := already_quantized(load_model(fp32.path)):
            return ctx.skip(self.name, reason)
        judge = ctx.judge(Precision.FP16)
        inputs = {"model": fp32.sha256, "data": data_fingerprint(judge.data), "budget": judge.budget.model_dump()}

        def work(out: dict[str, Path]) -> dict:
            job = dict(
                in_path=fp32.path,
                out_path=out["model"],
                config=config,
                judge=judge.detached(),
                threads=ctx.config.bench.threads,
                progress=child_progress,
                analysis_batch=ctx.batch_within_memory(ANALYSIS_SAMPLES, None, TWO_GRAPHS_ALL_TENSORS),
                timing=ctx.attempt_timing(),
            )
            return run_isolated(self.variant, _convert_in_child, job, ctx.progress, scratch=ctx.run.root)

        try:
            outcome = ctx.run.run_stage(self.name, config, inputs, {"model": "model-fp16.onnx"}, work)
        except StageError as exc:  # no fp16 model can be made here (or ORT crashed): the other variants still build
            if isinstance(exc, RuntimeCrashError) and Precision.FP16 in ctx.config.quantize.required:
                raise
            return ctx.skip(self.name, str(exc))
        ctx.add_artifact(self.variant, outcome)
        details = outcome.record["details"]
        ctx.record(self.name, outcome, fp16_summary(details), fp16_search(details, self.variant))


def _convert_in_child(**job) -> dict:
    """The fp16 conversion and search in the candidate's own process (:mod:`deployopt.isolation`)."""
    return convert_fp16_within_budget(**job).to_json()


def fp16_summary(d: dict) -> str:
    """The fp16 step in brief; its rounds are the search table of report.md/.html (:func:`fp16_search`)."""
    kept, accuracy = d["fallback_nodes"], d.get("accuracy_nodes", [])
    text = (
        f"float16 weights and activations with float32 inputs/outputs; {d['fp16_nodes']} fp16 nodes, "
        f"{d['fp32_nodes']} fp32 nodes (converter block list)"
        + (f"; kept in fp32 because ONNX Runtime refused them: {named_briefly(kept)}" if kept else "")
        + (f"; kept in fp32 for accuracy: {named_briefly(accuracy)}" if accuracy else "")
    )
    attempts = d.get("attempts", [])
    if len(attempts) > 1:
        text += f"; {len(attempts)} rounds judged"
    return text + "".join(f"; {note}" for note in d.get("notes", []))


def fp16_search(d: dict, variant: str) -> PrecisionSearch | None:
    """The accuracy rounds as the report's search table and plot (None when one round settled it)."""
    if len(d["attempts"]) < 2:
        return None
    attempts = tuple(
        SearchAttempt.recorded(a, f"round {a['round']}", a["kept_fp32"], a["metrics"]) for a in d["attempts"]
    )
    kept = next(a for a in attempts if list(a.kept_higher) == d["accuracy_nodes"])
    why = (
        f"round {kept.number} passes with {len(kept.kept_higher)} node(s) kept in fp32 for accuracy"
        if kept.passed
        else f"no round passes; round {kept.number} comes closest (smallest relative error)"
    )
    return PrecisionSearch("fp16 accuracy search", variant, "fp32", kept.number, why, attempts)
