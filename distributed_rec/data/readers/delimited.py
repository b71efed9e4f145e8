"""Small delimited text files read line by line (MovieLens `::`/`|`/tab files, latin-1)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from distributed_rec.data.files import iter_lines
from distributed_rec.data.issues import Issues
from distributed_rec.errors import DataError


def read_delimited(
    path: Path,
    separator: str,
    names: tuple[str, ...],
    issues: Issues,
    encoding: str = "utf-8",
    skip_header: bool = False,
    min_cells: int | None = None,
) -> pa.Table:
    """String columns `names` (the first len(names) cells of each line) plus `line`.

    Lines with fewer than `min_cells` (default: all names) cells are `malformed_row`; empty
    cells are nulls.
    """
    needed = len(names) if min_cells is None else min_cells
    columns: list[list[str | None]] = [[] for _ in names]
    lines: list[int] = []
    seen = False
    for lineno, text in iter_lines(path, issues, encoding):
        seen = True
        if skip_header and lineno == 1:
            continue
        cells = text.rstrip("\r\n").split(separator)
        if len(cells) < needed:
            problem = f"expected {needed} fields separated by {separator!r}, got {len(cells)}"
            issues.report("malformed_row", path, problem, lineno)
            continue
        cells += [""] * (len(names) - len(cells))
        for column, cell in zip(columns, cells, strict=False):
            column.append(cell.strip() or None)
        lines.append(lineno)
    if not seen:
        raise DataError(path, "file is empty")
    table = {name: pa.array(col, pa.string()) for name, col in zip(names, columns, strict=True)}
    return pa.table({**table, "line": pa.array(lines, pa.int64())})
