"""File helpers that keep the "nothing lost, nothing half-written" promise.

Every output goes to a temporary name in the destination directory and is renamed into place only
when complete, so an interrupted run never leaves a file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 20


def _default_file_mode() -> int:
    """What ``open()`` would give a new file (0o666 less the umask); mkstemp's 0o600 would hide outputs."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's relative file names and contents (an image-folder dataset)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return sha256_json([(str(p.relative_to(path)), sha256_file(p)) for p in files])


def sha256_json(value: object) -> str:
    """Hash of a JSON-serialisable value, independent of dict ordering."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; rename it into place only if the block succeeds."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(destination: str | os.PathLike, text: str) -> None:
    with atomic_path(destination) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(destination: str | os.PathLike, data: bytes) -> None:
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(destination: str | os.PathLike, value: object) -> None:
    write_text_atomic(destination, json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> object:
    """Parse a JSON file; a damaged file (e.g. from a tool that wrote in place) reads as None."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def remove_partials(directory: str | os.PathLike) -> int:
    """Delete temporary files left by a killed run; return how many were removed."""
    removed = 0
    for leftover in Path(directory).glob(".*.partial"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed
