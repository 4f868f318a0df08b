"""What the CLI prints: tables and verdicts for build, verify, bench and quantize results.

Results go to stdout, verdicts and failures to stderr, so ``--json`` output and pipes stay clean. On a
terminal, tables are drawn by rich to fit its width and each progress step is a live line with its elapsed
time; in pipes and CI logs the same content is plain text (Markdown tables, one ``»`` line per step).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import click

from deployopt.errors import EXIT_BUDGET, EXIT_OK

_log = logging.getLogger("deployopt")


def _is_terminal(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty() and os.environ.get("TERM") != "dumb"


class _LiveProgress(logging.Handler):
    """On a terminal: the running step as a spinner with its elapsed time; a finished step stays as one line
    with the time it took."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.live = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=self.console, transient=True
        )
        self.task: int | None = None
        self.started = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        self.finish()
        self.live.start()
        self.task = self.live.add_task(record.getMessage())
        self.started = time.perf_counter()

    def finish(self) -> None:
        if self.task is None:
            return
        description = self.live.tasks[0].description
        self.live.remove_task(self.task)
        self.live.stop()
        self.task = None
        elapsed = time.perf_counter() - self.started
        self.console.print(f"[green]»[/green] {description} [dim]({elapsed:.1f} s)[/dim]", highlight=False)


def configure_logging(level: int) -> None:
    """Progress and library messages go through stdlib logging to stderr: INFO shows progress, -q (WARNING)
    hides it, -v (DEBUG) adds the exporters' and libraries' messages."""
    if _is_terminal(sys.stderr):
        handler: logging.Handler = _LiveProgress()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("» %(message)s"))
    _log.handlers[:] = [handler]
    _log.setLevel(level)
    _log.propagate = False


def end_progress() -> None:
    """Close the live progress line before results are printed."""
    for handler in _log.handlers:
        if isinstance(handler, _LiveProgress):
            handler.finish()


# Columns a narrow terminal drops first (by header prefix); report.md always has them all.
_DROP_FIRST = ("vs PyTorch", "Δ acc", "p90", "p99", "vs ONNX fp32", "precision")


def _fit(header: list[str], rows: list[list[str]], width: int) -> tuple[list[str], list[list[str]], list[str]]:
    """Drop the least important columns until the table fits ``width``; return what was dropped."""
    keep = list(range(len(header)))

    def needed() -> int:
        return sum(max(len(r[i]) for r in [header, *rows]) + 3 for i in keep) + 1

    dropped: list[str] = []
    for prefix in _DROP_FIRST:
        for index in [i for i in keep if header[i].startswith(prefix)]:
            if needed() <= width:
                break
            keep.remove(index)
            dropped.append(header[index])
    return [header[i] for i in keep], [[r[i] for i in keep] for r in rows], dropped


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A results table on stdout: drawn by rich to fit a terminal (least important columns dropped first, and
    named), Markdown in pipes (easy to paste or parse)."""
    from deployopt.reports.model import markdown_table

    end_progress()
    if not _is_terminal(sys.stdout):
        click.echo(markdown_table(header, rows))
        return
    from rich.console import Console
    from rich.table import Table

    out = Console()
    header, rows, dropped = _fit(header, rows, out.width)
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index < 2 else "right", no_wrap=index == 0)
    for row in rows:
        table.add_row(*row, style="red" if row[-1] == "FAIL" else None)
    out.print(table)
    if dropped:
        out.print(
            f"[dim]{len(dropped)} column(s) left out to fit the terminal ({', '.join(dropped)}); "
            "report.md has them all[/dim]"
        )


def verbose() -> bool:
    return _log.isEnabledFor(logging.DEBUG)


def progress(message: str) -> None:
    """Where the CLI reports what it is doing: stderr, so stdout stays the result."""
    _log.info(message)


def show_build(report, as_json: bool) -> int:
    from deployopt.reports.model import NOT_KEPT, variant_rows

    end_progress()
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        print_table(*variant_rows(report))
        for line in report.not_measured_lines():
            click.echo(line)
        click.echo(f"\nrun directory: {report.run_dir} (report.html, report.md, report.json, manifest.json)")
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
        for failure in report.failures:
            click.echo(f"FAIL {failure}", err=True)
        not_kept = [v.name for v in report.variants if v.role == NOT_KEPT]
        passed = (
            f"PASS: every kept artifact is within its budget (not kept: {', '.join(not_kept)})"
            if not_kept
            else "PASS: every artifact is within its budget"
        )
        click.echo(passed if report.passed else "FAIL: budget missed", err=True)
        show_recommendation(report)
    return EXIT_OK if report.passed else EXIT_BUDGET


def show_recommendation(report) -> None:
    """The build's last word on stdout: the fastest passing artifact per batch size and how to load it."""
    if not report.recommendations:
        return
    click.echo("\nrecommended (fastest within budget, measured in this run):")
    for recommendation in report.recommendations:
        click.echo(f"  {recommendation.describe()}")
    for code in dict.fromkeys(r.load_code for r in report.recommendations if r.load_code):
        click.echo("\n" + code)


def finish_build(report, as_json: bool, baseline, budget, junit, summary) -> int:
    """Print the build, apply the baseline gate when asked, write the CI files; the exit code covers both."""
    from deployopt.api import check_baseline
    from deployopt.reports.ci import write_ci_outputs

    gate = check_baseline(report, baseline, budget) if baseline is not None else None
    write_ci_outputs(report, gate, junit, summary)
    code = show_build(report, as_json)
    if gate is not None:
        for failure in gate.failures:
            click.echo(f"REGRESSION {failure}", err=True)
        verdict = "no regression" if gate.passed else f"{len(gate.failures)} regression(s)"
        click.echo(f"baseline {baseline}: {len(gate.checks)} checks, {verdict}", err=True)
    return EXIT_BUDGET if code != EXIT_OK or (gate is not None and not gate.passed) else EXIT_OK


def finish_fleet(fleet, as_json: bool, junit, summary) -> int:
    """A fleet's one table (a line per model), its CI files, and its one exit code."""
    from deployopt.reports.ci import write_fleet_ci_outputs

    end_progress()
    write_fleet_ci_outputs(fleet, junit, summary)
    if as_json:
        click.echo(json.dumps(fleet.to_json(), indent=2))
        return fleet.exit_code
    rows = []
    for outcome in fleet.outcomes:
        report = outcome.report
        chosen = ", ".join(f"b{r.batch}: {r.variant}" for r in report.recommendations) if report else ""
        verdict = "PASS" if outcome.exit_code == 0 else ("FAIL" if report else "ERROR")
        rows.append(
            [outcome.member.label, f"{verdict} ({outcome.exit_code})", chosen or "–", str(outcome.member.run_root)]
        )
    print_table(["model", "result (exit)", "recommended", "run directory"], rows)
    for outcome in fleet.outcomes:
        if outcome.error is not None:
            click.echo(f"ERROR {outcome.member.label}: {outcome.error}", err=True)
        for failure in outcome.report.failures if outcome.report else []:
            click.echo(f"FAIL {outcome.member.label}: {failure}", err=True)
    passed = sum(o.exit_code == 0 for o in fleet.outcomes)
    click.echo(
        f"{'PASS' if fleet.passed else 'FAIL'}: {passed} of {len(fleet.outcomes)} models passed ({fleet.mode})",
        err=True,
    )
    return fleet.exit_code


def show_recommend(entries: dict[str, dict], as_json: bool) -> int:
    """``deployopt recommend``: this machine's recommendation per run directory, and what differs from the build."""
    from deployopt.platform.machine import describe_machine
    from deployopt.reports.recommend import Recommendation

    end_progress()
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return EXIT_OK
    for run_dir, entry in entries.items():
        click.echo(f"{run_dir}: measured on {describe_machine(entry['machine'])}")
        for r in entry["recommendations"]:
            click.echo(f"  {Recommendation.from_json(r).describe()}")
        for note in entry["notes"]:
            click.echo(f"  note: {note}")
    return EXIT_OK


def show_verify(result) -> None:
    end_progress()
    click.echo(
        f"{result.samples} samples from {result.data_origin}; budget {result.budget.model_dump(exclude_none=True)}"
    )
    for o in result.outputs:
        click.echo(f"  {o.describe()}")
    if result.candidate_accuracy is not None:
        click.echo(
            f"  accuracy: reference {result.reference_accuracy:.2f}%  candidate {result.candidate_accuracy:.2f}%"
        )
    for failure in result.failures:
        click.echo(f"FAIL {failure}", err=True)
    click.echo("PASS" if result.passed else "FAIL", err=True)


def show_bench(measurements, models: list[Path]) -> None:
    sizes = {m: Path(m).stat().st_size for m in map(str, models)}
    gpu = any(m.gpu_p50_ms is not None for m in measurements)
    header = ["model", "batch", "p50 ms", "p90 ms", "p99 ms", "samples/s", "peak RSS"]
    header += ["GPU p50 ms", "GPU p99 ms"] if gpu else []
    rows = []
    for m in measurements:
        row = [m.variant, str(m.batch), f"{m.p50_ms:.3f}", f"{m.p90_ms:.3f}", f"{m.p99_ms:.3f}"]
        row += [f"{m.throughput:.1f}", f"{m.peak_rss_mb:.0f} MB"]
        if gpu:
            row += [f"{m.gpu_p50_ms:.3f}", f"{m.gpu_p99_ms:.3f}"] if m.gpu_p50_ms is not None else ["–", "–"]
        rows.append(row)
    print_table(header, rows)
    if gpu:
        click.echo("p50/p90/p99: end to end (copies in and out, synchronised); GPU: device compute time (CUDA events)")
    click.echo("sizes: " + ", ".join(f"{Path(p).name} {s / 1e6:.2f} MB" for p, s in sizes.items()))


def show_quantize(out: Path, outcome) -> None:
    from deployopt.reports.search import attempt_rows
    from deployopt.stages.int8 import int8_search

    end_progress()
    details, result = outcome.details, outcome.verify
    if outcome.precision == "int8":
        click.echo(f"{out}: int8 {details['mode']}, kept {details['chosen']}")
        for op, count in details["op_counts"].items():
            click.echo(f"  {op}: {count['int8']} int8, {count['float']} float")
        print_table(*attempt_rows(int8_search(details, out.name)))
        searched = f"search {details['search_seconds']:.0f} s"
        click.echo(f"  judged like the final check, on {details['judged_on']}; {searched}")
        for note in [details["why_kept"], *details["notes"]]:
            click.echo(f"  note: {note}")
        if details["excluded"]:
            click.echo(f"  kept in float: {', '.join(details['excluded'])}")
    else:
        kept = details["fallback_nodes"]
        click.echo(
            f"{out}: fp16, {details['fp16_nodes']} fp16 nodes, {details['fp32_nodes']} fp32 nodes"
            + (f"; kept in fp32 because ONNX Runtime refused them: {', '.join(kept)}" if kept else "")
        )
    for o in result.outputs:
        click.echo(
            f"  verify {o.name}: max rel {o.max_rel_error:.3g}, cosine {o.cosine:.6f}"
            + (f", top-1 agreement {o.top1_agreement * 100:.2f}%" if o.top1_agreement is not None else "")
        )
    if result.candidate_accuracy is not None:
        click.echo(f"  accuracy {result.candidate_accuracy:.2f}% vs {result.reference_accuracy:.2f}% (fp32)")
    for failure in result.failures:
        click.echo(f"FAIL {failure}", err=True)
    click.echo("PASS" if outcome.passed else "FAIL: budget missed", err=True)


def show_prune(out: Path, outcome) -> None:
    end_progress()
    r = outcome.result
    structured = r.method == "channels"
    click.echo(f"{out}: {r.method} pruning, amount {r.amount:g}")
    click.echo(f"  {'layer':<32} {'type':<8} {'channels' if structured else 'nonzero weights':>18}")
    for layer in r.layers:
        change = f"{layer.before} → {layer.after}"
        click.echo(f"  {layer.name:<32} {layer.kind:<8} {change:>18}  {layer.note}")
    for reason in r.skipped:
        click.echo(f"  not pruned: {reason}")
    click.echo(f"  parameters {r.params_before:,} → {r.params_after:,} ({_drop(r.params_before, r.params_after)})")
    click.echo(f"  MACs       {r.macs_before:,} → {r.macs_after:,} ({_drop(r.macs_before, r.macs_after)})")
    click.echo(
        f"  file       {outcome.size_before:,} → {outcome.size_after:,} bytes; compressed (zlib) "
        f"{outcome.compressed_before:,} → {outcome.compressed_after:,}"
    )
    click.echo(f"  sparsity   {r.sparsity * 100:.1f} % of prunable weights are zero")
    if not structured:
        click.echo(
            "  (dense kernels skip no zeros: expect no speed-up"
            + (", except 2:4 on sparse tensor cores)" if r.method == "2:4" else ")")
        )
    if outcome.accuracy_before is not None:
        click.echo(f"  accuracy   {outcome.accuracy_before:.2f}% → {outcome.accuracy_after:.2f}% (test split)")
    by_variant = {(m["variant"], m["batch"]): m for m in outcome.latency}
    for batch in sorted({m["batch"] for m in outcome.latency}):
        before, after = by_variant[("original", batch)], by_variant[("pruned", batch)]
        click.echo(
            f"  latency b{batch:<4} {before['p50_ms']:.3f} → {after['p50_ms']:.3f} ms p50 (PyTorch eager, "
            f"{before['p50_ms'] / after['p50_ms']:.2f}×)"
        )
    for failure in outcome.failures:
        click.echo(f"FAIL {failure}", err=True)
    click.echo("PASS: within the accuracy budget" if outcome.passed else "FAIL: budget missed", err=True)


def _drop(before: int, after: int) -> str:
    return f"−{(1 - after / before) * 100:.1f} %" if before else "–"


def describe_model(info: dict) -> str:
    """``deployopt inspect`` as text: one fact a line."""
    lines = [f"{info['path']}: {info['kind']}, {info['size_bytes']:,} bytes"]
    if info.get("precision"):
        lines.append(f"  precision  {info['precision']}")
    for spec in info.get("signature") or []:
        shape = ",".join(str(d) for d in spec["shape"])
        lines.append(f"  input      {spec['name']}:{shape}:{spec['dtype']}")
    for key in ("arch", "dataset", "opset", "ir_version", "producer", "nodes"):
        if info.get(key) not in (None, "", {}):
            lines.append(f"  {key:<10} {info[key]}")
    if hf := info.get("huggingface"):
        text = hf["text"]
        lines.append(f"  task       {hf['task']} ({hf['architecture']}), outputs {hf['output']}")
        if text:
            lines.append(f"  text       tokenizer in {text['tokenizer']}, max_length {text['max_length']}")
    if info.get("op_counts"):
        lines.append("  ops        " + ", ".join(f"{op} {n}" for op, n in info["op_counts"].items()))
    if "external_data" in info:
        lines.append(f"  external   {', '.join(info['external_data']) or 'none (weights inside the file)'}")
    if "sidecar" in info:
        s = info["sidecar"]
        lines.append(f"  engine     TensorRT {s['tensorrt_version']} on {s['gpu']['name']}, {s['source_precision']}")
    return "\n".join(lines)
