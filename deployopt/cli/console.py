"""What the CLI prints: tables and verdicts for build, verify, bench and quantize results.

Results go to stdout, verdicts and failures to stderr, so ``--json`` output and pipes stay clean.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from deployopt.errors import EXIT_BUDGET, EXIT_OK

_log = logging.getLogger("deployopt")


def configure_logging(level: int) -> None:
    """Progress and library messages go through stdlib logging to stderr: INFO shows progress, -q (WARNING)
    hides it, -v (DEBUG) adds the exporters' and libraries' messages."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("» %(message)s"))
    _log.handlers[:] = [handler]
    _log.setLevel(level)
    _log.propagate = False


def verbose() -> bool:
    return _log.isEnabledFor(logging.DEBUG)


def progress(message: str) -> None:
    """Where the CLI reports what it is doing: stderr, so stdout stays the result."""
    _log.info(message)


def show_build(report, as_json: bool) -> int:
    from deployopt.reports.model import variant_table

    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(variant_table(report))
        click.echo(f"\nrun directory: {report.run_dir} (report.html, report.md, report.json, manifest.json)")
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
        for failure in report.failures:
            click.echo(f"FAIL {failure}", err=True)
        click.echo("PASS: every artifact is within its budget" if report.passed else "FAIL: budget missed", err=True)
    return EXIT_OK if report.passed else EXIT_BUDGET


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


def show_verify(result) -> None:
    click.echo(
        f"{result.samples} samples from {result.data_origin}; budget {result.budget.model_dump(exclude_none=True)}"
    )
    for o in result.outputs:
        top1 = f"  top-1 agreement {o.top1_agreement * 100:.2f}%" if o.top1_agreement is not None else ""
        click.echo(
            f"  {o.name}: max abs {o.max_abs_error:.3g}  max rel {o.max_rel_error:.3g}  cosine {o.cosine:.6f}{top1}"
        )
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
    header = f"{'model':<28} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'samples/s':>10} {'peak RSS':>9}"
    click.echo(header + (f" {'GPU p50 ms':>11} {'GPU p99 ms':>11}" if gpu else ""))
    for m in measurements:
        line = (
            f"{m.variant:<28} {m.batch:>5} {m.p50_ms:>9.3f} {m.p90_ms:>9.3f} {m.p99_ms:>9.3f} "
            f"{m.throughput:>10.1f} {m.peak_rss_mb:>7.0f}MB"
        )
        if gpu:
            line += (
                f" {m.gpu_p50_ms:>11.3f} {m.gpu_p99_ms:>11.3f}" if m.gpu_p50_ms is not None else f" {'–':>11} {'–':>11}"
            )
        click.echo(line)
    if gpu:
        click.echo("p50/p90/p99: end to end (copies in and out, synchronised); GPU: device compute time (CUDA events)")
    click.echo("sizes: " + ", ".join(f"{Path(p).name} {s / 1e6:.2f} MB" for p, s in sizes.items()))


def show_quantize(out: Path, outcome) -> None:
    details, result = outcome.details, outcome.verify
    if outcome.precision == "int8":
        click.echo(f"{out}: int8 {details['mode']}, kept {details['chosen']}")
        for op, count in details["op_counts"].items():
            click.echo(f"  {op}: {count['int8']} int8, {count['float']} float")
        click.echo(f"  {'round':>5}  {'candidate':<28} {'excluded':>8}  {'cosine':>9}  {'latency p50':<22} verdict")
        for a in details["attempts"]:
            latency = ", ".join(f"b{b} {v:.2f} ms" for b, v in a["p50_ms"].items())
            cosine = f"{a['cosine']:.5f}" if a["cosine"] is not None else "–"
            click.echo(
                f"  {a['round']:>5}  {a['candidate']:<28} {len(a['excluded']):>8}  {cosine:>9}  {latency:<22} "
                f"{'pass' if a['passed'] else 'miss'}"
            )
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
    if info.get("op_counts"):
        lines.append("  ops        " + ", ".join(f"{op} {n}" for op, n in info["op_counts"].items()))
    if "external_data" in info:
        lines.append(f"  external   {', '.join(info['external_data']) or 'none (weights inside the file)'}")
    if "sidecar" in info:
        s = info["sidecar"]
        lines.append(f"  engine     TensorRT {s['tensorrt_version']} on {s['gpu']['name']}, {s['source_precision']}")
    return "\n".join(lines)
