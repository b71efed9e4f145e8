"""Bad input handling: an error naming file and line (strict) or a counted skip (lenient)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from distributed_rec.errors import DataError

log = logging.getLogger(__name__)

_WARN_PER_REASON = 3


class Issues:
    """Collects problems found while reading one kind of record (interactions or metadata).

    strict: the first problem raises :class:`DataError` naming the file, line and problem.
    lenient: the record is skipped and counted under `reason`; the counts go to stats.json.
    """

    def __init__(self, mode: str, quiet: bool = False) -> None:
        self.lenient = mode == "lenient"
        self.quiet = quiet
        """No warnings logged (a provisional read whose skips are counted again later)."""
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        """reason -> 'file:line: problem' of the first skip counted under it."""
        self._reports: Counter[str] = Counter()

    def report(
        self, reason: str, path: str | Path, problem: str, line: int | None = None, count: int = 1
    ) -> None:
        """Raise (strict) or count `count` skipped records under `reason` (lenient)."""
        if not self.lenient:
            raise DataError(path, problem, line)
        self.counts[reason] += count
        self._reports[reason] += 1
        where = f"{path}:{line}" if line is not None else str(path)
        self.first.setdefault(reason, f"{where}: {problem}")
        if self._reports[reason] <= _WARN_PER_REASON and not self.quiet:
            log.warning("skipped (%s) %s: %s", reason, where, problem)

    def merge(self, later: Issues) -> None:
        """Add the skips of `later`, the issues of input that follows this one's."""
        self.counts.update(later.counts)
        self._reports.update(later._reports)
        for reason, where in later.first.items():
            self.first.setdefault(reason, where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return {reason: int(n) for reason, n in sorted(self.counts.items())}

    def summary(self) -> str:
        """'reason: count (first: file:line: problem); ...', most frequent reason first."""
        return "; ".join(
            f"{reason}: {n} (first: {self.first[reason]})"
            if reason in self.first
            else f"{reason}: {n}"
            for reason, n in self.counts.most_common()
        )
