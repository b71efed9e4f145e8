"""Evaluation users -> shards of whole decoding batches, and the per-shard prediction files.

Users are ordered by (history length, user id) and cut into batches of `batch_size`; batch b goes
to shard b mod S, so every shard gets short and long histories alike and the shards take about
the same time (decoding cost grows with history length). A user is therefore decoded in the same batch, next to the same
users, however many shards there are, so merged shard predictions equal a single-process run.

Prediction files: DIR/evaluate/predictions/<split>/shard-XXXXX.parquet with columns
user_id:int64, target:int64, ranked:list<int64> (the generated top-K, best first, -1 padding);
with the dense head also dense:list<int64> (the dense top-K), candidates:list<int64> and their
generative_scores, dense_scores:list<float32> (the hybrid candidates, `decode/hybrid.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distributed_rec.errors import ArtifactError, DataError

READ_ROWS = 1 << 16
"""Rows per record batch when a split file is streamed."""


@dataclass
class EvalUsers:
    """The rows of one split: user_ids [U] int64, histories (U lists), targets [U] int64."""

    user_ids: np.ndarray
    histories: list[list[int]]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        """int64 [U]: history lengths."""
        return np.fromiter((len(h) for h in self.histories), np.int64, len(self.histories))

    def take(self, rows: np.ndarray) -> EvalUsers:
        return EvalUsers(self.user_ids[rows], [self.histories[r] for r in rows], self.targets[rows])


@dataclass
class SplitIndex:
    """What the driver reads of a split to plan shards: per row user_id, history length and
    target, int64 [U] each (never the histories); `rows` [U] are the rows in the file."""

    user_ids: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    def take(self, rows: np.ndarray) -> SplitIndex:
        return SplitIndex(
            self.user_ids[rows], self.lengths[rows], self.targets[rows], self.rows[rows]
        )


def _split_file(path: Path) -> pq.ParquetFile:
    if not path.exists():
        raise ArtifactError(f"{path} is missing: run the prepare stage first")
    return pq.ParquetFile(path)


def read_split_index(path: Path, max_history: int) -> SplitIndex:
    """user_id, truncated history length and target of every row of a valid/test split file,
    streamed batch by batch; an empty history is an error naming the file."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for batch in _split_file(path).iter_batches(
        READ_ROWS, columns=["user_id", "history", "target"]
    ):
        lengths = pc.fill_null(pc.list_value_length(batch.column("history")), 0).to_numpy()
        if (lengths == 0).any():
            raise DataError(path, "a row has an empty history")
        parts.append(
            (
                batch.column("user_id").to_numpy().astype(np.int64),
                np.minimum(lengths.astype(np.int64), max_history),
                batch.column("target").to_numpy().astype(np.int64),
            )
        )
    user_ids, lengths, targets = (
        np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64) for i in range(3)
    )
    return SplitIndex(user_ids, lengths, targets, np.arange(len(user_ids), dtype=np.int64))


def _users(table: pa.Table, path: Path, max_history: int) -> EvalUsers:
    histories = table["history"].to_pylist()
    if any(h is None or len(h) == 0 for h in histories):
        raise DataError(path, "a row has an empty history")
    return EvalUsers(
        user_ids=table["user_id"].to_numpy().astype(np.int64),
        histories=[h[-max_history:] for h in histories],
        targets=table["target"].to_numpy().astype(np.int64),
    )


def iter_split_rows(path: Path, rows: np.ndarray, max_history: int) -> Iterator[EvalUsers]:
    """The users of the increasing file rows `rows`, a record batch at a time, in one pass."""
    wanted = np.asarray(rows, dtype=np.int64)
    first = 0
    for batch in _split_file(path).iter_batches(
        READ_ROWS, columns=["user_id", "history", "target"]
    ):
        lo, hi = np.searchsorted(wanted, [first, first + batch.num_rows])
        if hi > lo:
            table = pa.Table.from_batches([batch]).take(pa.array(wanted[lo:hi] - first))
            yield _users(table, path, max_history)
        first += batch.num_rows


def read_split_rows(path: Path, rows: np.ndarray, max_history: int) -> EvalUsers:
    """The users of file rows `rows` (in that order), streamed: memory holds these users only.

    Histories keep their `max_history` most recent items."""
    wanted = np.sort(np.asarray(rows, dtype=np.int64))
    parts = list(iter_split_rows(path, wanted, max_history))
    got = sum(len(p) for p in parts)
    if got != len(wanted):
        raise DataError(path, f"has fewer rows than row {int(wanted.max(initial=-1))} asked for")
    in_file_order = EvalUsers(
        user_ids=np.concatenate([p.user_ids for p in parts] or [np.zeros(0, np.int64)]),
        histories=[h for p in parts for h in p.histories],
        targets=np.concatenate([p.targets for p in parts] or [np.zeros(0, np.int64)]),
    )
    return in_file_order.take(np.searchsorted(wanted, rows))  # back to the order asked for


def read_split(path: Path, max_history: int) -> EvalUsers:
    """Every row of a valid/test split file (user_id, history, target); errors name the file.

    Histories keep their `max_history` most recent items.
    """
    rows = np.arange(_split_file(path).metadata.num_rows, dtype=np.int64)
    return read_split_rows(path, rows, max_history)


def plan_shards(
    users: EvalUsers | SplitIndex, batch_size: int, num_shards: int
) -> list[np.ndarray]:
    """Row indices of each non-empty shard (at most `num_shards`), in decoding order."""
    order = np.lexsort((users.user_ids, users.lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    count = min(num_shards, len(batches))
    return [np.concatenate(batches[shard::count]) for shard in range(count)]


def shard_path(directory: Path, shard: int) -> Path:
    return directory / f"shard-{shard:05d}.parquet"


def _list_column(rows_UX: np.ndarray) -> pa.Array:
    U, X = rows_UX.shape
    values = pa.array(np.ascontiguousarray(rows_UX).reshape(-1))
    return pa.ListArray.from_arrays(pa.array(np.arange(U + 1, dtype=np.int32) * X), values)


def write_predictions(
    path: Path,
    users: EvalUsers,
    ranked_UK: np.ndarray,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """One shard's predictions, written to a temporary name and renamed (a retry overwrites).

    `extra` adds list columns, one [U, X] array (row u for user u) each.
    """
    columns = {
        "user_id": pa.array(users.user_ids, pa.int64()),
        "target": pa.array(users.targets, pa.int64()),
        "ranked": pa.array(list(ranked_UK), pa.list_(pa.int64())),
    }
    for name, rows_UX in (extra or {}).items():
        columns[name] = _list_column(rows_UX)
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def read_predictions(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merged shards sorted by user: user_ids [U], targets [U], ranked [U, K]."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise ArtifactError(f"{missing[0]} is missing: a shard did not finish")
    table = pa.concat_tables([pq.read_table(p) for p in paths])
    user_ids = table["user_id"].to_numpy()
    order = np.argsort(user_ids, kind="stable")
    ranked = np.asarray(table["ranked"].to_pylist(), dtype=np.int64).reshape(len(table), -1)
    return user_ids[order], table["target"].to_numpy()[order], ranked[order]


def read_prediction_columns(paths: list[Path], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """List columns `names` of the merged shards, sorted by user as `read_predictions`: [U, X]."""
    table = pa.concat_tables([pq.read_table(p, columns=["user_id", *names]) for p in paths])
    order = np.argsort(table["user_id"].to_numpy(), kind="stable")
    out = {}
    for name in names:
        column = table[name].combine_chunks()
        values = column.values.to_numpy(zero_copy_only=False)
        out[name] = values.reshape(len(table), -1)[order]
    return out
