"""Run one candidate's work in a process of its own, so that a runtime that crashes takes only that candidate.

OpenVINO, ONNX Runtime and NNCF are native code: a segfault, an abort or the kernel's OOM killer ends the whole
process, and an in-process build would end with an undocumented exit code and every other candidate lost.
:func:`run_isolated` runs a picklable callable in ``python -m deployopt.isolation``; its result (or the
deployopt error it raised) comes back by pickle, its progress lines reach the parent's progress sink as they
happen, and everything else it prints is passed through to stderr. A child that dies raises
:class:`~deployopt.errors.RuntimeCrashError` naming the signal and the last line it printed, after removing
the hidden scratch entries it left in ``scratch`` — the caller's atomic outputs are discarded as on any error.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from deployopt.errors import RuntimeCrashError

T = TypeVar("T")
_PROGRESS = "\x1edeployopt-progress:"  # marks a progress line in the child's output
_SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []  # import the installed deployopt, not the cwd's
_RUNNING: set[int] = set()  # process groups of the children running now (several at once under `run --jobs`)


def child_progress(message: str) -> None:
    """The progress sink inside the child: a marked line the parent hands to its own sink."""
    sys.stderr.write(f"{_PROGRESS}{message}\n")
    sys.stderr.flush()


def run_isolated(
    label: str,
    work: Callable[..., T],
    kwargs: dict[str, Any],
    progress: Callable[[str], None],
    scratch: Path | None = None,
    timeout: float | None = None,
) -> T:
    """``work(**kwargs)`` in a child process; ``label`` names the candidate in a crash message. Pass
    :func:`child_progress` wherever ``work`` reports progress: its lines come back through ``progress``. A child
    still running after ``timeout`` seconds is killed, which raises RuntimeCrashError as a crash does."""
    before = _hidden_entries(scratch)
    with tempfile.TemporaryDirectory(prefix="deployopt-isolated-") as tmp:
        job, result = Path(tmp) / "job.pickle", Path(tmp) / "result.pickle"
        job.write_bytes(pickle.dumps((work, kwargs, str(result)), protocol=pickle.HIGHEST_PROTOCOL))
        process = subprocess.Popen(
            [sys.executable, *_SAFE_PATH, "-m", "deployopt.isolation", str(job), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream: a library printing to stdout must not reach the CLI's stdout
            text=True,
            errors="replace",
            process_group=0,  # its own group: what it forks goes with it (see _end_group)
        )
        _RUNNING.add(process.pid)
        last_lines: deque[str] = deque(maxlen=20)
        reader = threading.Thread(target=_relay, args=(process.stdout, progress, last_lines), daemon=True)
        reader.start()
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
            _remove_new_entries(scratch, before)
            raise RuntimeCrashError(f"{label}: still running after {timeout:.0f} s; stopped") from None
        except BaseException:  # Ctrl-C or SIGTERM: the child goes too, and so does what it had half-written
            process.kill()
            process.wait()
            _remove_new_entries(scratch, before)
            raise
        finally:
            _RUNNING.discard(process.pid)
            _end_group(process.pid)
            reader.join()
        if result.exists():
            outcome, value = pickle.loads(result.read_bytes())
            if outcome == "error":
                raise value
            return value
    _remove_new_entries(scratch, before)
    raise RuntimeCrashError(f"{label}: {describe_exit(code)} in its own process; {_last_words(last_lines)}")


def stop_running_children(grace: float = 10.0) -> None:
    """Stop every candidate's process this process is waiting for (from another thread: Ctrl-C while ``run --jobs``
    builds several models): each is interrupted as by Ctrl-C, so it removes what it half-wrote and its run
    directory's lock, and is killed if it is still running after ``grace`` seconds."""
    for group in list(_RUNNING):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(group, signal.SIGINT)
    deadline = time.monotonic() + grace
    while _RUNNING and time.monotonic() < deadline:  # the waiting threads drop each one as it exits
        time.sleep(0.05)
    for group in list(_RUNNING):
        _end_group(group)


def _end_group(group: int) -> None:
    """Kill what the child forked and left behind (a native library's helper that outlives it would hold its output
    pipe open, and this process would wait for that pipe's end forever)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left of it
        os.killpg(group, signal.SIGKILL)


def describe_exit(code: int) -> str:
    """A child's exit status in words: the signal that killed it (SIGKILL is most often the OOM killer)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
        return f"the runtime crashed ({name}){hint}"
    return f"the process exited with code {code} before returning a result"


def _relay(stream, progress: Callable[[str], None], last_lines: deque[str]) -> None:
    for line in stream:
        line = line.rstrip("\n")
        if line.startswith(_PROGRESS):
            progress(line[len(_PROGRESS) :])
        elif line.strip():
            last_lines.append(line.strip())
            sys.stderr.write(line + "\n")


def _last_words(lines: deque[str]) -> str:
    return f"its last output: {lines[-1][:300]}" if lines else "it printed nothing"


def _hidden_entries(folder: Path | None) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(".")} if folder and folder.is_dir() else set()


def _remove_new_entries(folder: Path | None, before: set[str]) -> None:
    """Scratch files and folders (hidden names) the crashed child created in ``folder``: nothing half-written stays."""
    import shutil

    for name in _hidden_entries(folder) - before:
        path = folder / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def die_with_parent() -> None:
    """The kernel kills this process when its parent dies (a SIGKILL of the parent cannot be passed on; a Ray worker
    lost mid-build takes its candidates with it), so no orphan keeps writing to the run directory."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _child(job_path: str, parent: int) -> int:
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above: nobody waits for this result
        return 1
    work, kwargs, result_path = pickle.loads(Path(job_path).read_bytes())
    try:
        return _run_child(work, kwargs, result_path)
    except KeyboardInterrupt:  # stopped by its parent (stop_running_children): cleaned up on the way out, quietly
        sys.stderr.flush()
        os._exit(130)


def _run_child(work: Callable[..., Any], kwargs: dict[str, Any], result_path: str) -> int:
    from deployopt.errors import DeployoptError
    from deployopt.fsutil import write_bytes_atomic

    try:
        outcome = ("ok", work(**kwargs))
    except DeployoptError as exc:  # a refusal the parent shows as it would in process
        outcome = ("error", exc)
    except Exception as exc:  # a bug: the parent reports it as its own internal error, with the child's traceback
        import traceback

        outcome = ("error", RuntimeError(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    write_bytes_atomic(result_path, pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # native libraries' exit handlers have crashed processes that had finished their work


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1], int(sys.argv[2])))
