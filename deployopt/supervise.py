"""The console entry point: the command runs in a child process that this one waits for.

Candidates run in processes of their own (:mod:`deployopt.isolation`), but the build's own process still runs
native code — the exporter, the graph optimiser, the original model. Should that crash, the user gets one line and
a documented exit code (4: a stage failed; 130 when it was a Ctrl-C or SIGTERM), not a bare 139. Ctrl-C reaches the
child through the terminal's process group; SIGTERM is passed on. This process imports nothing heavy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

_CHILD = "DEPLOYOPT_SUPERVISED"  # set in the child: it runs the CLI itself


def entry() -> None:
    if os.environ.get(_CHILD):
        from deployopt.cli import main

        main()
        return
    from deployopt.errors import EXIT_INTERRUPTED, EXIT_STAGE
    from deployopt.isolation import describe_exit

    command = [sys.executable, "-P", "-m", "deployopt", *sys.argv[1:]]
    process = subprocess.Popen(command, env={**os.environ, _CHILD: "1"})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child has it too: it cleans up and exits 130
    signal.signal(signal.SIGTERM, lambda signum, frame: process.terminate())
    code = process.wait()
    if code >= 0:
        sys.exit(code)
    if -code in (signal.SIGINT, signal.SIGTERM):
        sys.exit(EXIT_INTERRUPTED)
    print(
        f"deployopt: error: {describe_exit(code)} in deployopt's own process, in the step named last above; "
        "rerun with --debug and report it",
        file=sys.stderr,
    )
    sys.exit(EXIT_STAGE)
