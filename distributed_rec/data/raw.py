"""The common raw form every reader returns, and vectorised checks of interaction rows.

Interactions: one row per event in input order with columns user, item (string or integer),
timestamp int64 and line int64 (1-based source line, -1 where lines mean nothing, e.g. LC-Rec).
Items: column `item` plus the format's metadata fields (strings, lists of strings, mappings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distributed_rec.data.issues import Issues

_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


@dataclass
class RawData:
    """A dataset as read: interactions in input order, item metadata, and what was skipped."""

    interactions: pa.Table
    items: pa.Table
    interactions_path: Path
    items_path: Path
    issues: Issues
    meta_issues: Issues
    aliases: dict[str, str] = field(default_factory=dict)
    """Text field name -> this format's column (e.g. 'brand' -> 'store' for Amazon 2023)."""
    sources: list[Path] = field(default_factory=list)
    """Files of the optional int32 interactions column `source` (several input files)."""

    def row_path(self, row: int) -> Path:
        """The file interaction `row` came from."""
        if "source" in self.interactions.column_names:
            return self.sources[self.interactions["source"][row].as_py()]
        return self.interactions_path

    @property
    def records(self) -> int:
        """Interaction records in the input: the rows read plus the ones skipped."""
        return self.interactions.num_rows + self.issues.total


def _first_line(table: pa.Table, mask: pa.Array) -> int | None:
    index = int(np.argmax(mask.to_numpy(zero_copy_only=False)))
    line = int(table["line"][index].as_py())
    return line if line >= 0 else None


def _blank(column: pa.ChunkedArray) -> pa.ChunkedArray:
    missing = pc.is_null(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        missing = pc.or_kleene(missing, pc.equal(pc.utf8_trim_whitespace(column), ""))
    return pc.fill_null(missing, True)


def _drop(
    table: pa.Table, bad: pa.ChunkedArray, reason: str, problem: str, path: Path, issues: Issues
) -> pa.Table:
    count = pc.sum(bad).as_py() or 0
    if not count:
        return table
    issues.report(reason, path, problem, _first_line(table, bad.combine_chunks()), count=count)
    return table.filter(pc.invert(bad))


def validate_interactions(table: pa.Table, path: Path, issues: Issues) -> pa.Table:
    """Drop (lenient) or reject (strict) rows with a missing user, item or timestamp or a
    non-numeric timestamp; returns user, item, timestamp:int64 (floored), line.

    Arrow timestamps become their integer value in their own unit, dates days since 1970."""
    for column, reason in (("user", "null_user"), ("item", "null_item")):
        table = _drop(table, _blank(table[column]), reason, f"empty {column} id", path, issues)
    table = _drop(
        table, _blank(table["timestamp"]), "missing_field", "empty timestamp", path, issues
    )
    stamps = table["timestamp"]
    if pa.types.is_timestamp(stamps.type) or pa.types.is_date(stamps.type):
        stamps = pc.cast(
            pc.cast(stamps, pa.int64() if pa.types.is_timestamp(stamps.type) else pa.int32()),
            pa.int64(),
        )
    if pa.types.is_string(stamps.type) or pa.types.is_large_string(stamps.type):
        bad = pc.invert(pc.match_substring_regex(stamps, _NUMBER))
        if pc.any(bad).as_py():
            value = stamps.filter(bad)[0].as_py()
            table = _drop(
                table, bad, "bad_timestamp", f"timestamp {value!r} is not a number", path, issues
            )
        stamps = pc.utf8_trim_whitespace(table["timestamp"])
        try:
            stamps = pc.cast(stamps, pa.int64())
        except pa.ArrowInvalid:  # decimals or exponents: parsed as float, floored below
            stamps = pc.cast(stamps, pa.float64())
    if not pa.types.is_integer(stamps.type):
        stamps = pc.floor(pc.cast(stamps, pa.float64()))
    stamps = pc.cast(stamps, pa.int64())
    return pa.table(
        {
            "user": table["user"],
            "item": table["item"],
            "timestamp": stamps,
            "line": pc.cast(table["line"], pa.int64()),
        }
    )
