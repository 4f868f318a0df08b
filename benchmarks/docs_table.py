"""Where a benchmark's result goes: printed, and appended to docs/benchmarks.md (its dated record) unless not wanted."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def publish(table: str, *, write: bool) -> None:
    print(table)
    if write:
        with DOCS.open("a") as docs:
            docs.write("\n" + table)


def header(title: str, what: str) -> list[str]:
    """A result's first lines: its title and date, the machine (CPU and flags), the command that made it, and what
    it ran (``what`` follows the command on its line)."""
    from deployopt.platform.cpu import describe_cpu

    command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    return [
        f"## {title} — {date.today().isoformat()}",
        "",
        f"- Machine: {describe_cpu()}",
        f"- Command: `{command}`; {what}",
    ]
