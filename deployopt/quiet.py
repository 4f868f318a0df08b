"""Keep library chatter (prints, warnings, logging, C++ writes to stdout/stderr) out of the user's terminal.

Exporters and quantizers talk a lot; deployopt keeps what they say in a log (saved in the run
directory) and shows it only with ``--verbose``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings


@contextlib.contextmanager
def capture_output(log: io.StringIO, verbose: bool):
    """Send library output to ``log``: Python prints, warnings, root-logger warnings, C++ writes to fds 1 and 2."""
    if verbose:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization warns through the root logger
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            for fd in saved:
                os.dup2(sink.fileno(), fd)
            with (
                contextlib.redirect_stdout(log),
                contextlib.redirect_stderr(log),
                warnings.catch_warnings(record=True) as caught,
            ):
                warnings.simplefilter("always")
                try:
                    yield
                finally:
                    for item in caught:
                        log.write(f"warning: {item.category.__name__}: {item.message}\n")
        finally:
            root.setLevel(previous_level)
            for fd, original in saved.items():
                os.dup2(original, fd)
                os.close(original)
            sink.seek(0)
            log.write(sink.read().decode(errors="replace"))
