"""Training samples and the deterministic order in which every process consumes them.

A sample is a prefix (history then target) or, for whole-sequence training, a window of a
user's items whose items 1.. are all targets. An epoch is a permutation of all samples seeded by (seed, epoch), cut into global batches (the
incomplete last one is dropped). Inside a global batch, samples are sorted by length and dealt
round-robin to the ranks (sample i of the length order to rank i % world), so every rank gets the
same mix of lengths and the ranks finish their steps together; each rank cuts its share, still in
length order, into micro-batches, so padding is per micro-batch and small. Every process derives
the same plan, so the union of what the processes see -- and the masking noise of each sample,
drawn per global batch -- does not depend on the world size.

Legend: G global batch, B micro-batch, L tokens, M positions per item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distributed_rec.errors import ArtifactError, DataError


@dataclass(frozen=True)
class SampleSet:
    """Sequences stored flat: items of sample i are `items[offsets[i]:offsets[i+1]]`.

    A prefix sample (history items then the target) has one next-item target; a window
    (`windows=True`) has one per item after its first.
    """

    offsets: np.ndarray
    items: np.ndarray
    windows: bool = False

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """int64 [num_samples]: items per sequence (history + 1)."""
        return np.diff(self.offsets)

    @property
    def targets(self) -> np.ndarray:
        """int64 [num_samples]: next-item targets per sequence."""
        return self.lengths - 1 if self.windows else np.ones(len(self), dtype=np.int64)

    def sequences(self, index: np.ndarray) -> list[np.ndarray]:
        return [self.items[self.offsets[i] : self.offsets[i + 1]] for i in index]

    def lengths_of(self, index: np.ndarray) -> np.ndarray:
        """int64 [len(index)]: items per sequence of the samples `index`."""
        return self.offsets[np.asarray(index) + 1] - self.offsets[index]

    def targets_of(self, index: np.ndarray) -> np.ndarray:
        """int64 [len(index)]: next-item targets per sequence of the samples `index`."""
        lengths = self.lengths_of(index)
        return lengths - 1 if self.windows else np.ones(len(lengths), dtype=np.int64)

    def item_ids(self) -> np.ndarray:
        """int64: the distinct items the samples use."""
        return np.unique(self.items)


def part_files(path: Path, missing: str) -> list[Path]:
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise ArtifactError(f"{path} has no samples: {missing}")
    return files


def window_sequences(column: pa.ChunkedArray, file: Path, max_items: int, first_row: int = 0):
    """(lengths int64 [W], items int64 [sum]) of a column of training windows (rows from
    `first_row` of `file`, for errors); every window must have 2..max_items items."""
    if column.null_count:
        raise DataError(file, "null training window")
    windows = column.combine_chunks()
    lengths = np.diff(windows.offsets.to_numpy().astype(np.int64))
    if len(lengths) and (lengths.min() < 2 or lengths.max() > max_items):
        bad = int(np.argmax((lengths < 2) | (lengths > max_items)))
        raise ArtifactError(
            f"{file}: window {first_row + bad} has {int(lengths[bad])} items, expected "
            f"2..{max_items} (data.max_history + 1): re-run the prepare stage with this "
            "data.max_history"
        )
    return lengths, pc.cast(windows.flatten(), "int64").to_numpy()


WINDOWS_MISSING = (
    "run the prepare stage first (prepare output older than whole-sequence training has "
    "none: re-run `prepare --force`, or train with --train.whole_sequence=false)"
)


def read_windows(path: Path, max_items: int) -> SampleSet:
    """Whole-sequence training windows (a folder of part-*.parquet, name order).

    Every window must have 2..max_items items: prepare cuts them for data.max_history + 1.
    """
    lengths_parts, items_parts = [], []
    for file in part_files(path, WINDOWS_MISSING):
        column = pq.read_table(file, columns=["items"])["items"]
        lengths, items = window_sequences(column, file, max_items)
        lengths_parts.append(lengths)
        items_parts.append(items)
    lengths = np.concatenate(lengths_parts)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return SampleSet(offsets=offsets, items=np.concatenate(items_parts), windows=True)


def prefix_sequences(table: pa.Table, file: Path, max_history: int, first_row: int = 0):
    """(lengths int64 [S], items int64 [sum]) of prefix samples (history, target columns; rows
    from `first_row` of `file`, for errors): the last `max_history` history items, the target."""
    if table["history"].null_count or table["target"].null_count:
        raise DataError(file, "null history or target")
    history = table["history"].combine_chunks()
    hist_offsets = history.offsets.to_numpy().astype(np.int64)
    hist_values = pc.cast(history.values, "int64").to_numpy()
    targets = table["target"].to_numpy().astype(np.int64)
    hist_len = np.diff(hist_offsets)
    if (hist_len == 0).any():
        raise DataError(
            file, f"row {first_row + int(np.argmax(hist_len == 0))} has an empty history"
        )
    keep = np.minimum(hist_len, max_history)
    seq_len = keep + 1
    ends = np.cumsum(seq_len)
    # position of each kept history item inside hist_values, then the target last
    within = np.arange(int(seq_len.sum())) - np.repeat(ends - seq_len, seq_len)
    is_target = within == np.repeat(keep, seq_len)
    source = np.repeat(hist_offsets[1:] - keep, seq_len) + within
    values = np.empty(len(within), dtype=np.int64)
    values[~is_target] = hist_values[source[~is_target]]
    values[is_target] = targets
    return seq_len, values


def read_samples(path: Path, max_history: int) -> SampleSet:
    """Samples of a split: a Parquet file or a folder of part-*.parquet (name order).

    Histories longer than `max_history` keep their most recent items.
    """
    lengths_parts, items_parts = [], []
    for file in part_files(path, "run the prepare stage first"):
        table = pq.read_table(file, columns=["history", "target"])
        lengths, items = prefix_sequences(table, file, max_history)
        lengths_parts.append(lengths)
        items_parts.append(items)
    lengths = np.concatenate(lengths_parts)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return SampleSet(offsets=offsets, items=np.concatenate(items_parts))


def eval_split_rows(path: Path) -> int:
    """Rows (users) of valid.parquet or test.parquet, from its footer."""
    if not path.exists():
        raise ArtifactError(f"{path} is missing: run the prepare stage first")
    return pq.ParquetFile(path).metadata.num_rows


def read_eval_split(
    path: Path, max_history: int, rows: np.ndarray | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """(histories, targets) of valid.parquet or test.parquet, histories truncated; only the
    increasing file rows `rows` when given. Streamed a record batch at a time."""
    total = eval_split_rows(path)
    wanted = np.arange(total) if rows is None else np.asarray(rows, dtype=np.int64)
    histories: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    first = 0
    for batch in pq.ParquetFile(path).iter_batches(1 << 16, columns=["history", "target"]):
        lo, hi = np.searchsorted(wanted, [first, first + batch.num_rows])
        picked = pa.Table.from_batches([batch]).take(pa.array(wanted[lo:hi] - first))
        first += batch.num_rows
        history = picked["history"].combine_chunks()
        offsets = history.offsets.to_numpy().astype(np.int64)
        values = pc.cast(history.values, "int64").to_numpy()
        histories += [
            values[max(start, end - max_history) : end]
            for start, end in zip(offsets[:-1], offsets[1:], strict=True)
        ]
        targets.append(picked["target"].to_numpy().astype(np.int64))
    return histories, np.concatenate(targets) if targets else np.zeros(0, np.int64)


@dataclass(frozen=True)
class MicroBatch:
    """One process's share of a global batch at one accumulation index."""

    sample_ids: np.ndarray
    """int64 [B]: indices into the SampleSet."""
    rows: np.ndarray
    """int64 [B]: positions inside the global batch (rows of the global batch's noise)."""


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    return num_samples // global_batch


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The sample permutation of `epoch` (same on every process); int32 while the sample count
    allows (the same permutation as int64, in half the memory)."""
    dtype = np.int32 if num_samples < 2**31 else np.int64
    return np.random.default_rng([seed, epoch]).permutation(np.arange(num_samples, dtype=dtype))


def micro_batches(
    global_ids: np.ndarray, lengths: np.ndarray, micro_batch: int, rank: int, world_size: int
) -> list[MicroBatch]:
    """This rank's micro-batches of one global batch, in accumulation order.

    `global_ids` [G] are sample indices in epoch order, `lengths` their sequence lengths.
    """
    G = len(global_ids)
    if G % (micro_batch * world_size):
        raise ValueError(f"global batch {G} is not a multiple of {micro_batch} x {world_size}")
    by_length = np.argsort(-lengths, kind="stable")
    chunks = by_length[rank::world_size].reshape(-1, micro_batch)
    return [MicroBatch(sample_ids=global_ids[rows], rows=rows) for rows in chunks]
