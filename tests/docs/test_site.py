"""The documentation site builds strictly, covers every verb with real output, and README stays the front door."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _verbs() -> list[str]:
    from deployopt.cli import cli

    return sorted(cli.commands)


def test_the_site_builds_strictly_with_the_generated_references(tmp_path):
    """``mkdocs build --strict``: a broken link or anchor, a page missing from the nav, or a reference that cannot be
    generated fails it. The CLI reference is made from the Click commands and the API page from the docstrings at
    build time, so they cannot drift; both are checked to be there."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    cli_page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for verb in _verbs():
        assert f'id="deployopt-{verb}"' in cli_page, f"the CLI reference lacks {verb}"
    assert "--calibration-method" in cli_page and "--bench-on" in cli_page  # the options, not only the names
    api_page = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for function in ("build", "verify_models", "bench_models", "quantize", "run_fleet", "recommend"):
        assert f'id="deployopt.api.{function}"' in api_page


@pytest.mark.parametrize("verb", _verbs())
def test_every_verb_has_a_page_with_real_output(verb):
    page = ROOT / "docs" / "commands" / f"{verb}.md"
    assert page.exists(), f"docs/commands/{verb}.md is missing"
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# deployopt {verb}")
    assert f"$ deployopt {verb}" in text, f"docs/commands/{verb}.md shows no example run"
    assert f"commands/{verb}.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_readme_is_the_front_door():
    """At most 250 lines: the two commands, one real build output with its recommendation, every verb in one table
    linking to its page, and the way to the docs; every relative link it has leads to a file."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert ".[cpu,openvino]" in text and "deployopt demo" in text and "python -m pytest -q" in text
    assert "recommended (fastest within budget" in text and "PASS: every artifact is within its budget" in text
    table = {m.group(1).split()[0]: m.group(2) for m in re.finditer(r"^\| \[`([^`]+)`\]\(([^)]+)\) \|", text, re.M)}
    assert sorted(table) == _verbs()
    assert all(target == f"docs/commands/{verb}.md" for verb, target in table.items())
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_ci_installs_the_docs_extra_and_chromium():
    """.ci/run runs README's test command (with the docs extra, so the site build above runs) after installing
    Debian's chromium where it is missing, so the report's browser test runs instead of skipping."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = next(line for line in README.read_text(encoding="utf-8").splitlines() if "pytest -q" in line)
    extras = re.search(r'pip install -e "(\.\[[^]]+\])"', command).group(1)
    assert "docs" in extras and extras in script
    assert command in (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")  # the same two commands
    assert "apt-get install -y -qq chromium" in script and "command -v chromium" in script
