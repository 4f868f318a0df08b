"""The run directory: artifacts, ``manifest.json`` (lineage, hashes, tool versions, metrics) and caching.

Each stage's outputs are keyed by a hash of its inputs' content, its config and the tool versions. A
re-run with the same key finds the recorded outputs (checked by content hash) and skips the work.
Outputs are produced under temporary names and renamed into place before the manifest records them,
so a killed run leaves either a complete, recorded artifact or nothing a later run would trust.
An exclusive lock keeps two processes from writing one run directory at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from deployopt import __version__
from deployopt.errors import RunDirectoryLockedError, UsageError
from deployopt.fsutil import atomic_path, read_json, remove_partials, sha256_file, sha256_json, write_json_atomic

# bumped when a stage's recorded details change shape: a run directory of another format is rebuilt, not misread
# (2: every precision search's attempts carry the judge's metrics, its slack and their timings)
MANIFEST_FORMAT = "deployopt.manifest/2"
LOCK_WAIT_SECONDS = 2.0
_TOOL_PACKAGES = (
    "torch",
    "onnx",
    "onnxscript",
    "onnxslim",
    "onnxruntime",
    "onnxruntime-gpu",
    "numpy",
    "torchvision",
    "tensorrt",
    "openvino",
)


def tool_versions() -> dict[str, str]:
    """Versions of the packages that shape the artifacts (read from metadata: nothing is imported)."""
    versions = {"deployopt": __version__, "python": platform.python_version()}
    for package in _TOOL_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class StageOutcome:
    record: dict
    cached: bool

    def output(self, label: str) -> Path:
        return Path(self.record["outputs"][label]["path"])


class RunDirectory:
    """A locked run directory and its manifest; use as a context manager."""

    def __init__(self, root: str | Path, *, force: bool = False) -> None:
        self.root = Path(root)
        self.force = force
        self.manifest_path = self.root / "manifest.json"
        self._lock_handle = None
        self.manifest: dict[str, Any] = {}

    def __enter__(self) -> RunDirectory:
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root}: exists and is not a directory; choose another --out")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock_handle = open(self.root / ".lock", "w")
        except OSError as exc:  # read-only, no permission, a path under /proc, disk full
            raise UsageError(
                f"{self.root}: cannot create the run directory ({exc.strerror}); choose a writable --out"
            ) from exc
        try:
            self._lock_within(LOCK_WAIT_SECONDS)
            if not self._holds_the_lock_file():  # the holder finished and removed it between our open and flock
                self._lock_handle.close()
                self._lock_handle = None
                return self.__enter__()
        except BlockingIOError:
            self._lock_handle.close()
            raise RunDirectoryLockedError(
                f"{self.root}: another deployopt process is using this run directory; "
                "wait for it or choose another --out"
            ) from None
        remove_partials(self.root)
        self.manifest = self._load_manifest()
        return self

    def _lock_within(self, seconds: float) -> None:
        """The exclusive lock, waiting a moment for a holder that is exiting (a build just killed: the kernel
        releases its lock when the process is gone); BlockingIOError when it is still held after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                return fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _holds_the_lock_file(self) -> bool:
        try:
            return os.fstat(self._lock_handle.fileno()).st_ino == os.stat(self.root / ".lock").st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, *exc: object) -> None:
        """Release the lock and remove its file (still holding it, so no other process can be between)."""
        if self._lock_handle is not None:
            (self.root / ".lock").unlink(missing_ok=True)
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def _load_manifest(self) -> dict[str, Any]:
        if self.manifest_path.exists():
            existing = read_json(self.manifest_path)
            if isinstance(existing, dict) and existing.get("format") == MANIFEST_FORMAT:
                return existing
        return {"format": MANIFEST_FORMAT, "created": _now(), "stages": {}, "artifacts": {}, "metrics": {}}

    def save(self) -> None:
        self.manifest["updated"] = _now()
        self.manifest["tools"] = tool_versions()
        write_json_atomic(self.manifest_path, self.manifest)

    def path(self, name: str) -> Path:
        return self.root / name

    # ------------------------------------------------------------------------------------------ stages

    def run_stage(
        self,
        name: str,
        config: BaseModel,
        inputs: dict[str, str],
        outputs: dict[str, str],
        work: Callable[[dict[str, Path]], dict],
    ) -> StageOutcome:
        """Run ``work`` unless a recorded run with the same key has intact outputs.

        ``inputs`` maps a label to the content hash of each input; ``outputs`` maps a label to a file
        name in the run directory. ``work`` receives temporary paths to write, returns JSON details,
        and its files are renamed into place only after it returns.
        """
        key = sha256_json(  # the output names too: a stage that now writes another file is not reused
            {
                "stage": name,
                "config": config.model_dump(mode="json"),
                "inputs": inputs,
                "outputs": outputs,
                "tools": tool_versions(),
            }
        )
        previous = self.manifest["stages"].get(name)
        if not self.force and previous and previous.get("key") == key and self._outputs_intact(previous):
            return StageOutcome(previous, cached=True)
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            temporaries = {
                label: stack.enter_context(atomic_path(self.root / filename)) for label, filename in outputs.items()
            }
            details = work(temporaries)
        record = {
            "stage": name,
            "key": key,
            "config": config.model_dump(mode="json"),
            "inputs": inputs,
            "outputs": {label: self._describe(self.root / filename) for label, filename in outputs.items()},
            "started": _now(),
            "seconds": round(time.perf_counter() - started, 3),
            "tools": tool_versions(),
            "details": details,
        }
        self.manifest["stages"][name] = record
        self.save()
        return StageOutcome(record, cached=False)

    def cached_result(self, name: str, key_material: dict) -> dict | None:
        """A previously recorded metric result under the same key (verification is deterministic)."""
        key = sha256_json(key_material)
        entry = self.manifest["metrics"].get(name)
        if not self.force and entry and entry.get("key") == key:
            return entry["result"]
        return None

    def record_result(self, name: str, key_material: dict, result: dict) -> None:
        self.manifest["metrics"][name] = {"key": sha256_json(key_material), "result": result, "recorded": _now()}
        self.save()

    def record_artifact(self, name: str, path: Path, **facts: Any) -> None:
        self.manifest["artifacts"][name] = self._describe(path) | facts
        self.save()

    @staticmethod
    def _describe(path: Path) -> dict:
        return {"path": str(path), "sha256": sha256_file(path), "size_bytes": path.stat().st_size}

    @staticmethod
    def _outputs_intact(record: dict) -> bool:
        for output in record.get("outputs", {}).values():
            path = Path(output["path"])
            if not path.is_file() or sha256_file(path) != output["sha256"]:
                return False
        return True
