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
MAX_TIMESTAMP = 2**63 - 1
"""Timestamps are numbers in 0 .. MAX_TIMESTAMP (any unit: s, ms, us, ns; larger is later)."""


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


def is_blank(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """bool: null, NaN (a float column's null) or an empty / whitespace-only string."""
    missing = pc.is_null(column, nan_is_null=True)
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


def _timestamps(table: pa.Table, path: Path, issues: Issues) -> pa.Table:
    """`table` with column timestamp as int64 (floored): non-numbers and values outside
    0 .. MAX_TIMESTAMP are `bad_timestamp`."""
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
        except pa.ArrowInvalid:  # decimals, exponents, beyond int64: parsed as float, checked below
            stamps = pc.cast(stamps, pa.float64())
    if not pa.types.is_integer(stamps.type):
        stamps = pc.cast(stamps, pa.float64())
        out = pc.invert(pc.and_(pc.greater_equal(stamps, 0), pc.less(stamps, 2.0**63)))
    elif pa.types.is_unsigned_integer(stamps.type):
        out = pc.greater(stamps, MAX_TIMESTAMP)
    else:
        out = pc.less(stamps, 0)
    if pc.any(out).as_py():
        value = table["timestamp"].filter(out)[0].as_py()
        negative = pc.less(stamps.filter(out)[0], 0).as_py()
        problem = (
            f"timestamp {value!r} is {'negative' if negative else 'larger than 2^63-1'} "
            "(timestamps must be in 0 .. 2^63-1)"
        )
        table = table.set_column(table.column_names.index("timestamp"), "timestamp", stamps)
        table = _drop(table, out, "bad_timestamp", problem, path, issues)
        stamps = table["timestamp"]
    if pa.types.is_floating(stamps.type):
        stamps = pc.floor(stamps)
    return table.set_column(
        table.column_names.index("timestamp"), "timestamp", pc.cast(stamps, pa.int64())
    )


def validate_interactions(table: pa.Table, path: Path, issues: Issues) -> pa.Table:
    """Drop (lenient) or reject (strict) rows with a missing user, item or timestamp (null,
    NaN or empty) or a timestamp that is not a number in 0 .. 2^63-1; returns user, item,
    timestamp:int64 (floored), line.

    Arrow timestamps become their integer value in their own unit, dates days since 1970."""
    for column, reason in (("user", "null_user"), ("item", "null_item")):
        table = _drop(table, is_blank(table[column]), reason, f"empty {column} id", path, issues)
    table = _drop(
        table, is_blank(table["timestamp"]), "missing_field", "empty timestamp", path, issues
    )
    table = _timestamps(table, path, issues)
    return pa.table(
        {
            "user": table["user"],
            "item": table["item"],
            "timestamp": table["timestamp"],
            "line": pc.cast(table["line"], pa.int64()),
        }
    )


def require_integer_ids(
    table: pa.Table, path: Path, issues: Issues, reasons: dict[str, str], source: str
) -> pa.Table:
    """Drop (lenient) or reject (strict) rows whose id in a column of `reasons` (column ->
    reason) is not an unsigned integer, for formats whose ids are integers (`source` names the
    format in the message). Nulls are left to the null checks."""
    for column, reason in reasons.items():
        values = table[column]
        if pa.types.is_integer(values.type):
            continue
        bad = pc.fill_null(pc.invert(pc.match_substring_regex(values, r"^[0-9]+$")), False)
        if pc.any(bad).as_py():
            value = values.filter(bad)[0].as_py()
            problem = f"{column} id {value!r} is not an integer ({source} ids are integers)"
            table = _drop(table, bad, reason, problem, path, issues)
    return table
