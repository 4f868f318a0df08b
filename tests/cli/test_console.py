"""Terminal output: rich tables and live progress on a terminal, plain text in pipes."""

from __future__ import annotations

import io
import logging
import re

from deployopt.cli import console


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pipes_get_markdown_tables(capsys):
    console.print_table(["variant", "p50 b1"], [["onnx-fp32", "0.05 ms"]])
    assert capsys.readouterr().out.splitlines()[0].startswith("| variant")


def test_a_terminal_gets_a_table_that_fits_its_width(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setenv("COLUMNS", "80")
    batches = (1, 8, 32)
    header = ["variant", "precision", "size", *(f"p50 b{b}" for b in batches)]
    header += [f"vs PyTorch b{b}" for b in batches] + [f"vs ONNX fp32 b{b}" for b in batches]
    header += ["accuracy", "Δ acc", "verify"]
    row = ["onnx-int8", "int8", "71.9 kB"] + ["0.08 ms"] * 3 + ["6.66×"] * 6 + ["99.72%", "+0.00", "pass"]
    console.print_table(header, [row])
    text = re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue())
    assert max(len(line) for line in text.splitlines()) <= 80
    table_header = text.splitlines()[0]
    assert "onnx-int8" in text and "accuracy" in table_header and "vs PyTorch b1" not in table_header
    assert "left out to fit the terminal (vs PyTorch b1, vs PyTorch b8, vs PyTorch b32" in " ".join(text.split())


def test_live_progress_leaves_each_step_with_its_elapsed_time(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    console.configure_logging(logging.INFO)
    try:
        console.progress("export: PyTorch → ONNX")
        console.progress("graph: optimising the ONNX graph")
        console.end_progress()
    finally:
        console.configure_logging(logging.INFO)  # back to a plain handler for the other tests
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue())
    assert "export: PyTorch → ONNX (0.0 s)" in text and "graph: optimising the ONNX graph (" in text
