"""Stable user-hash sharding and the Ray Data job that writes interaction, training-sample and
training-window shards (one Ray task per shard: `part-<shard>.parquet` in each folder).

Legend: n events, U users. shard(user) = blake2b-64(raw user id, UTF-8) mod num_shards: stable
across runs, processes and machines (unlike Python's salted hash()).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distributed_rec.data.split import SAMPLE_SCHEMA, train_chunks, windows_table

INTERACTION_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("raw_user_id", pa.string()),
        ("item_id", pa.int64()),
        ("timestamp", pa.int64()),
        ("seq", pa.int32()),
    ]
)


def stable_hash(key: str) -> int:
    """64-bit blake2b of the UTF-8 key, as an unsigned integer."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def user_shards(raw_user_ids: list[str], num_shards: int) -> np.ndarray:
    """int64 [U]: shard of each user."""
    return np.fromiter(
        (stable_hash(u) % num_shards for u in raw_user_ids), dtype=np.int64, count=len(raw_user_ids)
    )


def part_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def shard_tables(interactions: pa.Table, user_shard: np.ndarray, num_shards: int) -> list[pa.Table]:
    """The interactions (grouped by user_id, seq order) split by shard, plus a `shard` column."""
    user = interactions["user_id"].to_numpy()
    row_shard = user_shard[user]
    order = np.argsort(row_shard, kind="stable")
    counts = np.bincount(row_shard, minlength=num_shards)
    table = interactions.take(pa.array(order)).append_column(
        "shard", pa.array(row_shard[order].astype(np.int32))
    )
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [table.slice(bounds[s], counts[s]) for s in range(num_shards)]


def write_shard(batch: pa.Table, out_dir: str, max_history: int) -> pa.Table:
    """Ray Data UDF: one whole shard -> its interactions part and training-sample part."""
    shards = np.unique(batch["shard"].to_numpy())
    if len(shards) != 1:
        raise RuntimeError(f"a batch holds shards {shards.tolist()}; expected one per batch")
    shard = int(shards[0])
    interactions = batch.drop_columns(["shard"]).cast(INTERACTION_SCHEMA)
    windows = write_shard_files(interactions, Path(out_dir), shard, max_history)
    lengths = np.unique(interactions["user_id"].to_numpy(), return_counts=True)[1]
    samples = int(np.maximum(lengths - 3, 0).sum())
    return pa.table(
        {
            "shard": [shard],
            "interactions": [batch.num_rows],
            "train_samples": [samples],
            "train_windows": [windows],
        }
    )


def write_shard_files(interactions: pa.Table, out_dir: Path, shard: int, max_history: int) -> int:
    """interactions/, splits/train/ and splits/train_windows/ part-<shard> of one shard (may be
    empty); returns the number of training windows written."""
    pq.write_table(interactions, out_dir / "interactions" / part_name(shard))
    users, lengths = (
        np.unique(interactions["user_id"].to_numpy(), return_counts=True)
        if interactions.num_rows
        else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    )
    item = interactions["item_id"].to_numpy()
    with pq.ParquetWriter(out_dir / "splits" / "train" / part_name(shard), SAMPLE_SCHEMA) as out:
        for table in train_chunks(item, lengths, max_history, users):
            out.write_table(table)
    starts = np.cumsum(lengths) - lengths
    windows = windows_table(item, starts, lengths, max_history + 1, users)
    pq.write_table(windows, out_dir / "splits" / "train_windows" / part_name(shard))
    return windows.num_rows


def write_shards_with_ray(
    tables: list[pa.Table], out_dir: Path, max_history: int
) -> list[dict[str, Any]]:
    """Write every non-empty shard as one Ray Data task; empty shards are written here."""
    import ray.data

    for shard, table in enumerate(tables):
        if table.num_rows == 0:
            empty = table.drop_columns(["shard"]).cast(INTERACTION_SCHEMA)
            write_shard_files(empty, out_dir, shard, max_history)
    busy = [t for t in tables if t.num_rows]
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    dataset = ray.data.from_arrow(busy).map_batches(
        write_shard,
        batch_size=None,
        batch_format="pyarrow",
        fn_kwargs={"out_dir": str(out_dir), "max_history": max_history},
        num_cpus=1,
    )
    return sorted(dataset.take_all(), key=lambda r: r["shard"])
