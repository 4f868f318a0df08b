"""One exception hierarchy, mapped to exit codes in one place.

Every failure a user can cause or fix raises a subclass of :class:`DeployoptError`. The CLI prints
``deployopt: error: <message>`` on one line and exits with the class's ``exit_code``; anything else
is a bug and exits with :data:`EXIT_INTERNAL`.
"""

from __future__ import annotations

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
    EXIT_OK: "success: every artifact was produced and is within its budgets",
    EXIT_BUDGET: "an artifact missed a budget (accuracy, size or latency); the failing metric is named",
    EXIT_USAGE: "bad command-line usage: unknown option, malformed --input or budget value",
    EXIT_INPUT: "bad input file: missing, empty, corrupt, unrecognised, or not matching the signature",
    EXIT_STAGE: "a stage failed on a valid input (e.g. an operator the ONNX exporter cannot convert)",
    EXIT_BACKEND: "a runtime, provider or optional package is missing or not active on this machine",
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
