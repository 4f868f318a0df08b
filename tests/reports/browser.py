"""report.html in headless Chromium, as a reader sees it at a given width.

The page is loaded in an iframe of that width (a phone's 390 px too: Chromium's own window is never narrower
than 500 px), with a probe added to the top of a copy's ``<head>``: it records script errors, failed images and
``console.error`` calls, and on load measures every table and image — on screen, inside the page's width (a
wide table scrolls inside its box), decoded — and posts the result to the frame's parent, which the test reads
back from ``--dump-dom``."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

_PROBE = """<script>
const problems = [];
const failed = e => e.message || 'failed to load ' + (e.target.src || '').slice(-80);
window.addEventListener('error', e => problems.push(failed(e)), true);
const consoleError = console.error;
console.error = (...args) => { problems.push(args.join(' ')); consoleError(...args); };
window.addEventListener('load', () => {
  const width = window.innerWidth;
  const shown = element => {
    const box = (element.closest('.scroll') || element).getBoundingClientRect(), own = element.getBoundingClientRect();
    return own.width > 0 && own.height > 0 && box.left >= 0 && box.right <= width + 1
      && getComputedStyle(element).visibility !== 'hidden' && getComputedStyle(element).display !== 'none';
  };
  parent.postMessage(JSON.stringify({
    width, pageWidth: document.documentElement.scrollWidth, problems,
    tables: [...document.querySelectorAll('table')].map(t => ({
      name: t.id || t.dataset.search, rows: t.tBodies[0].rows.length, shown: shown(t)})),
    images: [...document.querySelectorAll('img')].map(i => ({
      alt: i.alt, shown: shown(i), decoded: i.naturalWidth > 0, width: i.getBoundingClientRect().width})),
  }), '*');
});
</script>"""


def render(page: Path, width: int, folder: Path) -> dict:
    """What the probe measured on ``page`` laid out ``width`` pixels wide."""
    probed = folder / f"probed-{width}.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    harness = folder / f"harness-{width}.html"
    harness.write_text(
        f'<!DOCTYPE html><html><body style="margin:0"><pre id="measured"></pre>'
        f'<iframe src="{probed.name}" style="width:{width}px;height:4000px;border:0"></iframe>'
        "<script>addEventListener('message', e => document.getElementById('measured').textContent = e.data)"
        "</script></body></html>",
        encoding="utf-8",
    )
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,900",
         "--virtual-time-budget=10000", "--dump-dom", harness.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    measured = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert measured and measured.group(1), f"the probe reported nothing: {dom[-400:]}"
    return json.loads(html.unescape(measured.group(1)))
