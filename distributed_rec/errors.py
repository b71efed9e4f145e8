"""Errors a user can act on: each names the file, line or field and what was expected."""

from __future__ import annotations

from pathlib import Path


class DistributedRecError(Exception):
    """Base of every error the command line reports as one line instead of a traceback."""


class DataError(DistributedRecError):
    """Malformed input data: names the file, the line (1-based) when known, and the problem."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ArtifactError(DistributedRecError):
    """A stage's input artifact is missing or damaged; says which stage produces it."""


class StageUnavailableError(DistributedRecError):
    """A pipeline stage that this version does not provide yet."""
