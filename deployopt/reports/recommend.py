"""The recommendation a build ends with: per batch size, the fastest artifact that met its accuracy budget,
the runtime that ran it, the code that loads it, and how much faster it is than the fp32 baselines.

Only measured, passing artifacts compete (the reference is what they are judged against, not a candidate), so
the choice is the benchmark's, never a rule of thumb. When the runner-up is within :data:`NOISE` of the winner
the recommendation says so: on a shared machine such a gap is not a real difference.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deployopt.reports.model import BuildReport

_IDENTIFIER = re.compile(r"\W")
NOISE = 0.05  # relative p50 gap below which two artifacts are called equally fast
# fp32 baselines every recommendation is compared with, when the build measured them
BASELINES = ("onnx-fp32", "openvino-fp32")
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT", "torch": "PyTorch"}

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
    runner_up: str | None = None  # the next fastest, when it is within NOISE
    load_code: str = ""

    def describe(self) -> str:
        """One line: the winner, its runtime and latency, and its speed-up over each fp32 baseline."""
        versus = ", ".join(f"{x:.2f}× {name}" for name, x in self.speedups.items())
        text = f"batch {self.batch}: {self.variant} on {RUNTIME_NAMES.get(self.runtime, self.runtime)}, "
        text += f"p50 {self.p50_ms:.2f} ms" + (f" ({versus})" if versus else "")
        if self.runner_up:
            text += f"; {self.runner_up} is within {NOISE:.0%} (as fast, within a shared machine's noise)"
        return text

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Recommendation:
        return cls(**data)


def recommend(report: BuildReport, runtimes: tuple[str, ...]) -> list[Recommendation]:
    """The fastest passing artifact per measured batch size among those that run on ``runtimes``."""
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
        best = candidates[0]
        p50 = best.latency[batch]["p50_ms"]
        close = candidates[1] if len(candidates) > 1 else None
        runner_up = close.name if close and close.latency[batch]["p50_ms"] <= p50 * (1 + NOISE) else None
        speedups = {
            name: round(x, 3) for name in BASELINES if (x := report.speedup(best.name, name, batch)) is not None
        }
        code = _load_code(report, best)
        chosen.append(Recommendation(batch, best.name, best.runtime, best.path, p50, speedups, runner_up, code))
    return chosen


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
