"""Outputs are written atomically and get the same permissions a plain ``open()`` would give them."""

from __future__ import annotations

import os

import pytest

from deployopt.fsutil import atomic_path, write_text_atomic


def test_atomic_output_has_the_usual_file_mode(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = tmp_path / "written.txt"
    write_text_atomic(written, "x")
    assert os.stat(written).st_mode == os.stat(plain).st_mode


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    destination = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(destination) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
