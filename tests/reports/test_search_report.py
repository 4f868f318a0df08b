"""A precision search as a table of attempts and a plot: the same record in report.md, report.html and report.json."""

from __future__ import annotations

from deployopt.reports.html import render_html
from deployopt.reports.model import BuildReport, render_markdown
from deployopt.reports.search import MARGIN_FLOOR, attempt_rows, search_figure
from deployopt.types import PrecisionSearch, SearchAttempt, StepRecord

MANY = tuple(f"/layer{i}/Conv" for i in range(55))


def _search(timed: bool = True) -> PrecisionSearch:
    def attempt(number, tried, kept, cosine, slack, failures, speed):
        p50 = {1: 1.0 / speed, 32: 20.0 / speed} if timed else {}
        speedup = {1: speed, 32: speed} if timed else {}
        metrics = {"cosine": cosine, "top1_agreement": 0.97 + 0.01 * number}
        return SearchAttempt(number, tried, kept, metrics, slack, failures, p50, speedup)

    miss = ("logits: cosine 0.98 below budget 0.995", "logits: top1_agreement 0.97 below budget 0.98")
    return PrecisionSearch(
        "int8 accuracy search",
        "onnx-int8",
        "float",
        3,
        "attempt 3 passes with the fewest nodes in float (55)",
        (
            attempt(1, "calibration: minmax", (), 0.98, -4.0, miss, 2.1),
            attempt(2, "mixed precision: minmax", MANY[:8], 0.99, -0.3, miss, 1.9),
            attempt(3, "mixed precision: minmax", MANY, 0.999, 0.8, (), 1.4),
            attempt(4, "mixed precision: minmax", (*MANY, "/head/Gemm"), 0.9995, 0.9, (), 1.2),
        ),
    )


def _report(search: PrecisionSearch) -> BuildReport:
    source = {"path": "m.onnx", "kind": "onnx", "sha256": "0" * 64}
    report = BuildReport("m", "/tmp/run", source, "generated", 8, [1, 32], 2)
    report.stages = [StepRecord("int8", False, 1.0, "static quantization, kept …", search)]
    return report


def test_one_row_per_attempt_with_each_metric_the_margin_speed_per_batch_and_the_outcome():
    header, rows = attempt_rows(_search())
    assert header[:5] == ["#", "tried", "kept in float", "cosine", "top-1"]
    assert header[5:] == ["margin", "b1 p50 (× fp32)", "b32 p50 (× fp32)", "outcome", "why"]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"] and [r[2] for r in rows] == ["0", "8", "55", "56"]
    assert rows[0][-2:] == ["rejected", "misses: logits: cosine 0.98 below budget 0.995 (+1 more)"]
    assert rows[2][-2:] == ["kept", "passes"] and rows[3][-2:] == ["rejected", "passes, but attempt 3 was kept"]
    assert rows[2][3:8] == ["0.99900", "100.0%", "+0.80", "0.714 ms (1.40×)", "14.3 ms (1.40×)"]


def test_report_md_has_a_section_per_search_with_its_plot_and_the_node_lists_folded():
    text = render_markdown(_report(_search()))
    section = text[text.index("## Precision searches") :]
    assert "### int8 accuracy search (onnx-int8)" in section
    assert "**Kept: attempt 3** — attempt 3 passes with the fewest nodes in float (55)." in section
    assert "![int8 accuracy search](report-search-onnx-int8.png)" in section
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # the header and one row per attempt
    assert "/layer0/Conv" not in "\n".join(table)  # 55 names do not go into a cell
    folded = section[section.index("<details>") : section.index("</details>")]
    assert f"- attempt 3 (55): {', '.join(MANY)}" in folded and "- attempt 1" not in folded


def test_report_html_draws_the_search_table_plot_and_folded_nodes():
    page = render_html(_report(_search()))
    section = page[page.index('<section class="search" id="search-onnx-int8">') :]
    table = section[section.index('<table class="attempts"') : section.index("</table>")]
    assert table.count("<tr") == 1 + 4 and table.count('<tr class="kept">') == 1
    assert '<td class="fail">rejected</td>' in table and '<td class="pass">kept</td>' in table
    assert "/layer0/Conv" not in table  # counts in the table, the names folded below it
    assert section.index('<img class="search" alt="int8 accuracy search"') < section.index("<table")
    assert "<details><summary>nodes kept in float, by attempt</summary>" in section and "/layer54/Conv" in section


def test_the_plot_marks_the_budget_line_and_the_kept_attempt_and_keeps_far_misses_on_the_floor():
    figure = search_figure(_search())
    ax = figure.axes[0]
    budget = next(line for line in ax.get_lines() if line.get_label() == "budget limit")
    assert set(budget.get_ydata()) == {0.0}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["budget limit", "passes", "misses", "kept: attempt 3"]
    kept = next(c for c in ax.collections if c.get_label() == "kept: attempt 3")
    assert kept.get_offsets().tolist() == [[1.4, 0.8]]
    drawn = [tuple(c.get_offsets()[0]) for c in ax.collections if len(c.get_offsets()) == 1]
    assert (2.1, MARGIN_FLOOR) in drawn  # the miss at margin -4 sits on the floor
    assert ax.get_ylim()[0] < MARGIN_FLOOR and ax.get_ylim()[1] >= 1.0
    assert "batch 1 (× the fp32 graph" in ax.get_xlabel()


def test_an_untimed_search_is_a_table_without_a_plot():
    search = _search(timed=False)
    assert search_figure(search) is None
    text = render_markdown(_report(search))
    assert "report-search-" not in text and "| 3 | mixed precision: minmax | 55 " in text
    assert "No plot: fewer than two attempts were timed" in render_html(_report(search))


def test_the_search_travels_through_report_json():
    report = _report(_search())
    again = BuildReport.from_json(report.to_json())
    assert again.stages[0].search == report.stages[0].search
