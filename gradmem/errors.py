"""One error hierarchy; the CLI maps each class to its exit code in one place."""
from __future__ import annotations


class GradmemError(Exception):
    """Base class: a message meant for the user, and the exit code the CLI returns."""

    exit_code = 1


class UsageError(GradmemError):
    """Bad command-line input: a missing file, a bad -p value, an unknown option."""

    exit_code = 2


class ScenarioError(GradmemError):
    """The scenario could not be loaded or raised while it ran."""

    exit_code = 3


class InternalError(GradmemError):
    """gradmem's own code failed while the scenario ran (the scenario itself ran on)."""

    exit_code = 5


class Interrupted(GradmemError):
    """The run was stopped with Ctrl-C; what was recorded is still written."""

    exit_code = 130


class TraceFileError(GradmemError):
    """A trace file that is missing, truncated, not a trace, or from a newer gradmem."""

    exit_code = 4


def where(filename: str, lineno: int | None) -> str:
    """'file.py:12' or 'file.py' when the line is unknown."""
    return f"{filename}:{lineno}" if lineno else filename
