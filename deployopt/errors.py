"""One exception hierarchy, mapped to exit codes in one place.

Every failure a user can cause or fix raises a subclass of :class:`DeployoptError`. The CLI prints
``deployopt: error: <message>`` on one line and exits with the class's ``exit_code``; anything else
is a bug and exits with :data:`EXIT_INTERNAL`.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_BUDGET = 1  # an artifact ran but missed its accuracy / size / latency budget
EXIT_USAGE = 2  # bad option or option value (Click uses 2 as well)
EXIT_INPUT = 3  # a model or data file is missing, unreadable, corrupt or does not match the signature
EXIT_STAGE = 4  # a stage (export, graph optimisation, ...) failed on a valid input
EXIT_BACKEND = 5  # a backend, provider or optional package is not available on this machine
EXIT_LOCKED = 6  # another deployopt process holds the run directory
EXIT_INTERNAL = 70  # a bug in deployopt: rerun with --debug and report it
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success: every artifact kept is within its budgets (misses of candidates nobody asked for are notes)",
    EXIT_BUDGET: "an artifact you asked for (fp32, a precision named, any with --strict) missed a budget "
    "(accuracy, size or latency), or a regression against --baseline; the failing metric is named",
    EXIT_USAGE: "bad command-line usage: unknown option, malformed --input or budget value",
    EXIT_INPUT: "bad input file: missing, empty, corrupt, unrecognised, or not matching the signature",
    EXIT_STAGE: "a stage failed on a valid input (e.g. an operator the ONNX exporter cannot convert, a runtime "
    "that crashed on an artifact you asked for)",
    EXIT_BACKEND: "a runtime, provider or optional package is missing or not active on this machine, or no Ray "
    "cluster answers at --ray",
    EXIT_LOCKED: "the run directory is in use by another deployopt process",
    EXIT_INTERNAL: "internal error in deployopt (rerun with --debug and report the traceback)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); finished artifacts are kept, unfinished ones discarded",
}


class DeployoptError(Exception):
    """Base class: a failure with a message meant for the user and a documented exit code."""

    exit_code = EXIT_INTERNAL


class UsageError(DeployoptError):
    """A malformed option value (e.g. ``--input``) or a combination of options that cannot work."""

    exit_code = EXIT_USAGE


class InputFileError(DeployoptError):
    """A model or data file is missing, unreadable, corrupt or does not match the input signature."""

    exit_code = EXIT_INPUT


class StageError(DeployoptError):
    """A stage failed on a valid input, e.g. the exporter met an operator it cannot convert."""

    exit_code = EXIT_STAGE


class RuntimeCrashError(StageError):
    """A runtime died (a signal, the OOM killer) while working on one candidate in its own process
    (:mod:`deployopt.isolation`): that candidate's failure, not the build's."""


class BackendUnavailableError(DeployoptError):
    """A runtime, execution provider or optional package is missing or silently inactive."""

    exit_code = EXIT_BACKEND


class RunDirectoryLockedError(DeployoptError):
    """Another deployopt process is writing to the same run directory."""

    exit_code = EXIT_LOCKED


class BudgetExceededError(DeployoptError):
    """An artifact was produced but misses its budget; raised by library calls that gate."""

    exit_code = EXIT_BUDGET


def file_error(path: object, problem: str, fix: str) -> InputFileError:
    """Build the one-line message every bad-file error uses: the file, what is wrong, what to do."""
    return InputFileError(f"{path}: {problem}; {fix}")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "where", not "what": OpenVINO's chain of source locations and its "Check '...' failed at file:line:" fragments
_LOCATION = re.compile(r"(Exception from |Check '.*?' failed at )\S+:\d+:\s*")
_ORT_PREAMBLE = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_ORT_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)")
# ORT's kernel messages open with the source file and the C++ function that raised
_ORT_SOURCE = re.compile(r"^\S+\.(?:h|hpp|cc|cpp):\d+ [^()]*\([^()]*\)(?: const)? ")
_ONNX_NODE = re.compile(r"<Node\((\w+)\): ([^>]*)>")
# words of a cause, by how much they tell: an unsupported op or a violated shape beats a bare "failed"
_TELLING = {
    "support": 2,
    "no conversion rule": 2,
    "n't ": 2,
    "cannot": 2,
    "out of": 2,
    "unexpected": 2,
    "invalid": 2,
    "mismatch": 2,
    "expected": 2,
    "incompatible": 2,
    "failed": 1,
    "error": 1,
}


def error_reason(error: BaseException | str, limit: int = 300) -> str:
    """The line of an error message that says what went wrong and, where known, at which op or node.

    Runtimes bury it: OpenVINO opens with source locations ("Exception from src/inference/src/cpp/core.cpp:117:")
    and wrappers ("FrontEnd API failed with OpConversionFailure:") and puts the op and why further down; ONNX
    Runtime opens with a status preamble. The most telling line wins (the deepest one of equal weight); the node a
    message names elsewhere is added to it."""
    text = _ANSI.sub("", str(error))
    lines = [_LOCATION.sub("", line).strip().removeprefix("-- ").strip() for line in text.splitlines()]
    lines = [_ORT_PREAMBLE.sub("", line) for line in lines if line and line != "Summary:"]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else ""

    def weight(line: str) -> int:
        lowered = line.lower() + " "
        return max((w for word, w in _TELLING.items() if word in lowered), default=0) - line.endswith(":")

    best = max(reversed(range(len(lines))), key=lambda i: weight(lines[i]))  # ties: the deepest line
    line = lines[best]
    if match := _ORT_NODE.search(line):
        op, name, message = match.groups()
        where = f" ({op} node '{name}')"
        return _ORT_SOURCE.sub("", message)[: max(limit - len(where), 0)] + where
    node = next((m for m in map(_ONNX_NODE.search, lines) if m), None)
    where = f" ({node.group(1)} node '{node.group(2)}')" if node and node.group(2) not in line else ""
    return line[: max(limit - len(where), 0)] + where
