"""Finding a dataset's files in a folder and reading text lines, JSON lines and CSV safely.

Every problem is either raised as a DataError naming file and line or counted through `Issues`.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
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


class CountingReader:
    """Binary reader passing `raw` through and counting the newlines it hands out."""

    closed = False

    def __init__(self, raw: Any) -> None:
        self.raw, self.newlines, self.ends_with_newline = raw, 0, True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if data:
            self.newlines += data.count(b"\n")
            self.ends_with_newline = data.endswith(b"\n")
        return data

    def close(self) -> None:
        self.closed = True
        self.raw.close()

    @property
    def lines(self) -> int:
        """Physical lines read (a last line without a newline counts)."""
        return self.newlines + (0 if self.ends_with_newline else 1)


def record_start_lines(path: Path, delimiter: str, records: int) -> np.ndarray | None:
    """int64 [records + 1]: physical line where CSV record r (1-based, the header is 1) starts,
    skipping blank lines as Arrow does; None when the file holds fewer records than that."""
    starts = np.zeros(records + 1, dtype=np.int64)
    found, previous = 0, 0
    try:
        with open_text(path) as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            for cells in reader:
                if cells and found < records:
                    found += 1
                    starts[found] = previous + 1
                previous = reader.line_num
    except (EOFError, gzip.BadGzipFile, zlib.error, csv.Error, UnicodeDecodeError):
        pass
    return starts if found == records else None


def open_text(path: Path, encoding: str = "utf-8") -> IO[str]:
    """Text of a plain or .gz file; UTF-8 skips a leading byte-order mark (utf-8-sig)."""
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return path.open("r", encoding=encoding, newline="")


def _utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def _decode_error(
    path: Path, data: bytes, err: UnicodeDecodeError, encoding: str, first_line: int = 1
) -> DataError:
    """The error for undecodable bytes of `data` (lines from `first_line`), at their line."""
    line = first_line + data.count(b"\n", 0, err.start)
    column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
    return DataError(path, f"not {encoding} text ({err.reason} at byte {column} of the line)", line)


def iter_lines(path: Path, issues: Issues, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based physical line number, text) of non-blank lines, decoded line by line so that
    bytes that are not `encoding` name their own line; a truncated .gz ends the file early."""
    lineno = 0
    utf8 = _utf8(encoding)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
            for lineno, data in enumerate(handle, 1):  # noqa: B007 (lineno used after the loop)
                text = _decode_line(path, data, encoding, lineno, utf8)
                if text.strip():
                    yield lineno, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        issues.report(
            "truncated_file",
            path,
            f"compressed file is truncated or corrupt ({err}); records after this line are lost",
            line=lineno + 1,
        )


class DuplicateKey(ValueError):
    """A JSON object names the same key twice (Python's json would silently keep the last)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} appears twice in one object")
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return record


_UNIQUE_KEYS = json.JSONDecoder(object_pairs_hook=_unique_pairs)


def _decode_checking(text: str, checked: frozenset[str]) -> Any:
    """json.loads(text), refusing a key of `checked` that the top-level object names twice;
    repeats elsewhere (nested, or keys not in `checked`) keep the last value, as json does."""
    repeats: list[tuple[dict[str, Any], list[tuple[str, Any]]]] = []

    def note_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        record = dict(pairs)
        if len(record) < len(pairs):
            repeats.append((record, pairs))
        return record

    value = json.loads(text, object_pairs_hook=note_repeats)
    for owner, pairs in repeats:
        if owner is value:
            _unique_pairs([(k, v) for k, v in pairs if k in checked])
    return value


def iter_block_lines(
    path: Path, data: bytes, first_line: int, encoding: str = "utf-8"
) -> Iterator[tuple[int, str]]:
    """(physical line number, text) of the non-blank lines of `data`, a run of whole lines of
    `path` starting at line `first_line`; bytes that are not `encoding` name their line."""
    utf8 = _utf8(encoding)
    parts = data.split(b"\n")
    if parts and not parts[-1]:
        parts.pop()
    for lineno, raw in enumerate(parts, first_line):
        text = _decode_line(path, raw, encoding, lineno, utf8)
        if text.strip():
            yield lineno, text


def _decode_line(path: Path, data: bytes, encoding: str, lineno: int, utf8: bool) -> str:
    """Line `lineno` of `path` as text, without a UTF-8 byte-order mark on line 1."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise _decode_error(path, data, err, encoding, lineno) from None
    return text.removeprefix("\ufeff") if lineno == 1 and utf8 else text


def iter_json_records(
    path: Path,
    issues: Issues,
    lines: Iterator[tuple[int, str]] | None = None,
    checked_keys: tuple[str, ...] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) of a JSON-lines file (or of `lines`, a part of it); unparsable lines are
    reported as malformed_json, objects repeating a key as duplicate_key: any key at any depth,
    or with `checked_keys`, only those keys of the top-level object (the fields a reader uses:
    a repeat elsewhere changes nothing it reads)."""
    checked = None if checked_keys is None else frozenset(checked_keys)
    empty = True
    for lineno, text in iter_lines(path, issues) if lines is None else lines:
        empty = False
        try:
            record = (
                _UNIQUE_KEYS.decode(text) if checked is None else _decode_checking(text, checked)
            )
        except json.JSONDecodeError as err:
            issues.report(
                "malformed_json", path, f"not valid JSON ({err.msg}, column {err.colno})", lineno
            )
            continue
        except DuplicateKey as err:
            issues.report("duplicate_key", path, str(err), lineno)
            continue
        if not isinstance(record, dict):
            issues.report("malformed_json", path, "expected a JSON object on each line", lineno)
            continue
        yield lineno, record
    if lines is None and empty and not issues.counts.get("truncated_file"):
        raise DataError(path, "file is empty")


@dataclass
class RepeatedKey:
    """A key a JSON object of a document names again: the object keeps the first value."""

    key: str
    value: Any
    """The later value, left out of the object."""
    owner: dict[str, Any]
    """The object that repeats the key (compare with `is`)."""
    line: int | None = None
    """Physical line of the repeat, for keys of the top-level object (found in the text)."""


@dataclass
class JsonDocument:
    """A whole-file JSON document and the keys its objects repeat."""

    value: Any
    repeated: list[RepeatedKey]

    def __post_init__(self) -> None:
        # every owner stays alive (in `value` or in a repeat), so its id() is unique
        self._by_owner: dict[int, list[RepeatedKey]] = {}
        for repeat in self.repeated:
            self._by_owner.setdefault(id(repeat.owner), []).append(repeat)

    def repeats_in(self, owner: dict[str, Any]) -> list[RepeatedKey]:
        """The repeated keys of the object `owner`, in document order."""
        return self._by_owner.get(id(owner), [])


def _key_lines(text: str, key: str) -> list[int]:
    """Physical lines of `"key":` in `text` (as json.dumps writes it, escaped or not)."""
    spellings = {json.dumps(key), json.dumps(key, ensure_ascii=False)}
    pattern = "|".join(re.escape(s) for s in spellings)
    return [text.count("\n", 0, m.start()) + 1 for m in re.finditer(rf"(?:{pattern})\s*:", text)]


def load_json_document(path: Path) -> JsonDocument:
    """A whole-file JSON document (LC-Rec files); a parse error names line and column.

    Objects repeating a key keep the first value; each repeat is listed in `repeated` (found
    while parsing, with object_pairs_hook), with its line when it is a top-level key."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
            data = handle.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(path, f"compressed file is truncated or corrupt ({err})") from None
    try:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as err:
        raise _decode_error(path, data.removeprefix(b"\xef\xbb\xbf"), err, "utf-8") from None
    if not text.strip():
        raise DataError(path, "file is empty")
    repeated: list[RepeatedKey] = []

    def first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        record = dict(pairs)
        if len(record) == len(pairs):
            return record
        record = {}
        for key, value in pairs:
            if key in record:
                repeated.append(RepeatedKey(key, value, record))
            else:
                record[key] = value
        return record

    try:
        value = json.loads(text, object_pairs_hook=first_wins)
    except json.JSONDecodeError as err:
        raise DataError(
            path, f"not valid JSON ({err.msg}, column {err.colno})", err.lineno
        ) from None
    lines: dict[str, list[int]] = {}
    for repeat in (r for r in repeated if r.owner is value):
        found = lines.setdefault(repeat.key, _key_lines(text, repeat.key)[1:])
        repeat.line = found.pop(0) if found else None
    return JsonDocument(value, repeated)


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
        bad_rows.append(row.number)  # the record number (serial parsing always knows it)
        return "skip"

    source = CountingReader(WholeLines(path) if path.suffix == ".gz" else path.open("rb"))
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
    damage = damage or getattr(source.raw, "error", None)
    table = pa.Table.from_batches(batches, schema=schema)
    # Arrow numbers records (header = 1, blank lines not counted); they are physical lines
    # unless the file has blank lines or quoted newlines, then a csv pass maps them
    records = 1 + table.num_rows + len(bad_rows)
    starts = np.arange(records + 1, dtype=np.int64)
    if source.lines != records:
        starts = record_start_lines(path, delimiter, records)
        if starts is None:
            starts = np.arange(records + 1, dtype=np.int64)
    if damage is not None:
        problem = f"truncated or corrupt; records after this line are lost ({damage})"
        issues.report("truncated_file", path, problem, line=source.lines + 1)
    if bad_rows:
        issues.report(
            "malformed_row",
            path,
            f"expected {len(names)} cells",
            line=int(starts[bad_rows[0]]),
            count=len(bad_rows),
        )
    if table.num_rows == 0 and not issues.total:
        raise DataError(path, "file has a header but no rows")
    good = np.ones(records + 1, dtype=bool)
    good[[0, 1, *bad_rows]] = False
    lines = starts[good]
    return table.append_column("line", pa.array(lines))
