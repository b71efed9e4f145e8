"""Finding a dataset's files in a folder and reading text lines, JSON lines and CSV safely.

Every problem is either raised as a DataError naming file and line or counted through `Issues`.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from distributed_rec.data.issues import Issues
from distributed_rec.errors import DataError


def data_root(path: str) -> Path:
    """The folder holding the raw files (a file path selects its folder)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(root, "no such file or folder (set --data.path)")
    return root.parent if root.is_file() else root


def find_by_suffix(
    root: Path, suffixes: tuple[str, ...], prefix: str = "", exclude_prefix: str = ""
) -> dict[str, Path]:
    """{name: path} of files `<prefix><name><suffix>` in `root` (first suffix wins per name)."""
    found: dict[str, Path] = {}
    for suffix in suffixes:
        for path in sorted(root.iterdir()):
            name = path.name
            if not path.is_file() or not name.endswith(suffix) or not name.startswith(prefix):
                continue
            if exclude_prefix and name.startswith(exclude_prefix):
                continue
            stem = name[len(prefix) : len(name) - len(suffix)]
            if stem:
                found.setdefault(stem, path)
    return found


def choose_name(root: Path, found: dict[str, Path], name: str, expected: str) -> str:
    """The dataset name to read: `name` when given, else the only candidate in the folder."""
    if name:
        if name not in found:
            have = ", ".join(sorted(found)) or "none"
            raise DataError(root, f"no {expected} for data.name={name!r} (found: {have})")
        return name
    if not found:
        raise DataError(root, f"no recognised files: expected {expected}")
    if len(found) > 1:
        raise DataError(
            root, f"several datasets ({', '.join(sorted(found))}); choose one with --data.name"
        )
    return next(iter(found))


class WholeLines:
    """Binary reader of a .gz that ends cleanly where the file is damaged, never handing out the
    partial line before the damage; `error` holds what stopped it."""

    closed = False

    def __init__(self, path: Path, chunk: int = 1 << 16) -> None:
        self._gz = gzip.open(path, "rb")  # noqa: SIM115 (closed by close())
        self._chunk, self._tail, self._out = chunk, b"", bytearray()
        self._done = False
        self.error: BaseException | None = None

    def _fill(self) -> None:
        try:
            data = self._gz.read1(self._chunk)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
            self.error, self._done, self._tail = err, True, b""
            return
        if not data:
            self._out += self._tail
            self._done, self._tail = True, b""
            return
        data = self._tail + data
        cut = data.rfind(b"\n") + 1
        self._out += data[:cut]
        self._tail = data[cut:]

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._out) < size) and not self._done:
            self._fill()
        size = len(self._out) if size < 0 else size
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def close(self) -> None:
        self.closed = True
        self._gz.close()


def open_text(path: Path, encoding: str = "utf-8") -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return path.open("r", encoding=encoding, newline="")


def iter_lines(path: Path, issues: Issues, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of non-blank lines; a truncated .gz ends the file early."""
    lineno = 0
    try:
        with open_text(path, encoding) as handle:
            for lineno, text in enumerate(handle, 1):  # noqa: B007 (lineno used after the loop)
                if text.strip():
                    yield lineno, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        issues.report(
            "truncated_file",
            path,
            f"compressed file is truncated or corrupt ({err}); records after this line are lost",
            line=lineno + 1,
        )
    except UnicodeDecodeError as err:
        raise DataError(path, f"not {encoding} text ({err.reason})", lineno + 1) from None


def iter_json_records(path: Path, issues: Issues) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) of a JSON-lines file; unparsable lines are reported as malformed_json."""
    empty = True
    for lineno, text in iter_lines(path, issues):
        empty = False
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            issues.report(
                "malformed_json", path, f"not valid JSON ({err.msg}, column {err.colno})", lineno
            )
            continue
        if not isinstance(record, dict):
            issues.report("malformed_json", path, "expected a JSON object on each line", lineno)
            continue
        yield lineno, record
    if empty and not issues.counts.get("truncated_file"):
        raise DataError(path, "file is empty")


def load_json_document(path: Path) -> Any:
    """A whole-file JSON document (LC-Rec files); a parse error names line and column."""
    try:
        with open_text(path) as handle:
            text = handle.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(path, f"compressed file is truncated or corrupt ({err})") from None
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason})") from None
    if not text.strip():
        raise DataError(path, "file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            path, f"not valid JSON ({err.msg}, column {err.colno})", err.lineno
        ) from None


def read_csv_strings(
    path: Path, issues: Issues, required: tuple[str, ...], delimiter: str = ","
) -> pa.Table:
    """All columns of a CSV (header row, .gz allowed) as strings, plus `line` (1-based int64).

    Empty cells are nulls. A missing required column is an error in every mode; rows with the
    wrong number of cells are `malformed_row`; a truncated .gz keeps the rows read before it.
    """
    try:
        with open_text(path) as handle:
            header = handle.readline()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
        raise DataError(path, f"cannot read the header ({err})", 1) from None
    if not header.strip():
        raise DataError(path, "file is empty")
    header_options = pacsv.ParseOptions(delimiter=delimiter)
    names = pacsv.read_csv(pa.py_buffer(header.encode()), parse_options=header_options).column_names
    missing = [c for c in required if c not in names]
    if missing:
        have = ", ".join(names)
        raise DataError(path, f"missing column(s) {', '.join(missing)}; the header has {have}", 1)
    bad_rows: list[int] = []

    def on_invalid(row: Any) -> str:
        bad_rows.append(row.number)
        return "skip"

    source = WholeLines(path) if path.suffix == ".gz" else path.open("rb")
    batches: list[pa.RecordBatch] = []
    schema = pa.schema([(name, pa.string()) for name in names])
    damage: BaseException | None = None
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=1 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=dict(zip(names, schema.types, strict=True)), strings_can_be_null=True
            ),
        )
        for batch in reader:
            batches.append(batch)
    except (pa.ArrowInvalid, OSError) as err:
        damage = err
    finally:
        source.close()
    damage = damage or getattr(source, "error", None)
    if damage is not None:
        rows = sum(len(b) for b in batches) + len(bad_rows)
        problem = f"truncated or corrupt; records after this line are lost ({damage})"
        issues.report("truncated_file", path, problem, line=rows + 2)
    if bad_rows:
        issues.report(
            "malformed_row",
            path,
            f"expected {len(names)} cells",
            line=bad_rows[0],
            count=len(bad_rows),
        )
    table = pa.Table.from_batches(batches, schema=schema)
    if table.num_rows == 0 and not issues.total:
        raise DataError(path, "file has a header but no rows")
    lines = np.arange(table.num_rows, dtype=np.int64) + 2
    for bad in sorted(b for b in bad_rows if b is not None):
        lines[lines >= bad] += 1
    return table.append_column("line", pa.array(lines))
