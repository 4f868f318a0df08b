"""A local Ray cluster of two nodes on 127.0.0.1 — a head, and a node advertising one custom resource — for the fleet
tests and benchmarks/fleet.py. It lives in its own temp directory, and stopping it kills only the processes that
name that directory (never another Ray cluster on the machine)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_cluster(temp_dir: str, label: str) -> str:
    """Start the head (1 CPU) and a node with 1 CPU and ``{label: 1}``; return the head's address."""
    port = free_port()
    ray = [str(Path(sys.executable).parent / "ray"), "start", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    env = {**os.environ, "RAY_TMPDIR": temp_dir}
    subprocess.run([*ray, "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard=false",
                    "--temp-dir", temp_dir], check=True, capture_output=True, env=env)  # fmt: skip
    subprocess.run([*ray, "--address", f"127.0.0.1:{port}", "--num-cpus", "1", "--resources",
                    json.dumps({label: 1})], check=True, capture_output=True, env=env)  # fmt: skip
    return f"127.0.0.1:{port}"


def stop_local_cluster(temp_dir: str) -> None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if temp_dir in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(entry.name), signal.SIGKILL)
