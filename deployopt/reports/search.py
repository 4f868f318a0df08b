"""A precision search as people read it: a table with one row per attempt and a plot of accuracy against speed.

Every search — int8, fp16, the OpenVINO bf16 / per-layer search — reports its attempts as
:class:`~deployopt.types.PrecisionSearch`, so report.md, report.html and ``deployopt quantize`` draw them alike.
The plot's accuracy axis is the judge's margin to the budget (:attr:`VerifyResult.slack
<deployopt.measure.verify.VerifyResult.slack>`): 1 is the original's accuracy, 0 the budget's limit — the budget
is one line whatever metric decides — and below 0 a miss. Its speed axis is × the fp32 graph at one batch.
"""

from __future__ import annotations

import io

from deployopt.types import PrecisionSearch, SearchAttempt

MARGIN_FLOOR = -1.5  # the plot's lowest margin: a worse miss is drawn on the floor, pointing down

_PERCENT = ("top1_agreement", "decisive_agreement", "top5_containment", "element_agreement")
_LABELS = {
    "cosine": "cosine",
    "worst_cosine": "worst cosine",
    "top1_agreement": "top-1",
    "decisive_agreement": "decisive top-1",
    "top5_containment": "top-5",
    "mean_kl": "KL",
    "correlation": "correlation",
    "element_agreement": "elements",
    "psnr": "PSNR dB",
    "residual_cosine": "residual cosine",
    "accuracy": "accuracy",
    "max_abs_error": "max abs",
    "max_rel_error": "max rel",
}


def _metric(name: str, value: float) -> str:
    if name in _PERCENT:
        return f"{value:.1%}"
    if name == "accuracy":
        return f"{value:.2f}%"
    if name == "psnr":
        return f"{value:.1f}"
    if "cosine" in name or name == "correlation":
        return f"{value:.5f}"
    return f"{value:.3g}"


def _batches(search: PrecisionSearch) -> list[int]:
    return sorted({b for a in search.attempts for b in a.p50_ms})


def outcome(search: PrecisionSearch, attempt: SearchAttempt) -> tuple[str, str]:
    """(kept | rejected, why) for one row of the table."""
    if attempt.number == search.kept:  # why it won is the sentence above the table
        return "kept", "passes" if attempt.passed else "misses, the best found: " + _first_failure(attempt)
    if not attempt.passed:
        return "rejected", "misses: " + _first_failure(attempt)
    return "rejected", f"passes, but attempt {search.kept} was kept"


def _first_failure(attempt: SearchAttempt) -> str:
    """The first failed check, and how many more (the full list is the attempt's verdict in report.json)."""
    more = len(attempt.failures) - 1
    return attempt.failures[0] + (f" (+{more} more)" if more > 0 else "")


def attempt_rows(search: PrecisionSearch) -> tuple[list[str], list[list[str]]]:
    """The attempt table as header and rows of text; a cell counts the nodes kept in higher precision (their names are
    :func:`node_lists`, folded below the table)."""
    metrics = list(dict.fromkeys(name for a in search.attempts for name in a.metrics))
    batches = _batches(search)
    header = ["#", "tried", f"kept in {search.higher}", *(_LABELS.get(m, m) for m in metrics), "margin"]
    header += [f"b{b} p50 (× fp32)" for b in batches] + ["outcome", "why"]
    rows = []
    for a in search.attempts:
        row = [str(a.number), a.tried, str(len(a.kept_higher))]
        row += [_metric(m, a.metrics[m]) if m in a.metrics else "–" for m in metrics]
        row.append(f"{a.slack:+.2f}" if a.slack is not None else "–")
        row += [f"{a.p50_ms[b]:.3g} ms ({a.speedup[b]:.2f}×)" if b in a.speedup else "–" for b in batches]
        rows.append([*row, *outcome(search, a)])
    return header, rows


def node_lists(search: PrecisionSearch) -> list[tuple[SearchAttempt, str]]:
    """(attempt, its nodes kept in higher precision) for each attempt that kept any: what the tables fold away."""
    return [(a, ", ".join(a.kept_higher)) for a in search.attempts if a.kept_higher]


def plot_batch(search: PrecisionSearch) -> int | None:
    """The batch the plot compares speed at: the one most attempts were timed at (the smallest on a tie)."""
    counts = {b: sum(b in a.speedup for a in search.attempts) for b in _batches(search)}
    return max(sorted(counts), key=lambda b: counts[b]) if counts else None


def _plotted(search: PrecisionSearch) -> tuple[int, list[SearchAttempt]] | None:
    """The batch and the attempts a plot shows: those both timed there and judged; None for fewer than two."""
    batch = plot_batch(search)
    points = [a for a in search.attempts if batch in a.speedup and a.slack is not None]
    return (batch, points) if batch is not None and len(points) >= 2 else None


def has_plot(search: PrecisionSearch) -> bool:
    return _plotted(search) is not None


def plot_png(search: PrecisionSearch) -> bytes | None:
    """:func:`search_figure` as PNG bytes; None when there is nothing to plot."""
    figure = search_figure(search)
    if figure is None:
        return None
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def search_figure(search: PrecisionSearch):
    """Every timed attempt's margin to the budget against its speed, the budget line, the kept attempt marked;
    None when fewer than two attempts were both timed and judged."""
    if (plotted := _plotted(search)) is None:
        return None
    batch, points = plotted
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.axhline(0.0, color="#b00020", linestyle="--", linewidth=1.5, label="budget limit", zorder=1)
    for passed, colour, label in ((True, "#1b9e77", "passes"), (False, "#b00020", "misses")):
        group = [a for a in points if a.passed == passed]
        if group:
            margins = [max(a.slack, MARGIN_FLOOR) for a in group]
            markers = ["v" if a.slack < MARGIN_FLOOR else "o" for a in group]
            for a, margin, marker in zip(group, margins, markers, strict=True):
                ax.scatter(a.speedup[batch], margin, s=45, color=colour, marker=marker, zorder=3)
                ax.annotate(str(a.number), (a.speedup[batch], margin), textcoords="offset points", xytext=(5, 4),
                            fontsize=8)  # fmt: skip
            ax.scatter([], [], color=colour, label=label)
    kept = next((a for a in points if a.number == search.kept), None)
    if kept is not None:
        ax.scatter(kept.speedup[batch], max(kept.slack, MARGIN_FLOOR), s=260, marker="*", color="#e6ab02",
                   edgecolors="black", linewidths=1, zorder=4, label=f"kept: attempt {kept.number}")  # fmt: skip
    ax.axvline(1.0, color="#999999", linewidth=0.8, zorder=0)
    lowest = min(max(a.slack, MARGIN_FLOOR) for a in points)
    ax.set_ylim(min(lowest, 0.0) - 0.1, 1.05)
    ax.set(
        xlabel=f"speed at batch {batch} (× the fp32 graph, higher is faster)",
        ylabel="margin to the budget",
        title=search.title,
    )
    ax.ticklabel_format(axis="both", style="plain", useOffset=False)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot: never over a point
    return fig


def plot_file(search: PrecisionSearch) -> str:
    """The PNG beside report.md that shows ``search``."""
    return f"report-search-{search.variant}.png"


TABLE_LEGEND = (
    "margin: the judge's distance to the budget — 1 as the original, 0 at the limit of the closest metric, "
    "below 0 a miss; p50: one short run of each attempt beside the fp32 graph, each in its own process — "
    "indicative only (a shared machine's speed can flip 2× between two runs); the variants table has the full "
    "benchmark of what was kept"
)
