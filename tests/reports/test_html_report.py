"""report.html: self-contained, with the variant table, three plots and the precision searches; rendered by
headless Chromium at a desktop's and a phone's width (.ci/run installs Debian's chromium where it is missing)."""

from __future__ import annotations

import re
import subprocess

import pytest

from deployopt.reports.html import pareto_front
from tests.reports.browser import CHROMIUM, render

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")


def test_pareto_front_keeps_only_undominated_points():
    points = [("slow-exact", 10.0, 99.0), ("fast-good", 2.0, 98.5), ("fast-bad", 2.5, 90.0), ("fastest", 1.0, 95.0)]
    assert pareto_front(points) == ["slow-exact", "fast-good", "fastest"]


def test_tradeoff_plot_keeps_the_axis_in_range_and_the_front_visible():
    from deployopt.reports.html import _tradeoff_figure

    points = [("pytorch", 0.5, 99.72), ("onnx-fp32", 0.05, 99.72), ("onnx-int8", 0.049, 99.72)]
    figure = _tradeoff_figure(points, 1, "accuracy (%)")
    ax = figure.axes[0]
    assert ax.get_ylim()[1] <= 100.5 and ax.get_ylim()[0] < 99.72  # never far past 100 %, the points inside
    front_line = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    assert len(front_line.get_xdata()) >= 2 and front_line.get_linewidth() >= 2  # a line even for one front point
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "onnx-int8 (front)" in names and "pytorch" in names  # named in the legend, not on top of each other
    assert not ax.texts


def test_a_cosine_axis_near_1_shows_plain_values_without_an_offset():
    from deployopt.reports.html import _tradeoff_figure

    points = [("onnx-fp32", 0.05, 0.99999), ("onnx-fp16", 0.04, 0.99991), ("onnx-int8", 0.03, 0.99988)]
    figure = _tradeoff_figure(points, 1, "cosine to reference")
    figure.canvas.draw()
    axis = figure.axes[0].yaxis
    assert axis.get_offset_text().get_text() == ""
    labels = [float(t.get_text().replace("−", "-")) for t in axis.get_ticklabels() if t.get_text()]
    assert labels and all(0.9998 <= value <= 1.0001 for value in labels)


@pytest.fixture(scope="module")
def built_report(digits_checkpoint, tmp_path_factory):
    from deployopt.api import BenchConfig, BuildConfig, build
    from deployopt.flow.build import QuantizedVariants

    out = tmp_path_factory.mktemp("html") / "run"
    config = BuildConfig(  # ONNX Runtime's variants, the int8 search, one bench round: the page's every part
        out=out,
        runtime="onnxruntime",
        quantize=QuantizedVariants(make=("fp16", "int8")),
        bench=BenchConfig(batch_sizes=(1, 32), max_repeats=1),
    )
    report = build(digits_checkpoint, config)
    return report, out / "report.html"


def test_report_html_is_self_contained_with_table_and_three_plots(built_report):
    report, page = built_report
    text = page.read_text()
    assert '<table id="variants">' in text
    for variant in report.variants:
        assert f"<td>{variant.name}</td>" in text
    assert "<th>vs ONNX fp32 b32</th>" in text and "<th>vs PyTorch b1</th>" in text
    images = re.findall(r'<img (?:class="search" )?alt="([^"]+)"[^>]*src="data:image/png;base64,', text)
    assert images == ["latency vs accuracy", "size per variant", "latency by batch size", "int8 accuracy search"]
    assert "http://" not in text and "https://" not in text  # nothing fetched from elsewhere


@needs_chromium
def test_headless_chromium_renders_a_non_blank_page_with_the_table(built_report, tmp_path):
    import matplotlib.image

    _, page = built_report
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1280,1400", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = matplotlib.image.imread(shot)[..., :3]
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert pixels.std() > 0.05 and 0.02 < not_white < 0.9, f"blank-looking screenshot ({not_white:.3f} non-white)"
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert '<table id="variants">' in dom and dom.count("<tr>") >= 4


@needs_chromium
@pytest.mark.parametrize("width", [1280, 390])
def test_the_page_reads_at_a_desktop_and_a_phone_width(built_report, tmp_path, width):
    """No console error; every table and plot on screen inside the page's width (wide tables scroll in their box,
    the page itself never does); the search table has one row per attempt."""
    report, page = built_report
    measured = render(page, width, tmp_path)
    assert measured["width"] == width and measured["problems"] == []
    assert measured["pageWidth"] <= width
    assert all(t["shown"] for t in measured["tables"]), measured["tables"]
    assert all(i["shown"] and i["decoded"] for i in measured["images"]), measured["images"]
    assert len(measured["images"]) == 4 and all(i["width"] >= min(300, width * 0.8) for i in measured["images"][3:])
    (search,) = [s.search for s in report.stages if s.search]
    (table,) = [t for t in measured["tables"] if t["name"] == search.variant]
    assert table["rows"] == len(search.attempts) >= 2


@needs_chromium
def test_a_long_model_name_does_not_widen_the_page_on_a_phone(built_report, tmp_path):
    """PaddleOCR's file names have no break in 30 characters: the title wraps instead of pushing the page wider."""
    import copy

    from deployopt.reports.html import render_html

    report = copy.deepcopy(built_report[0])
    report.model = "ch_ppocr_mobile_v2.0_cls_infer_quantized_for_the_edge"
    page = tmp_path / "long.html"
    page.write_text(render_html(report), encoding="utf-8")
    assert render(page, 390, tmp_path)["pageWidth"] <= 390


@needs_chromium
def test_the_probe_sees_a_console_error_and_a_broken_image(built_report, tmp_path):
    """The check above can fail: a page that logs an error and shows an image that does not load is caught."""
    _, page = built_report
    broken = tmp_path / "broken.html"
    extra = '<img alt="missing" src="missing.png"><script>console.error("boom")</script>'
    broken.write_text(page.read_text().replace("</body>", extra + "</body>"))
    measured = render(broken, 390, tmp_path)
    assert "boom" in measured["problems"] and any("missing.png" in p for p in measured["problems"])
    assert not next(i for i in measured["images"] if i["alt"] == "missing")["decoded"]


def test_a_variant_whose_outputs_could_not_be_compared_still_renders(built_report):
    """A candidate with another output shape has failures but no per-output metrics (a build crashed on it)."""
    import copy
    import dataclasses

    from deployopt.reports.html import render_html

    report = copy.deepcopy(built_report[0])
    variant = report.variants[-1]
    variant.verify = dataclasses.replace(
        variant.verify, outputs=[], failures=["logits: shape [2, 20] differs from the reference's [1, 10]"]
    )
    page = render_html(report)
    assert "FAIL: logits: shape [2, 20] differs from the reference&#x27;s [1, 10]" in page
