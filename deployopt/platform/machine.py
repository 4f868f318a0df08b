"""The machine a figure was measured on: host, CPU, its decisive flags and, inside a Ray cluster, the node.

A latency or a verdict is true for one CPU; reports carry this beside every figure, and ``deployopt recommend``
keys its recommendations by :func:`cpu_key` so that two machines' choices sit side by side.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import sys

from deployopt.platform.cpu import cpu_name, isa_flags


def ray_node_id() -> str | None:
    """The Ray node this process runs on, when it is connected to a cluster (never imports Ray itself)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def this_machine() -> dict:
    return {
        "host": socket.gethostname(),
        "node": ray_node_id(),
        "processor": cpu_name(),
        "isa_flags": isa_flags(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def cpu_key(machine: dict) -> str:
    """A file-name-safe key for a CPU model and its flags: machines that share it share a recommendation."""
    name = re.sub(r"[^a-z0-9]+", "-", machine["processor"].lower()).strip("-")
    return "-".join([name, *machine["isa_flags"]]) or "unknown-cpu"


def describe_machine(machine: dict | None) -> str:
    """``AMD EPYC 9B45 [avx2, avx512f, …] on host (Ray node 1a2b3c4d5e6f)``: where a figure came from."""
    if not machine:
        return "unknown machine"
    node = f", Ray node {machine['node'][:12]}" if machine.get("node") else ""
    flags = ", ".join(machine["isa_flags"]) or "no decisive flags"
    return f"{machine['processor']} [{flags}] on {machine['host']}{node}"
