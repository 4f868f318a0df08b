"""What this CPU can do, read once from ``/proc/cpuinfo``: its name and the ISA flags deployopt decides by.

The int8 stage picks 7-bit weights on x86 without VNNI (its U8S8 kernels sum in int16 and saturate);
reports and benchmarks record the same flags so a figure can be traced to the machine that made it.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# Flags that change which kernels ONNX Runtime / OpenVINO run; reported in this order.
DECISIVE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16")
_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    name, flags = platform.machine(), frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == platform.machine():
            name = value.strip()
        elif key.strip() in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return name, flags


def cpu_name() -> str:
    return _cpuinfo()[0]


def isa_flags() -> list[str]:
    """The decisive ISA flags this CPU has, e.g. ``['avx2', 'avx512f', 'avx512_vnni']``."""
    flags = _cpuinfo()[1]
    return [flag for flag in DECISIVE_FLAGS if flag in flags]


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def x86_without_vnni() -> bool:
    """True on x86 CPUs lacking VNNI, whose U8S8 kernels sum products in int16 and can saturate."""
    if not is_x86() or not _cpuinfo()[1]:
        return False  # not x86, or flags unknown: assume a modern CPU; verification still guards accuracy
    return lacks_vnni(_cpuinfo()[1])


def lacks_vnni(flags) -> bool:
    """Whether a CPU with these flags (this one's, or another machine's from its report) has no VNNI instruction."""
    return not any(flag in flags for flag in _VNNI)


def describe_cpu() -> str:
    """One line for reports and benchmark headers: name, core count and decisive flags."""
    import os

    flags = ", ".join(isa_flags()) or "none of " + "/".join(DECISIVE_FLAGS)
    return f"{cpu_name()}, {os.cpu_count()} cores, flags: {flags}"
