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
