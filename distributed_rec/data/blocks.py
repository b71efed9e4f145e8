"""The reading step of prepare: the input cut into blocks, each read by one Ray task into
validated rows partitioned by user shard.

A block is a line-aligned byte range of a JSON-lines review file (read in parallel), a whole
`.jsonl.gz` (streamed in line-aligned chunks), a range of synthetic user chunks, or, for the
small formats (LC-Rec, MovieLens, the generic table, the benchmark CSVs), the format's whole
reader. A block task writes `rows/<shard>/<block>-<part>.arrow` with columns user, item (as
read), timestamp int64, line int64 (physical source line, -1 where lines mean nothing), source
int32 (input file, several-file formats only) and order int64 = block << 40 | row, the input
order that breaks timestamp ties. Problems are counted in the block's Issues (lenient) or
returned as the block's error (strict), so the driver can raise the first one in input order.

The byte ranges of a review file are planned without reading it: a range's first line number is
known only once the ranges before it have counted their newlines. So a range after the first is
read once with provisional line numbers (from PROVISIONAL_FIRST_LINE) and returns its newline
count; the few that reported a skip or an error, where the line number is shown, are read again
with their true first line (:func:`settle_lines`). The `line` column of the others is offset by
a per-block shift, which the driver adds where it names such a row (metadata check).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distributed_rec.config import DataConfig
from distributed_rec.data.files import choose_name, data_root, find_by_suffix, iter_block_lines
from distributed_rec.data.issues import Issues
from distributed_rec.data.jsonl import parse_review_block
from distributed_rec.data.raw import validate_interactions
from distributed_rec.data.sharding import user_shards
from distributed_rec.data.work_files import SUFFIX, write_work_table
from distributed_rec.errors import DataError

BLOCK_BYTES = 64 << 20
"""Bytes of a JSON-lines block (and of a decompressed chunk of a .gz)."""
SYNTHETIC_CHUNKS_PER_BLOCK = 4
ORDER_SHIFT = 40
"""order = block << ORDER_SHIFT | row: up to 2^40 rows per block, 2^23 blocks."""
PROVISIONAL_FIRST_LINE = 2
"""First line number of a review range read before its true one is known (not 1: line 1 is the
file start, where a byte-order mark is dropped)."""
_JSONL = (".jsonl", ".jsonl.gz")
CountNewlines = Callable[[list[tuple[str, int, int]]], list[int]]
RunTasks = Callable[[Callable[..., Any], list[tuple]], list]
"""Maps a function over argument tuples, results in order (e.g. as Ray tasks)."""


@dataclass(frozen=True)
class Block:
    """One read task: kind 'lines' (bytes start..end of `path`, from line `first_line`; 0 when
    not yet known), 'gzip' (the whole compressed file `path`), 'synthetic' (user chunks
    start..end) or 'reader' (the format's own reader over the whole input)."""

    index: int
    kind: str
    path: str = ""
    start: int = 0
    end: int = 0
    first_line: int = 1


@dataclass
class Inputs:
    """What the driver keeps of the input besides counts: item metadata and file names."""

    items: pa.Table
    interactions_path: Path
    items_path: Path
    meta_issues: Issues
    aliases: dict[str, str] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)
    """Files of the interactions column `source`, for formats with several input files."""

    def row_path(self, source: int) -> Path:
        return self.sources[source] if self.sources else self.interactions_path


@dataclass
class BlockResult:
    """What a block task returns: rows written, skips counted, or the error that stopped it."""

    index: int
    rows: int
    issues: Issues
    error: tuple[str, str, int | None] | None = None
    """(path, problem, line) of a DataError (rebuilt by the driver: exceptions with their own
    constructor arguments do not survive pickling)."""
    inputs: Inputs | None = None
    """The metadata, read by a 'reader' block."""
    integer_ids: tuple[bool, bool] = (False, False)
    """Whether the user and item columns are integer-typed."""
    newlines: int = 0
    """Newlines in a 'lines' block's bytes."""
    reread: bool = False
    """Read with provisional line numbers and reported something: to be read again."""


def _review_file(config: DataConfig) -> tuple[Path, str]:
    root = data_root(config.path)
    found = find_by_suffix(root, _JSONL, exclude_prefix="meta_")
    name = choose_name(
        root, found, config.name, "<Category>.jsonl[.gz] and meta_<Category>.jsonl[.gz]"
    )
    return found[name], name


def _boundaries(path: Path, block_bytes: int) -> list[int]:
    """Byte offsets 0 = b_0 < b_1 < ... < b_k = size, each b_i (0 < i < k) just after a
    newline, about `block_bytes` apart (reads a line's worth of bytes per boundary)."""
    size = path.stat().st_size
    bounds = [0]
    with path.open("rb") as handle:
        while size - bounds[-1] > block_bytes:
            handle.seek(bounds[-1] + block_bytes - 1)
            handle.readline()  # to the end of the line holding the nominal boundary
            if handle.tell() >= size:
                break
            bounds.append(handle.tell())
    return [*bounds, size] if size else bounds


def count_newlines(path: str, start: int, end: int) -> int:
    """Ray task: newlines in bytes start..end of `path`, read in pieces."""
    count = 0
    with open(path, "rb") as handle:
        handle.seek(start)
        left = end - start
        while left > 0:
            piece = handle.read(min(left, 1 << 24))
            count += piece.count(b"\n")
            left -= len(piece)
    return count


def line_blocks(path: Path, block_bytes: int, count: CountNewlines | None = None) -> list[Block]:
    """Line-aligned byte ranges of a plain text file and the line each starts at. The
    newlines before each range are counted by `count` (a function mapping [(path, start, end)]
    to counts, e.g. Ray tasks; in this process by default), so the file is never read whole."""
    bounds = _boundaries(path, block_bytes)
    ranges = [(str(path), a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
    counts = count(ranges) if count else [count_newlines(*r) for r in ranges]
    first = np.concatenate([[1], 1 + np.cumsum(counts)[:-1]]).astype(int) if ranges else []
    return [
        Block(i, "lines", str(path), a, b, int(line))
        for i, ((_, a, b), line) in enumerate(zip(ranges, first, strict=True))
    ]


def review_ranges(path: Path, block_bytes: int) -> list[Block]:
    """Line-aligned byte ranges of the review file `path`, about `block_bytes` each, their first
    line numbers not yet known (0) except the first range's (1)."""
    bounds = _boundaries(path, block_bytes)
    return [
        Block(i, "lines", str(path), a, b, 1 if a == 0 else 0)
        for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))
    ]


def plan_blocks(config: DataConfig) -> list[Block]:
    """The read tasks of the dataset `config` names (at least one)."""
    if config.format == "synthetic":
        from distributed_rec.data.readers.synthetic import CHUNK_USERS

        chunks = -(-config.synthetic_users // CHUNK_USERS)
        step = SYNTHETIC_CHUNKS_PER_BLOCK
        return [
            Block(i, "synthetic", start=c, end=min(c + step, chunks))
            for i, c in enumerate(range(0, chunks, step))
        ]
    if config.format == "amazon2023":
        path, _ = _review_file(config)
        if path.suffix == ".gz":
            return [Block(0, "gzip", str(path))]
        return review_ranges(path, BLOCK_BYTES) or [Block(0, "lines", str(path))]
    return [Block(0, "reader")]


@dataclass
class MetadataBlock:
    """What a metadata block task returns: the block's items (None after an error), whether it
    held any non-blank line, its counted skips, or the error that stopped it."""

    items: pa.Table | None
    any_lines: bool
    issues: Issues
    error: tuple[str, str, int | None] | None = None


def read_metadata_block(
    path: str, start: int, end: int, first_line: int, errors: str
) -> MetadataBlock:
    """Ray task: the metadata records of bytes start..end of `path` (whole lines from line
    `first_line`), parsed as the line-by-line reader does."""
    from distributed_rec.data.readers.amazon2023 import metadata_rows

    issues = Issues(errors)
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    try:
        lines = list(iter_block_lines(Path(path), data, first_line))
        items = metadata_rows(Path(path), issues, iter(lines))
    except DataError as err:
        return MetadataBlock(None, True, issues, (err.path, err.problem, err.line))
    return MetadataBlock(items, bool(lines), issues)


def read_metadata_blocks(path: Path, errors: str, run: RunTasks) -> tuple[pa.Table, Issues]:
    """The metadata file `path` (plain JSON lines) read by block tasks through `run`; the
    same table and counted skips as the line-by-line reader, the first error in file order."""
    planned = line_blocks(path, BLOCK_BYTES, lambda ranges: run(count_newlines, ranges))
    calls = [(b.path, b.start, b.end, b.first_line, errors) for b in planned]
    results: list[MetadataBlock] = run(read_metadata_block, calls)
    for result in results:
        if result.error is not None:
            raise DataError(*result.error)
    if not any(r.any_lines for r in results):
        raise DataError(path, "file is empty")
    issues = Issues(errors)
    for result in results:
        issues.merge(result.issues)
    return pa.concat_tables([r.items for r in results if r.items is not None]), issues


def read_inputs(config: DataConfig, run: RunTasks | None = None) -> Inputs:
    """The item metadata of the formats whose blocks read interactions only; a plain JSON-lines
    metadata file of more than one block is read by block tasks through `run` (e.g. Ray tasks)
    when given, a smaller one in this process (it would be one task)."""
    if config.format == "synthetic":
        from distributed_rec.data.readers.synthetic import generate_items

        source = Path("<synthetic>")
        return Inputs(generate_items(config), source, source, Issues("strict"))
    from distributed_rec.data.readers.amazon2023 import ALIASES, metadata_file, metadata_rows

    path, name = _review_file(config)
    meta_path = metadata_file(path.parent, name)
    if run is None or meta_path.suffix == ".gz" or meta_path.stat().st_size <= BLOCK_BYTES:
        meta_issues = Issues(config.errors)
        items = metadata_rows(meta_path, meta_issues)
    else:
        items, meta_issues = read_metadata_blocks(meta_path, config.errors, run)
    return Inputs(items, path, meta_path, meta_issues, dict(ALIASES))


def write_rows(table: pa.Table, work: Path, block: int, part: int, num_shards: int) -> None:
    """Append `table` (user, item, timestamp, line, order[, source]) to the shard folders."""
    if table.num_rows == 0:
        return
    encoded = pc.dictionary_encode(table["user"]).combine_chunks()
    raw_ids = pc.cast(encoded.dictionary, pa.string()).to_pylist()
    row_shard = user_shards(raw_ids, num_shards)[encoded.indices.to_numpy()]
    # stable sorts of 16-bit keys are radix sorts: a sixth of the int64 sort's time
    small = row_shard.astype(np.int16) if num_shards <= np.iinfo(np.int16).max else row_shard
    order = np.argsort(small, kind="stable")
    counts = np.bincount(row_shard, minlength=num_shards)
    table = table.take(pa.array(order))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for shard in np.flatnonzero(counts):
        folder = work / "rows" / f"{shard:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        piece = table.slice(bounds[shard], counts[shard])
        write_work_table(piece, folder / f"{block:06d}-{part:05d}{SUFFIX}")


def _with_order(table: pa.Table, block: int, first_row: int) -> pa.Table:
    rows = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
    return table.append_column("order", pa.array((block << ORDER_SHIFT) | rows))


class _Writer:
    """Numbers a block's rows in input order and writes them out part by part."""

    def __init__(self, block: int, work: Path, num_shards: int) -> None:
        self.block, self.work, self.num_shards = block, work, num_shards
        self.rows = self.parts = 0
        self.integer_ids = (False, False)

    def __call__(self, table: pa.Table) -> None:
        self.integer_ids = (
            pa.types.is_integer(table["user"].type),
            pa.types.is_integer(table["item"].type),
        )
        table = _with_order(table, self.block, self.rows)
        write_rows(table, self.work, self.block, self.parts, self.num_shards)
        self.rows += table.num_rows
        self.parts += 1


def _gzip_chunks(path: Path, issues: Issues, write: _Writer) -> None:
    """Decompress in line-aligned chunks of about BLOCK_BYTES. Damage ends the file after its
    last whole line, as the line reader's does (read1 never drops what it decompressed)."""
    line, buffer = 1, bytearray()

    def flush(upto: int) -> None:
        nonlocal line
        data = bytes(buffer[:upto])
        del buffer[:upto]
        if data:
            table, newlines = parse_review_block(path, data, line, issues)
            write(validate_interactions(table, path, issues))
            line += newlines

    with gzip.open(path, "rb") as handle:
        while True:
            try:
                piece = handle.read1(1 << 20)
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
                flush(buffer.rfind(b"\n") + 1)
                problem = (
                    f"compressed file is truncated or corrupt ({err}); records after this "
                    "line are lost"
                )
                issues.report("truncated_file", path, problem, line=line)
                return
            if not piece:
                flush(len(buffer))
                return
            buffer += piece
            if len(buffer) >= BLOCK_BYTES:
                flush(buffer.rfind(b"\n") + 1)


def _reader_block(config: DataConfig, write: _Writer) -> tuple[Inputs, Issues]:
    from distributed_rec.data.readers import read_dataset

    raw = read_dataset(config)
    inputs = Inputs(
        raw.items, raw.interactions_path, raw.items_path, raw.meta_issues, raw.aliases, raw.sources
    )
    table = raw.interactions
    if "line" not in table.column_names:
        table = table.append_column("line", pa.array(np.full(table.num_rows, -1, np.int64)))
    step = 1 << 22
    for start in range(0, max(table.num_rows, 1), step):
        write(table.slice(start, step))
    return inputs, raw.issues


def _read_range(block: Block, config: DataConfig, write: _Writer) -> BlockResult:
    """A 'lines' block: its bytes parsed, validated and written; with provisional line
    numbers (and no warnings logged) when its first line is not known yet."""
    provisional = block.first_line == 0
    issues = Issues(config.errors, quiet=provisional)
    path = Path(block.path)
    with path.open("rb") as handle:
        handle.seek(block.start)
        data = handle.read(block.end - block.start)
    first_line = block.first_line or PROVISIONAL_FIRST_LINE
    try:
        table, newlines = parse_review_block(path, data, first_line, issues)
        write(validate_interactions(table, path, issues))
    except DataError as err:
        error = (err.path, err.problem, err.line)
        newlines = data.count(b"\n")
        return BlockResult(block.index, write.rows, issues, error, None, (False, False),
                           newlines, provisional)  # fmt: skip
    reread = provisional and issues.total > 0
    return BlockResult(block.index, write.rows, issues, None, None, write.integer_ids, newlines,
                       reread)  # fmt: skip


def read_block(block: Block, config: DataConfig, work: str) -> BlockResult:
    """Ray task: read, validate and shard one block into `work`/rows."""
    write = _Writer(block.index, Path(work), config.num_shards)
    if block.kind == "lines":
        return _read_range(block, config, write)
    issues = Issues(config.errors)
    inputs = None
    try:
        if block.kind == "gzip":
            _gzip_chunks(Path(block.path), issues, write)
        elif block.kind == "synthetic":
            from distributed_rec.data.readers.synthetic import generate_chunks

            for table in generate_chunks(config, range(block.start, block.end)):
                lines = pa.array(np.full(table.num_rows, -1, np.int64))
                write(table.append_column("line", lines))
        else:
            inputs, issues = _reader_block(config, write)
    except DataError as err:
        return BlockResult(block.index, write.rows, issues, (err.path, err.problem, err.line))
    return BlockResult(block.index, write.rows, issues, None, inputs, write.integer_ids)


def settle_lines(
    planned: list[Block], results: list[BlockResult], config: DataConfig, work: str, run: RunTasks
) -> tuple[list[BlockResult], np.ndarray]:
    """The results with every reported line number true, and int64 [blocks]: what to add to
    the `line` column of each block's rows to get the physical line (0 where already true).

    The true first lines follow from the 'lines' blocks' newline counts; the blocks read with
    provisional lines that reported something are read again through `run` (e.g. Ray tasks),
    their rows rewritten in place, so their counted skips and errors name the true lines."""
    shift = np.zeros(len(planned), np.int64)
    if not planned or planned[0].kind != "lines":
        return results, shift
    counts = np.array([r.newlines for r in results], np.int64)
    first = 1 + np.concatenate([[0], np.cumsum(counts)[:-1]])
    provisional = np.array([b.first_line == 0 for b in planned])
    again = np.array([r.reread for r in results])
    shift[provisional & ~again] = first[provisional & ~again] - PROVISIONAL_FIRST_LINE
    calls = [
        (replace(planned[i], first_line=int(first[i])), config, work) for i in np.flatnonzero(again)
    ]
    results = list(results)
    for result in run(read_block, calls) if calls else []:
        results[result.index] = result
    return results, shift
