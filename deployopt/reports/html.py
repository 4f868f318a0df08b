"""``report.html``: one self-contained page per build — verdict, variant table, three plots, each precision
search as a table of attempts and a plot, steps and notes. It reads on a phone too: wide tables scroll sideways
inside their box, plots shrink to the page's width.

Plots (matplotlib, embedded as base64 PNG so the file can be mailed or attached to a CI run):
latency vs accuracy with the Pareto front marked, size per variant, latency by batch size. Accuracy is
the task accuracy when labels exist, else the cosine similarity to the reference.
"""

from __future__ import annotations

import base64
import html
import io

from deployopt.reports.model import REFERENCE, BuildReport, VariantReport, machine_lines
from deployopt.reports.search import TABLE_LEGEND, attempt_rows, node_lists, plot_png
from deployopt.types import ONNX_FP32, PrecisionSearch

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#1b1b1b;max-width:1200px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}
td.why{text-align:left;min-width:16em}td.tried{text-align:left;white-space:nowrap}
.pass{color:#0a7a28;font-weight:bold}.fail{color:#b00020;font-weight:bold}tr.kept td{background:#fff6d6}
.plots img{max-width:32%;margin-right:1%;border:1px solid #ddd}li{margin:.3em 0}
h1,h2,h3,p,li{overflow-wrap:anywhere}img.search{max-width:100%;border:1px solid #ddd}
details{margin:.5em 0 1.5em}code,pre{white-space:pre-wrap}
@media (max-width:800px){body{margin:.6em}h1{font-size:1.4em}.plots img{max-width:100%;margin:0 0 .5em}
td.tried{white-space:normal;min-width:9em}td.why{min-width:11em}th,td{padding:3px 5px}}
"""


def _quality(variant: VariantReport) -> tuple[float | None, str]:
    """(value, label): task accuracy when measured, else mean cosine to the reference (1.0 for it)."""
    if variant.accuracy is not None:
        return variant.accuracy, "accuracy (%)"
    if variant.verify and variant.verify.outputs:  # none when the outputs could not be compared (other shapes)
        return min(o.cosine for o in variant.verify.outputs), "cosine to reference"
    return (1.0, "cosine to reference") if variant.role == "reference" else (None, "")


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the points no other point beats on both latency (lower) and quality (higher)."""
    front = []
    for name, latency, quality in points:
        dominated = any(
            (lat <= latency and qual >= quality) and (lat < latency or qual > quality) for _, lat, qual in points
        )
        if not dominated:
            front.append(name)
    return front


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(report: BuildReport) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    measured = [v for v in report.variants if v.latency]
    if measured:
        batch = max(min(v.latency) for v in measured)
        points = []
        for v in measured:
            quality, label = _quality(v)
            if quality is not None and batch in v.latency:
                points.append((v.name, v.latency[batch]["p50_ms"], quality))
        if points:
            plots.append(("latency vs accuracy", _png(_tradeoff_figure(points, batch, label))))
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.barh([v.name for v in report.variants], [v.size_bytes / 1e6 for v in report.variants], color="#1b9e77")
    ax.set(xlabel="size (MB)", title="size per variant")
    plots.append(("size per variant", _png(fig)))
    if measured:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for v in measured:
            batches = sorted(v.latency)
            ax.plot(batches, [v.latency[b]["p50_ms"] for b in batches], marker="o", label=v.name)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="p50 latency (ms)", title="latency by batch")
        _plain_log_ticks(ax.xaxis)
        _plain_log_ticks(ax.yaxis)
        ax.legend(fontsize=8)
        plots.append(("latency by batch size", _png(fig)))
    return plots


_PALETTE = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


def _tradeoff_figure(points: list[tuple[str, float, float]], batch: int, label: str):
    """Latency vs quality: one colour per variant named in the legend (labels on the points overlap when
    variants sit close), the Pareto front as a bold step line over a shaded dominated region, and the
    quality axis never past its maximum (100 % or cosine 1)."""
    import matplotlib.pyplot as plt

    front = set(pareto_front(points))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ordered = sorted((p for p in points if p[0] in front), key=lambda p: p[1])
    xs = [p[1] for p in ordered]
    ys = [p[2] for p in ordered]
    lowest = min(q for _, _, q in points)
    top = 100.0 if label.startswith("accuracy") else 1.0
    span = max(top - lowest, 1e-6)
    floor = lowest - 0.15 * span
    edge = max(lat for _, lat, _ in points) * 1.5
    line_x, line_y = [*xs, edge], [*ys, ys[-1]]  # the front continues right: slower and no better is dominated
    ax.step(line_x, line_y, where="post", color="#d95f02", linewidth=2.2, zorder=2, label="Pareto front")
    ax.fill_between(line_x, line_y, floor, step="post", color="#d95f02", alpha=0.08, zorder=1)
    for index, (name, latency, quality) in enumerate(points):
        on_front = name in front
        ax.scatter(
            latency,
            quality,
            s=70 if on_front else 40,
            color=_PALETTE[index % len(_PALETTE)],
            edgecolors="black" if on_front else "none",
            linewidths=1.2,
            zorder=3,
            label=f"{name}{' (front)' if on_front else ''}",
        )
    ax.set(xscale="log", xlabel=f"p50 latency at batch {batch} (ms)", ylabel=label, title="latency vs accuracy")
    ax.set_ylim(floor, top + 0.02 * span)
    ax.set_xlim(min(lat for _, lat, _ in points) / 1.5, edge)
    ax.legend(fontsize=7, loc="lower right")
    _plain_log_ticks(ax.xaxis)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # cosines near 1 as 0.99990, not "+1" and -1e-4
    return fig


def _plain_log_ticks(axis) -> None:
    """Log axes label only their major ticks, as plain numbers (matplotlib's minor labels overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _table(report: BuildReport) -> str:
    batches = sorted({b for v in report.variants for b in v.latency} | set(report.batches_not_measured))
    head = ["variant", "precision", "size (MB)"] + [f"p50 b{b} (ms)" for b in batches]
    head += [f"vs PyTorch b{b}" for b in batches] + [f"vs ONNX fp32 b{b}" for b in batches] + ["accuracy", "verdict"]
    rows = []
    for v in report.variants:
        quality, _ = _quality(v)
        accuracy = f"{v.accuracy:.2f} %" if v.accuracy is not None else (f"cos {quality:.5f}" if quality else "–")
        verdict = "reference" if v.verify is None else v.verify.verdict
        cells = [v.name, v.precision, f"{v.size_bytes / 1e6:.3f}"]
        cells += [report.latency_cell(v, b, digits=3) for b in batches]
        for baseline in (REFERENCE, ONNX_FP32):
            ratios = [report.speedup(v.name, baseline, b) for b in batches]
            cells += [f"{r:.2f}×" if r is not None else "–" for r in ratios]
        cells += [accuracy, verdict]
        css = "" if v.verify is None else (' class="pass"' if v.passed else ' class="fail"')
        rows.append(
            "<tr>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells[:-1])
            + f"<td{css}>{html.escape(cells[-1])}</td></tr>"
        )
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    table = f'<table id="variants"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _recommendation(report: BuildReport) -> str:
    """The fastest passing artifact per batch and the code that loads it, right under the table."""
    if not report.recommendations:
        return ""
    items = "".join(f"<li>{html.escape(r.describe())}</li>" for r in report.recommendations)
    code = "".join(
        f"<pre><code>{html.escape(c)}</code></pre>"
        for c in dict.fromkeys(r.load_code for r in report.recommendations if r.load_code)
    )
    return f'<h2>Recommendation</h2><ul id="recommendation">{items}</ul>{code}'


def _machines(report: BuildReport) -> str:
    """report.md's Machines section as HTML: where each figure was reached, other machines' recommendations."""
    parts, items = [], []
    for line in machine_lines(report)[2:]:
        if line.startswith("### "):
            parts.append(f"<ul>{''.join(items)}</ul>" if items else "")
            parts.append(f"<h3>{html.escape(line[4:])}</h3>")
            items = []
        elif line.startswith("- "):
            items.append(f"<li>{html.escape(line[2:])}</li>")
    parts.append(f"<ul>{''.join(items)}</ul>" if items else "")
    return f'<h2>Machines</h2><div id="machines">{"".join(parts)}</div>'


def _searches(report: BuildReport) -> str:
    """Each precision search: why the kept attempt won, its plot, the attempt table, the node lists folded."""
    sections = "".join(_search_section(s.search) for s in report.stages if s.search)
    return f"<h2>Precision searches</h2>{sections}" if sections else ""


def _search_section(search: PrecisionSearch) -> str:
    png = plot_png(search)
    plot = (
        f'<img class="search" alt="{html.escape(search.title)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        if png
        else "<p>No plot: fewer than two attempts were timed (benchmarks skipped, or nothing to compare).</p>"
    )
    nodes = "".join(
        f"<li>attempt {a.number} ({len(a.kept_higher)}): {html.escape(names)}</li>" for a, names in node_lists(search)
    )
    summary = f"nodes kept in {html.escape(search.higher)}, by attempt"
    folded = f"<details><summary>{summary}</summary><ul>{nodes}</ul></details>" if nodes else ""
    return (
        f'<section class="search" id="search-{html.escape(search.variant)}">'
        f"<h3>{html.escape(search.title)} ({html.escape(search.variant)})</h3>"
        f"<p><b>Kept: attempt {search.kept}</b> — {html.escape(search.why_kept)}.</p>{plot}"
        f"{_attempt_table(search)}<p><small>{html.escape(TABLE_LEGEND)}.</small></p>{folded}</section>"
    )


def _attempt_table(search: PrecisionSearch) -> str:
    """One row per attempt; the kept one highlighted, its outcome coloured by the verdict."""
    header, rows = attempt_rows(search)  # node counts only: the names are folded below the table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for attempt, row in zip(search.attempts, rows, strict=True):
        number, tried, *numbers, result, why = (html.escape(cell) for cell in row)
        verdict = "pass" if attempt.passed else "fail"
        kept = ' class="kept"' if attempt.number == search.kept else ""
        cells = [f"<td>{number}</td>", f'<td class="tried">{tried}</td>', *(f"<td>{c}</td>" for c in numbers)]
        cells += [f'<td class="{verdict}">{result}</td>', f'<td class="why">{why}</td>']
        body.append(f"<tr{kept}>{''.join(cells)}</tr>")
    table = f'<table class="attempts" data-search="{html.escape(search.variant)}">'
    return f'<div class="scroll">{table}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def render_html(report: BuildReport) -> str:
    verdict = '<span class="pass">PASS</span>' if report.passed else '<span class="fail">FAIL</span>'
    steps = "".join(
        f"<li><b>{html.escape(s.stage)}</b>{' (cached)' if s.cached else ''}: {html.escape(s.summary)}</li>"
        for s in report.stages
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    images = "".join(
        f'<img alt="{html.escape(t)}" title="{html.escape(t)}" src="data:image/png;base64,{data}">'
        for t, data in _plots(report)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>deployopt: {html.escape(report.model)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>deployopt build: {html.escape(report.model)} — {verdict}</h1>"
        f"<p>Verified on {report.samples} samples of {html.escape(report.data)}; run directory "
        f"<code>{html.escape(report.run_dir)}</code>.</p>"
        f"{_table(report)}"
        + "".join(f"<p>{html.escape(line)}</p>" for line in report.not_measured_lines())
        + _recommendation(report)
        + _machines(report)
        + f'<div class="plots">{images}</div>'
        + _searches(report)
        + f"<h2>Steps</h2><ol>{steps}</ol>"
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + "</body></html>\n"
    )
