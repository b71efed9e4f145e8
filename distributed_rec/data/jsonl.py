"""Amazon-2023 review lines parsed a block of whole lines at a time.

The fast path is Arrow's JSON reader (C++, every field parsed, so a key repeated at any depth is
still caught); the block falls back to the exact line-by-line parser
(:func:`~distributed_rec.data.readers.amazon2023.review_rows`) whenever Arrow would read it
differently from that parser: a line that is not one JSON object, a repeated key, a null or
absent field, an id that is not a string, a timestamp that is neither an integer nor a string.
Either way the block gives the same rows and the same counted skips, with physical line numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from distributed_rec.data.files import iter_block_lines
from distributed_rec.data.issues import Issues
from distributed_rec.data.readers.amazon2023 import review_rows

_BOM = b"\xef\xbb\xbf"
_FIELDS = {"user_id": "user", "parent_asin": "item", "timestamp": "timestamp"}


_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[list(b" \t\n\r\x0b\x0c")] = True
"""The bytes bytes.strip() removes."""


def content_lines(data: bytes, first_line: int) -> np.ndarray:
    """int64: physical line numbers of the lines of `data` holding a byte other than ASCII
    whitespace (`data` is whole lines starting at line `first_line`).

    A line whose first byte is not whitespace holds content; only the others (rare in real
    files) are looked at whole."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buffer == ord("\n"))
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(data)]])
    if data.endswith(b"\n"):
        starts, ends = starts[:-1], ends[:-1]
    nonempty = ends > starts
    content = nonempty.copy()
    content[nonempty] = ~_WHITESPACE[buffer[starts[nonempty]]]
    for index in np.flatnonzero(nonempty & ~content):
        content[index] = bool(data[starts[index] : ends[index]].strip())
    return np.flatnonzero(content).astype(np.int64) + first_line


def _arrow_rows(data: bytes, lines: np.ndarray) -> pa.Table | None:
    """user, item, timestamp (string), line via Arrow, or None when the block needs the exact
    parser."""
    try:
        table = pajson.read_json(
            pa.py_buffer(data),
            read_options=pajson.ReadOptions(use_threads=False, block_size=1 << 24),
        )
    except pa.ArrowInvalid:
        return None
    if table.num_rows != len(lines) or any(f not in table.column_names for f in _FIELDS):
        return None
    columns = {}
    for field, name in _FIELDS.items():
        column = table[field]
        if column.null_count:
            return None
        if field == "timestamp" and pa.types.is_integer(column.type):
            column = pc.cast(column, pa.string())  # the text str(int) gives, as the parser does
        if not pa.types.is_string(column.type):
            return None
        columns[name] = column
    return pa.table({**columns, "line": pa.array(lines)})


def parse_review_block(path: Path, data: bytes, first_line: int, issues: Issues) -> pa.Table:
    """user, item, timestamp (strings, not yet validated) and line of the reviews in `data`,
    whole lines of `path` from line `first_line`; skipped lines are reported to `issues`."""
    body = data.removeprefix(_BOM) if first_line == 1 else data
    lines = content_lines(body, first_line)
    table = _arrow_rows(body, lines) if len(lines) else None
    if table is not None:
        return table
    return review_rows(path, issues, iter_block_lines(path, data, first_line))
