"""Build reports: ``report.json`` (machine-readable), ``report.md`` and the terminal table.

The table has one row per variant: precision, size, p50 latency per batch size, speedup against
PyTorch eager and against ONNX fp32 (same run, so ratios are comparable), accuracy and its delta
against the reference, and whether it met its budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deployopt.measure.verify import VerifyResult
from deployopt.platform.machine import describe_machine, this_machine
from deployopt.reports.recommend import Recommendation
from deployopt.reports.search import TABLE_LEGEND, attempt_rows, has_plot, node_lists, plot_file
from deployopt.types import ONNX_FP32, REPORT_FORMAT, StepRecord

REFERENCE = "pytorch"
NOT_KEPT = "not kept"  # the role of a candidate deployopt tried on its own that missed its budget (the miss policy)


@dataclass
class VariantReport:
    name: str
    path: str
    precision: str
    size_bytes: int
    role: str = "artifact"  # "reference": what everything is verified against; NOT_KEPT: a miss nobody asked for
    runtime: str = ""  # the backend that verified and benchmarked it (deployopt.runners.BACKENDS)
    inference_precision: str = ""  # OpenVINO: the precision its float layers are compiled in (RunnerSpec.precision)
    latency: dict[int, dict] = field(default_factory=dict)  # batch → Measurement.to_json()
    verify: VerifyResult | None = None  # None for the reference
    accuracy: float | None = None

    @property
    def passed(self) -> bool:
        return self.verify is None or self.verify.passed

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "runtime": self.runtime,
            "inference_precision": self.inference_precision,
            "path": self.path,
            "precision": self.precision,
            "size_bytes": self.size_bytes,
            "accuracy": self.accuracy,
            "passed": self.passed,
            "latency": {str(b): m for b, m in self.latency.items()},
            "verify": self.verify.to_json() if self.verify is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict) -> VariantReport:
        return cls(
            name=data["name"],
            path=data["path"],
            precision=data["precision"],
            size_bytes=data["size_bytes"],
            role=data.get("role", "artifact"),
            runtime=data.get("runtime", ""),
            inference_precision=data.get("inference_precision", ""),
            latency={int(b): m for b, m in data.get("latency", {}).items()},
            verify=VerifyResult.from_json(data["verify"]) if data.get("verify") else None,
            accuracy=data.get("accuracy"),
        )


@dataclass
class BuildReport:
    model: str
    run_dir: str
    source: dict
    data: str
    samples: int
    batch_sizes: list[int]
    threads: int | None
    stages: list[StepRecord] = field(default_factory=list)
    variants: list[VariantReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # requested batch sizes the model cannot run (a fixed batch of 1 asked for batch 32) → why
    batches_not_measured: dict[int, str] = field(default_factory=dict)
    recommendations: list[Recommendation] = field(default_factory=list)  # per batch: the fastest passing artifact
    verified_on: dict | None = None  # platform.machine.this_machine() where the verdicts were reached
    measured_on: dict | None = None  # … and where the latencies were measured (each row repeats it)
    # `deployopt recommend` on other machines: cpu_key → {"machine", "recommendations", "latency", "notes"}
    elsewhere: dict[str, dict] = field(default_factory=dict)

    @property
    def kept(self) -> list[VariantReport]:
        """The reference and every artifact that gates the build: all but the candidates the miss policy let go."""
        return [v for v in self.variants if v.role != NOT_KEPT]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.kept)

    def latency_cell(self, variant: VariantReport, batch: int, digits: int = 2) -> str:
        """A p50 cell: the measured value, ``n/a`` for a batch the model cannot take, ``–`` when not run."""
        if batch in variant.latency:
            return f"{variant.latency[batch]['p50_ms']:.{digits}f}"
        return "n/a" if batch in self.batches_not_measured else "–"

    def not_measured_lines(self) -> list[str]:
        return [f"n/a at batch {b}: not measured, {reason}" for b, reason in self.batches_not_measured.items()]

    @property
    def failures(self) -> list[str]:
        return [f"{v.name}: {f}" for v in self.kept if v.verify for f in v.verify.failures]

    def variant(self, name: str) -> VariantReport | None:
        return next((v for v in self.variants if v.name == name), None)

    def speedup(self, name: str, baseline: str, batch: int) -> float | None:
        """p50 of ``baseline`` divided by p50 of ``name`` at ``batch`` (>1 means faster)."""
        this, base = self.variant(name), self.variant(baseline)
        if not this or not base or batch not in this.latency or batch not in base.latency:
            return None
        return base.latency[batch]["p50_ms"] / this.latency[batch]["p50_ms"]

    def to_json(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "model": self.model,
            "run_dir": self.run_dir,
            "passed": self.passed,
            "failures": self.failures,
            "source": self.source,
            "data": self.data,
            "samples": self.samples,
            "batch_sizes": self.batch_sizes,
            "threads": self.threads,
            "machine": self.measured_on or self.verified_on or this_machine(),
            "verified_on": self.verified_on,
            "measured_on": self.measured_on,
            "stages": [s.to_json() for s in self.stages],
            "variants": [v.to_json() for v in self.variants],
            "notes": self.notes,
            "batches_not_measured": {str(b): reason for b, reason in self.batches_not_measured.items()},
            "recommendations": [r.to_json() for r in self.recommendations],
            "recommendations_elsewhere": self.elsewhere,
        }

    @classmethod
    def from_json(cls, data: dict) -> BuildReport:
        """Rebuild a report from its report.json (to gate or re-render a finished build)."""
        fields = ("model", "run_dir", "source", "data", "samples", "batch_sizes", "threads", "notes")
        return cls(
            **{k: data[k] for k in fields},
            stages=[StepRecord.from_json(s) for s in data["stages"]],
            variants=[VariantReport.from_json(v) for v in data["variants"]],
            batches_not_measured={int(b): r for b, r in data.get("batches_not_measured", {}).items()},
            recommendations=[Recommendation.from_json(r) for r in data.get("recommendations", [])],
            verified_on=data.get("verified_on"),
            measured_on=data.get("measured_on"),
            elsewhere=data.get("recommendations_elsewhere", {}),
        )


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _ms(cell: str) -> str:
    return f"{cell} ms" if cell[0].isdigit() else cell


def _x(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None else "–"


def variant_rows(report: BuildReport) -> tuple[list[str], list[list[str]]]:
    """The variant table as header and rows of text (the terminal and report.md render the same cells)."""
    measured = any(v.latency for v in report.variants)
    batches = report.batch_sizes if measured else []  # no latency columns when benchmarking was skipped
    header = ["variant", "precision", "size"]
    header += [f"p50 b{b}" for b in batches]
    header += [f"vs PyTorch b{b}" for b in batches] + [f"vs ONNX fp32 b{b}" for b in batches]
    header += ["accuracy", "Δ acc", "verify"]
    rows = []
    reference = report.variant(REFERENCE)
    for v in report.variants:
        row = [v.name, v.precision, _mb(v.size_bytes)]
        row += [_ms(report.latency_cell(v, b)) for b in batches]
        row += [_x(report.speedup(v.name, REFERENCE, b)) for b in batches]
        row += [_x(report.speedup(v.name, ONNX_FP32, b)) for b in batches]
        row.append(f"{v.accuracy:.2f}%" if v.accuracy is not None else "–")
        if v.accuracy is not None and reference and reference.accuracy is not None and v is not reference:
            row.append(f"{v.accuracy - reference.accuracy:+.2f}")
        else:
            row.append("–")
        row.append(_verdict_cell(v))
        rows.append(row)
    return header, rows


def _verdict_cell(variant: VariantReport) -> str:
    if variant.verify is None:
        return "reference"
    if variant.passed:
        return "pass"
    return "miss, not kept" if variant.role == NOT_KEPT else "FAIL"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) + " |" for r in [header, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def variant_table(report: BuildReport) -> str:
    """The Markdown table of variants (report.md, the CI summary, and the terminal when it is not a TTY)."""
    return markdown_table(*variant_rows(report))


def render_markdown(report: BuildReport) -> str:
    src = report.source
    lines = [
        f"# deployopt build report: {report.model}",
        "",
        f"- Source: `{src['path']}` ({src['kind']}, sha256 {src['sha256'][:12]}…)",
        f"- Verification data: {report.data}, {report.samples} samples",
        f"- Benchmark: batch sizes {', '.join(map(str, report.batch_sizes))}, {report.threads or 'all'} threads, "
        "each variant in its own process; latency is the median (p50) per batch",
        f"- Result: **{'PASS' if report.passed else 'FAIL'}**",
        "",
        "## Variants",
        "",
        variant_table(report) if report.variants else "(none)",
        *(["", *report.not_measured_lines()] if report.batches_not_measured else []),
        "",
        *recommendation_lines(report),
        *machine_lines(report),
        "## Steps",
        "",
    ]
    for step in report.stages:
        state = "reused from cache" if step.cached else f"{step.seconds:.1f} s"
        lines.append(f"- **{step.stage}** ({state}): {step.summary}")
    lines += search_lines(report)
    if report.failures:
        lines += ["", "## Budget failures", ""] + [f"- {f}" for f in report.failures]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def search_lines(report: BuildReport) -> list[str]:
    """report.md's "Precision searches" section: per search why the kept attempt won, its plot (a PNG beside
    report.md), the attempt table, and the node lists folded in ``<details>``."""
    searches = [s.search for s in report.stages if s.search]
    if not searches:
        return []
    lines = ["", "## Precision searches"]
    for search in searches:
        lines += ["", f"### {search.title} ({search.variant})", ""]
        lines += [f"**Kept: attempt {search.kept}** — {search.why_kept}.", ""]
        if has_plot(search):
            lines += [f"![{search.title}]({plot_file(search)})", ""]
        lines += [markdown_table(*attempt_rows(search)), "", f"_{TABLE_LEGEND}._"]
        if nodes := node_lists(search):
            lines += ["", f"<details><summary>nodes kept in {search.higher}, by attempt</summary>", ""]
            lines += [f"- attempt {a.number} ({len(a.kept_higher)}): {names}" for a, names in nodes]
            lines += ["", "</details>"]
    return lines


def recommendation_lines(report: BuildReport) -> list[str]:
    """report.md's "Recommendation" section: one line per batch size and the code that loads each winner."""
    if not report.recommendations:
        return []
    lines = ["## Recommendation", ""]
    lines += [f"- {r.describe()}" for r in report.recommendations]
    for code in dict.fromkeys(r.load_code for r in report.recommendations if r.load_code):
        lines += ["", "```python", code, "```"]
    return [*lines, ""]


def machine_lines(report: BuildReport) -> list[str]:
    """Where the verdicts and timings were reached, and the recommendations other machines measured
    (``deployopt recommend``), each under its CPU, with which artifact to deploy where."""
    lines = ["## Machines", "", f"- Verified on {describe_machine(report.verified_on)}"]
    if report.measured_on:
        lines.append(f"- Benchmarked on {describe_machine(report.measured_on)}")
    for entry in report.elsewhere.values():
        lines += ["", f"### Measured again on {describe_machine(entry['machine'])} ({entry['measured']})", ""]
        lines += [f"- {Recommendation.from_json(r).describe()}" for r in entry["recommendations"]]
        lines += [f"- note: {note}" for note in entry["notes"]]
    return [*lines, ""]


def fp16_speed_note(report: BuildReport) -> list[str]:
    """Say plainly when fp16 is slower than fp32 (CPUs without fp16 arithmetic) instead of hiding it."""
    fp16, fp32 = report.variant("onnx-fp16"), report.variant(ONNX_FP32)
    if not fp16 or not fp32 or not fp16.latency:
        return []
    slower = [  # 5 % is within a shared machine's noise: only a real slowdown is worth a note
        b for b in fp16.latency if b in fp32.latency and fp16.latency[b]["p50_ms"] > 1.05 * fp32.latency[b]["p50_ms"]
    ]
    if not slower:
        return []
    ratio = max(fp16.latency[b]["p50_ms"] / fp32.latency[b]["p50_ms"] for b in slower)
    return [
        f"fp16 is up to {ratio:.1f}× slower than fp32 here (ONNX Runtime's CPU provider has few fp16 kernels, so "
        f"it converts back and forth); it is a size win ({fp16.size_bytes / 1e6:.2f} MB vs "
        f"{fp32.size_bytes / 1e6:.2f} MB) and a speed win on GPUs"
    ]
