"""The console entry point: the command runs in a child process that this one waits for.

Candidates run in processes of their own (:mod:`deployopt.isolation`), but the build's own process still runs
native code — the exporter, the graph optimiser, the original model. Should that crash, the user gets one line and
a documented exit code (4: a stage failed; 130 when it was a Ctrl-C or SIGTERM), not a bare 139. Ctrl-C and SIGTERM
are passed on to the child; a SIGKILL of this process takes the child with it. This process imports nothing heavy.
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
    from deployopt.isolation import describe_exit, die_with_parent

    command = [sys.executable, "-P", "-m", "deployopt", *sys.argv[1:]]
    # its own process group: a terminal's Ctrl-C reaches this process only, which passes it on once
    process = subprocess.Popen(command, env={**os.environ, _CHILD: "1"}, process_group=0, preexec_fn=die_with_parent)
    for forwarded in (signal.SIGINT, signal.SIGTERM):  # the child cleans up and exits 130
        signal.signal(forwarded, lambda signum, frame: process.send_signal(signum))
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
