"""The recommendation a build ends with: per batch size, the fastest artifact that met its accuracy budget,
the runtime that ran it, the code that loads it, and how much faster it is than the fp32 baselines.

Only measured, passing artifacts compete (the reference is what they are judged against, not a candidate), so
the choice is the benchmark's, never a rule of thumb. A lead within the spreads of the two artifacts' rounds is
noise on this machine, not a difference (:func:`~deployopt.measure.bench.tied_with_fastest`): those artifacts are a
tie, and the simplest of them is recommended — fp32 over bf16 over fp16 over int8 (fewer numbers changed,
nothing lost to a precision), ONNX Runtime over OpenVINO (the more portable runtime) — and the recommendation
names the tie and the spread.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from deployopt.measure.bench import relative_spread, tied_with_fastest

if TYPE_CHECKING:
    from deployopt.reports.model import BuildReport

_IDENTIFIER = re.compile(r"\W")
# fp32 baselines every recommendation is compared with, when the build measured them
BASELINES = ("onnx-fp32", "openvino-fp32")
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT", "torch": "PyTorch"}
# In a tie, the simpler artifact wins: the precision that changes fewer numbers, then the more portable runtime.
SIMPLER_PRECISION = ("fp32", "bf16", "fp16", "int8")
SIMPLER_RUNTIME = ("onnxruntime", "openvino", "tensorrt")

_LOAD_CODE = {
    "onnxruntime": (
        "import onnxruntime as ort\n"
        "options = ort.SessionOptions()\n"
        "options.intra_op_num_threads = {threads}\n"
        'session = ort.InferenceSession("{path}", options, providers=["CPUExecutionProvider"])\n'
        "outputs = session.run(None, {{{feeds}}})"
    ),
    "openvino": (
        "import openvino as ov\n"
        'compiled = ov.Core().compile_model("{path}", "CPU", {compile_settings})\n'
        "outputs = compiled({{{feeds}}})"
    ),
    "tensorrt": (
        "from deployopt.runners import RunnerSpec, create_runner  # TensorRT engines need their sidecar's shapes\n"
        'with create_runner(RunnerSpec("tensorrt", "{path}", device="cuda")) as engine:\n'
        "    outputs = engine.infer({{{feeds}}})"
    ),
}


@dataclass
class Recommendation:
    batch: int
    variant: str
    runtime: str
    path: str
    p50_ms: float
    speedups: dict[str, float] = field(default_factory=dict)  # baseline variant → its p50 / this p50
    runner_up: str | None = None  # the next fastest, when it is within the noise
    load_code: str = ""
    tied: list[str] = field(default_factory=list)  # the others as fast within the noise, fastest first
    spread: float | None = None  # (max − min) / median of the fastest's rounds; None after a single round
    rounds: int = 1  # rounds the fastest was timed in

    def describe(self) -> str:
        """One line: the chosen artifact, its runtime and latency, its speed-up over each fp32 baseline, the tie."""
        versus = ", ".join(f"{x:.2f}× {name}" for name, x in self.speedups.items())
        text = f"batch {self.batch}: {self.variant} on {RUNTIME_NAMES.get(self.runtime, self.runtime)}, "
        text += f"p50 {self.p50_ms:.2f} ms" + (f" ({versus})" if versus else "")
        noise = f"{self.spread:.0%} spread over {self.rounds} rounds" if self.spread is not None else "one round"
        if self.tied:
            text += (
                f"; a tie with {', '.join(self.tied)} (within the noise: {noise} of the fastest), the simplest is "
                "recommended"
            )
        else:
            text += f" ({noise})"
        return text

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Recommendation:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def recommend(report: BuildReport, runtimes: tuple[str, ...]) -> list[Recommendation]:
    """Per measured batch size: the fastest passing artifact among those that run on ``runtimes`` — or, when others
    are as fast within the spread of its rounds, the simplest of that tie (see the module docstring)."""
    chosen = []
    for batch in report.batch_sizes:
        candidates = sorted(
            (
                v
                for v in report.variants
                if v.role != "reference" and v.passed and batch in v.latency and v.runtime in runtimes
            ),
            key=lambda v: v.latency[batch]["p50_ms"],
        )
        if not candidates:
            continue
        rounds = _rounds(candidates[0], batch)
        tie = candidates[: tied_with_fastest([_rounds(v, batch) for v in candidates])]
        best = min(tie, key=lambda v: (_simplicity(v), v.latency[batch]["p50_ms"]))
        p50 = best.latency[batch]["p50_ms"]
        speedups = {
            name: round(x, 3) for name in BASELINES if (x := report.speedup(best.name, name, batch)) is not None
        }
        tied = [v.name for v in tie if v is not best]
        recommendation = Recommendation(batch, best.name, best.runtime, best.path, p50, speedups)
        recommendation.runner_up, recommendation.tied = (tied[0] if tied else None), tied
        recommendation.spread, recommendation.rounds = relative_spread(rounds), len(rounds)
        recommendation.load_code = _load_code(report, best)
        chosen.append(recommendation)
    return chosen


def _rounds(variant, batch: int) -> list[float]:
    measured = variant.latency[batch]
    return measured.get("p50_per_repeat_ms") or [measured["p50_ms"]]


def _simplicity(variant) -> tuple[int, int]:
    def rank(order: tuple[str, ...], value: str) -> int:
        return order.index(value) if value in order else len(order)

    return rank(SIMPLER_PRECISION, variant.precision), rank(SIMPLER_RUNTIME, variant.runtime)


def _load_code(report: BuildReport, variant) -> str:
    template = _LOAD_CODE.get(variant.runtime)
    if template is None:
        return ""
    from deployopt.runners.openvino_runner import compile_config

    names = [spec["name"] for spec in report.source.get("signature") or []]
    feeds = ", ".join(f'"{name}": {_IDENTIFIER.sub("_", name)}' for name in names)
    threads = report.threads or 1
    # the very settings the runner compiled it with when it was judged and timed (a bf16 IR in bf16, …)
    settings = compile_config(threads, variant.inference_precision or "fp32") if variant.runtime == "openvino" else {}
    return template.format(path=variant.path, threads=threads, feeds=feeds, compile_settings=json.dumps(settings))
