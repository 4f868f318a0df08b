"""Conformance sweep: ONNX's own backend node tests through ``deployopt build`` (export, graph, fp16, int8,
verify) in-process, the plainest command a user would type: ``deployopt build model.onnx``.

Each single-node float32 case that ONNX Runtime itself reproduces (its outputs match the case's expected
outputs) is built in its own run directory, with generated inputs as a user without data gets. Outcomes:

- pass: every artifact built and verified within its budget;
- budget: an artifact missed a budget (exit 1), the metric named;
- refused: a clean refusal (exit 2-6) with its one-line reason;
- crash: anything else (exit 70, a bug);
- wrong verdict: deployopt's fp32 artifact disagrees with ONNX's expected outputs on the case's own
  inputs yet passed, or agrees yet failed (checked here with ONNX Runtime, outside deployopt).

    python benchmarks/conformance.py [--ops Relu,Conv] [--per-op 1] [--bench] [--no-write]

Appends the summary table to docs/benchmarks.md unless --no-write or --ops/--per-op narrow the sweep.
The test suite runs one case per op type (tests/stages/test_conformance.py).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
CASE_SECONDS = 120  # a case still running after this long is recorded as a hang


@dataclass
class Outcome:
    case: str
    op: str
    result: str  # pass | budget | refused | crash | wrong verdict | hang
    detail: str = ""
    seconds: float = 0.0


def node_cases() -> list:
    """ONNX's node test cases with one node whose inputs and outputs are all float32 tensors."""
    import warnings

    import onnx
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators' own overflow warnings
        cases = load_model_tests(kind="node")

    def float_only(values) -> bool:
        return all(
            v.type.HasField("tensor_type") and v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in values
        )

    return [
        c
        for c in cases
        if c.model is not None
        and len(c.model.graph.node) == 1
        and c.data_sets
        and float_only(c.model.graph.input)
        and float_only(c.model.graph.output)
    ]


def ort_reproduces(case) -> bool:
    """True when ONNX Runtime loads the case and matches its expected outputs (as ONNX's runner checks)."""
    outputs = _ort_outputs(case.model.SerializeToString(), case)
    if outputs is None:
        return False
    expected = case.data_sets[0][1]
    try:
        for got, want in zip(outputs, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol)
    except (AssertionError, ValueError):
        return False
    return True


def _ort_outputs(model: bytes, case) -> list[np.ndarray] | None:
    import onnxruntime as ort

    names = [i.name for i in case.model.graph.input]
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a case ORT cannot run is expected here, not an error to print
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return session.run(None, dict(zip(names, case.data_sets[0][0], strict=True)))
    except Exception:  # any ORT failure means "ORT does not run this case"
        return None


@contextlib.contextmanager
def _deadline(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_case(case, workdir: Path, bench: bool = False, runtime: str = "auto") -> Outcome:
    """Build one case as ``deployopt build model.onnx [--runtime RUNTIME]`` would and judge the verdict against
    ONNX's answer."""
    import onnx

    op = case.model.graph.node[0].op_type
    model_path = workdir / case.name / "model.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(case.model, model_path)
    start = time.perf_counter()
    outcome = _build(case, model_path, op, bench, runtime, data=None)
    if outcome.result == "refused" and "--data" in outcome.detail:  # do what the refusal says
        data = model_path.with_name("inputs.npz")
        names = [i.name for i in case.model.graph.input]
        np.savez(data, **dict(zip(names, case.data_sets[0][0], strict=True)))
        outcome = _build(case, model_path, op, bench, runtime, data=data)
        outcome.detail = "needed --data" + (f": {outcome.detail}" if outcome.detail else "")
    outcome.seconds = time.perf_counter() - start
    return outcome


def _build(case, model_path: Path, op: str, bench: bool, runtime: str, data: Path | None) -> Outcome:
    from deployopt import api
    from deployopt.errors import DeployoptError

    config = api.BuildConfig(
        out=model_path.parent / ("run-data" if data else "run"),
        skip_bench=not bench,
        runtime=runtime,
        verify=api.VerifyConfig(data=data),
        bench=api.BenchConfig(batch_sizes=(1,), min_seconds=0.05, warmup_seconds=0.01),
    )
    try:
        with _deadline(CASE_SECONDS):
            report = api.build(model_path, config)
    except TimeoutError as exc:
        return Outcome(case.name, op, "hang", str(exc))
    except DeployoptError as exc:
        result = "budget" if exc.exit_code == 1 else ("crash" if exc.exit_code == 70 else "refused")
        return Outcome(case.name, op, result, f"exit {exc.exit_code}: {exc}")
    except Exception as exc:  # an unexpected exception is exactly what the sweep looks for
        return Outcome(case.name, op, "crash", f"exit 70: {type(exc).__name__}: {exc}")
    fp32_passed = report.variant("onnx-fp32").passed
    artifact = Path(report.run_dir) / "model-fp32.onnx"
    outputs = _ort_outputs(artifact.read_bytes(), case)
    agrees = outputs is not None and all(
        np.allclose(got, want, rtol=max(case.rtol, 1e-3), atol=max(case.atol, 1e-5), equal_nan=True)
        for got, want in zip(outputs, case.data_sets[0][1], strict=True)
    )
    if agrees != fp32_passed:
        detail = "fp32 artifact " + ("matches ONNX's outputs but failed" if agrees else "differs but passed")
        return Outcome(case.name, op, "wrong verdict", detail)
    if not report.passed:
        return Outcome(case.name, op, "budget", "; ".join(report.failures))
    return Outcome(case.name, op, "pass")


def sample_per_op(cases: list, per_op: int) -> list:
    seen: collections.Counter = collections.Counter()
    chosen = []
    for case in sorted(cases, key=lambda c: c.name):
        op = case.model.graph.node[0].op_type
        if seen[op] < per_op:
            seen[op] += 1
            chosen.append(case)
    return chosen


def to_markdown(outcomes: list[Outcome], skipped: int, command: str, seconds: float) -> str:
    from deployopt.platform.cpu import describe_cpu

    counts = collections.Counter(o.result for o in outcomes)
    ops = {o.op for o in outcomes}
    lines = [
        f"## ONNX conformance sweep — {date.today().isoformat()}",
        "",
        f"- Machine: {describe_cpu()}",
        f"- Command: `{command}` ({seconds / 60:.1f} min)",
        f"- Cases: {len(outcomes)} single-node float32 node tests over {len(ops)} op types that ONNX Runtime "
        f"reproduces ({skipped} more it does not run or match are left out)",
        "",
        "| outcome | cases |",
        "|---|---|",
    ]
    lines += [
        f"| {result} | {counts[result]} |" for result in ("pass", "budget", "refused", "crash", "wrong verdict", "hang")
    ]
    others = [o for o in outcomes if o.result != "pass"]
    if others:
        lines += ["", "| case | op | outcome | detail |", "|---|---|---|---|"]
        lines += [f"| {o.case} | {o.op} | {o.result} | {o.detail.replace('|', '/')[:200]} |" for o in others]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", help="only these op types, comma-separated")
    parser.add_argument("--per-op", type=int, help="at most this many cases per op type")
    parser.add_argument("--bench", action="store_true", help="also benchmark each case (slower)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    cases = node_cases()
    if args.ops:
        wanted = set(args.ops.split(","))
        cases = [c for c in cases if c.model.graph.node[0].op_type in wanted]
    if args.per_op:
        cases = sample_per_op(cases, args.per_op)
    runnable = [c for c in cases if ort_reproduces(c)]
    start = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="deployopt-conformance-") as tmp:
        for i, case in enumerate(runnable, 1):
            outcome = run_case(case, Path(tmp), args.bench)
            print(f"[{i}/{len(runnable)}] {outcome.case}: {outcome.result} {outcome.detail[:160]}", flush=True)
            outcomes.append(outcome)
    command = ("python benchmarks/conformance.py " + " ".join(sys.argv[1:])).strip()
    table = to_markdown(outcomes, len(cases) - len(runnable), command, time.perf_counter() - start)
    print(table)
    if not (args.no_write or args.ops or args.per_op):
        with DOCS.open("a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
