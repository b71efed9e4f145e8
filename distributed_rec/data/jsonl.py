"""Amazon-2023 review lines parsed a block of whole lines at a time.

The fast path is Arrow's JSON reader (C++) with an explicit schema of the three fields used and
the others ignored: every line is still checked for JSON syntax, and a used field named twice in
one object still fails the parse. The block falls back to the exact line-by-line parser
(:func:`~distributed_rec.data.readers.amazon2023.review_rows`) whenever Arrow would read it
differently from that parser: a line that is not one JSON object, a repeated used key, a null or
absent field, an id that is not a string, a timestamp that is neither an integer nor a string
(or integers and strings mixed within a block). Either way the block gives the same rows and
the same counted skips, with physical line numbers. Keys repeated in fields neither reader uses
are not an error on either path (json keeps the last; nothing read changes).
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
    whitespace (`data` is whole lines starting at line `first_line`)."""
    return _content_lines(data, first_line)[0]


_SCAN_BYTES = 1 << 20
"""Bytes compared at a time when finding newlines: a block-sized temporary would be fresh memory
for every block, and faulting it in cost more than the comparison (0.03-0.04 s against 0.017 s
a 64 MiB block, measured)."""


def _newlines(buffer: np.ndarray) -> np.ndarray:
    """int64: positions of the newline bytes of uint8 `buffer`."""
    parts = [
        np.flatnonzero(buffer[a : a + _SCAN_BYTES] == ord("\n")) + a
        for a in range(0, len(buffer), _SCAN_BYTES)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _content_lines(data: bytes, first_line: int) -> tuple[np.ndarray, int]:
    """(content_lines(data, first_line), newlines in `data`).

    A line whose first byte is not whitespace holds content; only the others (rare in real
    files: none in most blocks, which then skip the per-line bookkeeping) are looked at whole."""
    if not data:
        return np.zeros(0, np.int64), 0
    buffer = np.frombuffer(data, dtype=np.uint8)
    newlines = _newlines(buffer)
    starts = np.concatenate([[0], newlines + 1])
    if data.endswith(b"\n"):
        starts = starts[:-1]
    if not _WHITESPACE[buffer[starts]].any():  # an empty line starts with its newline
        return np.arange(first_line, first_line + len(starts), dtype=np.int64), len(newlines)
    ends = np.concatenate([newlines, [len(data)]])[: len(starts)]
    nonempty = ends > starts
    content = nonempty.copy()
    content[nonempty] = ~_WHITESPACE[buffer[starts[nonempty]]]
    for index in np.flatnonzero(nonempty & ~content):
        content[index] = bool(data[starts[index] : ends[index]].strip())
    return np.flatnonzero(content).astype(np.int64) + first_line, len(newlines)


def _chunk_bytes(data: bytes) -> int:
    """Arrow's JSON block size that reads `data` as one chunk (within Arrow's int32 limit)."""
    return min(max(len(data), 1 << 20), (1 << 31) - 1)


_SCHEMAS = [
    pa.schema([("user_id", pa.string()), ("parent_asin", pa.string()), ("timestamp", stamp)])
    for stamp in (pa.int64(), pa.string())
]
"""Timestamps as Amazon Reviews 2023 writes them (integers), else as strings."""


def _arrow_rows(data: bytes, lines: np.ndarray) -> pa.Table | None:
    """user, item, timestamp, line via Arrow, or None when the block needs the exact parser.
    Integer timestamps stay int64 (validation then has no text to parse: a fifth of a
    block's validation and cast time) unless one is negative."""
    # one chunk for the whole block: about a fifth less CPU than 16 MiB chunks
    read_options = pajson.ReadOptions(use_threads=False, block_size=_chunk_bytes(data))
    for schema in _SCHEMAS:
        # ignoring the unused fields skips building their columns: ~35% of the parse
        parse_options = pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"
        )
        try:
            table = pajson.read_json(pa.py_buffer(data), read_options, parse_options)
            break
        except pa.ArrowInvalid:
            continue
    else:
        return None
    if table.num_rows != len(lines):
        return None
    columns = {}
    for field, name in _FIELDS.items():
        column = table[field]
        if column.null_count:  # absent or null
            return None
        if pa.types.is_integer(column.type) and (pc.min(column).as_py() or 0) < 0:
            # as the parser gives it, so that the message quotes it the same way ('-5')
            column = pc.cast(column, pa.string())
        columns[name] = column
    return pa.table({**columns, "line": pa.array(lines)})


def parse_review_block(
    path: Path, data: bytes, first_line: int, issues: Issues
) -> tuple[pa.Table, int]:
    """(user, item, timestamp (not yet validated: strings, or int64 where Arrow read
    integers, none negative) and line of the reviews in `data`,
    newlines in `data`): `data` is whole lines of `path` from line `first_line` (line 1 only at
    the start of the file, where a byte-order mark is dropped); skipped lines are reported to
    `issues`."""
    body = data.removeprefix(_BOM) if first_line == 1 else data
    lines, newlines = _content_lines(body, first_line)
    table = _arrow_rows(body, lines) if len(lines) else None
    if table is None:
        table = review_rows(path, issues, iter_block_lines(path, data, first_line))
    return table, newlines
