"""report.html: self-contained, with the variant table and three plots; rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from deployopt.reports.html import pareto_front

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
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
    config = BuildConfig(out=out, quantize=QuantizedVariants(make=("fp16",)), bench=BenchConfig(batch_sizes=(1, 32)))
    report = build(digits_checkpoint, config)
    return report, out / "report.html"


def test_report_html_is_self_contained_with_table_and_three_plots(built_report):
    report, page = built_report
    text = page.read_text()
    assert '<table id="variants">' in text
    for variant in report.variants:
        assert f"<td>{variant.name}</td>" in text
    assert "<th>vs ONNX fp32 b32</th>" in text and "<th>vs PyTorch b1</th>" in text
    images = re.findall(r'<img alt="([^"]+)"[^>]*src="data:image/png;base64,', text)
    assert images == ["latency vs accuracy", "size per variant", "latency by batch size"]
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
