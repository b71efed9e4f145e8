"""Evaluation users -> shards of whole decoding batches, and the per-shard prediction files.

Users are ordered by (history length, user id) and cut into batches of `batch_size`; batch b goes
to shard b mod S, so every shard gets short and long histories alike and the shards take about
the same time (decoding cost grows with history length). A user is therefore decoded in the same batch, next to the same
users, however many shards there are, so merged shard predictions equal a single-process run.

Prediction files: DIR/evaluate/predictions/<split>/shard-XXXXX.parquet with columns
user_id:int64, target:int64, ranked:list<int64> (the generated top-K, best first, -1 padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distributed_rec.errors import ArtifactError, DataError


@dataclass
class EvalUsers:
    """The rows of one split: user_ids [U] int64, histories (U lists), targets [U] int64."""

    user_ids: np.ndarray
    histories: list[list[int]]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    def take(self, rows: np.ndarray) -> EvalUsers:
        return EvalUsers(self.user_ids[rows], [self.histories[r] for r in rows], self.targets[rows])


def read_split(path: Path, max_history: int) -> EvalUsers:
    """Read a valid/test split file (user_id, history, target); errors name the file.

    Histories keep their `max_history` most recent items.
    """
    if not path.exists():
        raise ArtifactError(f"{path} is missing: run the prepare stage first")
    table = pq.read_table(path, columns=["user_id", "history", "target"])
    histories = table["history"].to_pylist()
    if any(h is None or len(h) == 0 for h in histories):
        raise DataError(path, "a row has an empty history")
    return EvalUsers(
        user_ids=table["user_id"].to_numpy().astype(np.int64),
        histories=[h[-max_history:] for h in histories],
        targets=table["target"].to_numpy().astype(np.int64),
    )


def plan_shards(users: EvalUsers, batch_size: int, num_shards: int) -> list[np.ndarray]:
    """Row indices of each non-empty shard (at most `num_shards`), in decoding order."""
    lengths = np.fromiter((len(h) for h in users.histories), np.int64, len(users))
    order = np.lexsort((users.user_ids, lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    count = min(num_shards, len(batches))
    return [np.concatenate(batches[shard::count]) for shard in range(count)]


def shard_path(directory: Path, shard: int) -> Path:
    return directory / f"shard-{shard:05d}.parquet"


def write_predictions(path: Path, users: EvalUsers, ranked_UK: np.ndarray) -> None:
    """One shard's predictions, written to a temporary name and renamed (a retry overwrites)."""
    table = pa.table(
        {
            "user_id": pa.array(users.user_ids, pa.int64()),
            "target": pa.array(users.targets, pa.int64()),
            "ranked": pa.array(list(ranked_UK), pa.list_(pa.int64())),
        }
    )
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
