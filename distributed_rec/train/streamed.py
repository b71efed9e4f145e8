"""Training samples read per rank from disk instead of held in memory.

The Parquet parts of a split are converted once, streaming one record batch at a time, into a
flat store beside them: `splits/.cache/<name>-h<H>/` with offsets.bin (int64 [S + 1]) and
items.bin (int32 [T]) plus manifest.json (the parts' names, sizes and modification times, so a
new prepare output is noticed; prepare replaces `splits/` anyway). The first rank to arrive
builds it under a file lock; the others wait and reuse it.

A rank then reads with positioned reads (no memory map, so no page of the store stays in its
resident set): the lengths of the G samples of each global batch (every rank needs them to deal
the batch by length) and the items of its own samples only. The epoch order is the same
permutation as the in-memory path, so a run gives the same batches and losses either way.

Legend: S samples, T items of all samples, G global batch.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distributed_rec.train.data import (
    WINDOWS_MISSING,
    part_files,
    prefix_sequences,
    window_sequences,
)

BATCH_ROWS = 1 << 16
_OFFSET = np.dtype(np.int64)
_ITEM = np.dtype(np.int32)


def _manifest(files: list[Path], key: str) -> dict:
    return {
        "key": key,
        "parts": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files],
    }


def _build(files: list[Path], out: Path, windows: bool, limit: int) -> dict:
    """Write offsets.bin, items.bin of `files` into `out`; returns the store's summary."""
    out.mkdir(parents=True)
    samples = items = 0
    max_item = -1
    seen = np.zeros(0, dtype=bool)
    with (out / "offsets.bin").open("wb") as offsets, (out / "items.bin").open("wb") as values:
        offsets.write(np.zeros(1, _OFFSET).tobytes())
        for file in files:
            columns = ["items"] if windows else ["history", "target"]
            row = 0
            for batch in pq.ParquetFile(file).iter_batches(BATCH_ROWS, columns=columns):
                table = pa.Table.from_batches([batch])
                if windows:
                    lengths, flat = window_sequences(table["items"], file, limit, row)
                else:
                    lengths, flat = prefix_sequences(table, file, limit, row)
                row += len(lengths)
                offsets.write((items + np.cumsum(lengths)).astype(_OFFSET).tobytes())
                values.write(flat.astype(_ITEM).tobytes())
                samples, items = samples + len(lengths), items + int(lengths.sum())
                if len(flat):
                    max_item = max(max_item, int(flat.max()))
                    if max_item >= len(seen):
                        seen = np.concatenate([seen, np.zeros(max_item + 1 - len(seen), bool)])
                    seen[flat] = True
    np.save(out / "item_ids.npy", np.flatnonzero(seen))
    return {"samples": samples, "items": items, "max_item": max_item}


def open_store(path: Path, limit: int, windows: bool) -> Path:
    """The flat store of the parts in `path` (built now when missing or stale)."""
    missing = WINDOWS_MISSING if windows else "run the prepare stage first"
    files = part_files(path, missing)
    key = f"{path.name}-h{limit}"
    cache = path.parent / ".cache"
    cache.mkdir(exist_ok=True)
    store = cache / key
    manifest = _manifest(files, key)
    with (cache / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = store / "manifest.json"
        if done.exists() and json.loads(done.read_text()).get("parts") == manifest["parts"]:
            return store
        shutil.rmtree(store, ignore_errors=True)
        building = cache / f"{key}.building"
        shutil.rmtree(building, ignore_errors=True)
        summary = _build(files, building, windows, limit)
        (building / "manifest.json").write_text(json.dumps({**manifest, **summary}))
        building.rename(store)
    return store


class StreamedSamples:
    """A split's samples on disk; the SampleSet interface the training loop uses."""

    def __init__(self, store: Path, windows: bool) -> None:
        self.store, self.windows = store, windows
        summary = json.loads((store / "manifest.json").read_text())
        self._len, self.max_item = int(summary["samples"]), int(summary["max_item"])
        self._offsets = os.open(store / "offsets.bin", os.O_RDONLY)
        self._items = os.open(store / "items.bin", os.O_RDONLY)

    def __len__(self) -> int:
        return self._len

    def __del__(self) -> None:
        for fd in (getattr(self, "_offsets", None), getattr(self, "_items", None)):
            if fd is not None:
                os.close(fd)

    def _bounds(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) int64 of each sample: one 16-byte read per sample."""
        pairs = [os.pread(self._offsets, 16, int(i) * 8) for i in np.asarray(index)]
        both = np.frombuffer(b"".join(pairs), _OFFSET).reshape(-1, 2)
        return both[:, 0], both[:, 1]

    def lengths_of(self, index: np.ndarray) -> np.ndarray:
        start, end = self._bounds(index)
        return end - start

    def targets_of(self, index: np.ndarray) -> np.ndarray:
        lengths = self.lengths_of(index)
        return lengths - 1 if self.windows else np.ones(len(lengths), dtype=np.int64)

    def sequences(self, index: np.ndarray) -> list[np.ndarray]:
        start, end = self._bounds(index)
        size = _ITEM.itemsize
        return [
            np.frombuffer(os.pread(self._items, int(e - s) * size, int(s) * size), _ITEM).astype(
                np.int64
            )
            for s, e in zip(start, end, strict=True)
        ]

    def item_ids(self) -> np.ndarray:
        """int64: the distinct items the samples use (saved when the store was built)."""
        return np.load(self.store / "item_ids.npy").astype(np.int64)


def open_samples(path: Path, max_history: int) -> StreamedSamples:
    """Prefix samples of the train split, read from disk per use (see :func:`read_samples`)."""
    return StreamedSamples(open_store(path, max_history, windows=False), windows=False)


def open_windows(path: Path, max_items: int) -> StreamedSamples:
    """Whole-sequence windows, read from disk per use (see :func:`read_windows`)."""
    return StreamedSamples(open_store(path, max_items, windows=True), windows=True)
