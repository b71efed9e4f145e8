"""The prepare stage (SPEC §2): raw logs -> cleaned, split, user-hash-sharded Parquet.

Reading, cleaning and the per-user split bookkeeping run vectorised in this process; the
interaction and training-sample shards are written by a Ray Data job, one task per shard (a local
Ray instance is started when ray.address is empty). Outputs are built in `prepare/_staging` and
moved into place at the end, so a failed run never leaves a mix of old and new shards.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distributed_rec.artifacts import RunPaths, write_json_atomic
from distributed_rec.config import JobConfig
from distributed_rec.data.cleaning import Cleaned, clean
from distributed_rec.data.items import drop_missing_metadata, items_table, unique_metadata
from distributed_rec.data.readers import read_dataset
from distributed_rec.data.sharding import (
    INTERACTION_SCHEMA,
    shard_tables,
    user_shards,
    write_shards_with_ray,
)
from distributed_rec.data.split import eval_split
from distributed_rec.distributed.ray_runtime import ray_connection
from distributed_rec.errors import DataError

log = logging.getLogger(__name__)
OUTPUTS = ("items.parquet", "interactions", "splits")


def _interactions(cleaned: Cleaned) -> pa.Table:
    raw_user = cleaned.user_ids.take(pa.array(cleaned.user))
    columns = [cleaned.user, raw_user, cleaned.item, cleaned.timestamp, cleaned.seq]
    return pa.Table.from_arrays([pa.array(c) for c in columns], schema=INTERACTION_SCHEMA)


def _publish(staging: Path, stage_dir: Path) -> None:
    for name in OUTPUTS:
        target = stage_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        (staging / name).rename(target)
    shutil.rmtree(staging)


def run_prepare(config: JobConfig) -> dict[str, Any]:
    """Prepare the dataset of `config.data` into `run_dir/prepare`; returns stats.json's content."""
    data = config.data
    paths = RunPaths(Path(config.run_dir))
    started = time.perf_counter()
    if data.download:
        from distributed_rec.data.download import download_dataset

        data = download_dataset(data)

    raw = read_dataset(data)
    raw_counts = {
        "users": pc.count_distinct(raw.interactions["user"]).as_py(),
        "items": pc.count_distinct(raw.interactions["item"]).as_py(),
    }
    metadata = unique_metadata(raw)
    drop_missing_metadata(raw, metadata)
    if raw.interactions.num_rows == 0:
        raise DataError(
            raw.interactions_path,
            f"no interactions left: every one of the {raw.records} record(s) was skipped "
            f"(data.errors=lenient): {raw.issues.summary()}",
        )
    cleaned = clean(raw, data.kcore)
    if len(cleaned.user) == 0:
        raise DataError(
            raw.interactions_path,
            f"no interactions left after cleaning (dropped: {cleaned.dropped}); "
            f"lower data.kcore (now {data.kcore}) or check the input",
        )
    items = items_table(cleaned.item_ids, metadata, raw, data)
    read_seconds = time.perf_counter() - started

    stage_dir = paths.stage_dir("prepare")
    staging = stage_dir / "_staging"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "interactions").mkdir(parents=True)
    (staging / "splits" / "train").mkdir(parents=True)
    (staging / "splits" / "train_windows").mkdir(parents=True)
    pq.write_table(items, staging / "items.parquet")
    lengths = cleaned.lengths
    split_counts: dict[str, int] = {}
    for split in ("valid", "test"):
        table, without = eval_split(cleaned.item, lengths, split, data.max_history)
        pq.write_table(table, staging / "splits" / f"{split}.parquet")
        split_counts[f"{split}_users"] = table.num_rows
        split_counts[f"{split}_users_without_history"] = without

    shards = shard_tables(
        _interactions(cleaned),
        user_shards(cleaned.user_ids.to_pylist(), data.num_shards),
        data.num_shards,
    )
    ray_started = time.perf_counter()
    with ray_connection(config.ray):
        shard_rows = write_shards_with_ray(shards, staging, data.max_history)
    ray_seconds = time.perf_counter() - ray_started
    _publish(staging, stage_dir)

    users, num_items, events = len(cleaned.user_ids), len(cleaned.item_ids), len(cleaned.user)
    dropped = {**raw.issues.as_dict(), **cleaned.dropped}
    stats = {
        "format": data.format,
        "source": str(raw.interactions_path),
        "metadata": str(raw.items_path),
        "users": users,
        "items": num_items,
        "interactions": events,
        "sparsity": 1.0 - events / (users * num_items),
        "avg_length": events / users,
        "raw": {"interactions": raw.records, **raw_counts, "metadata_items": raw.items.num_rows},
        "dropped": dropped,
        "skipped_metadata": raw.meta_issues.as_dict(),
        "items_without_text": int(pc.sum(pc.equal(items["text"], "")).as_py() or 0),
        "split": {
            "train_samples": int(np.maximum(lengths - 3, 0).sum()),
            "train_windows": int(sum(row["train_windows"] for row in shard_rows)),
            **split_counts,
            "max_history": data.max_history,
        },
        "kcore": data.kcore,
        "errors": data.errors,
        "num_shards": data.num_shards,
        "shards": shard_rows,
        "id_order": "dense ids follow the sorted raw ids (numeric when every id is an integer)",
        "seconds": {
            "read_clean": read_seconds,
            "ray_write": ray_seconds,
            "total": time.perf_counter() - started,
        },
    }
    write_json_atomic(paths.prepare_stats, stats)
    log.info(
        "prepare: %d users, %d items, %d interactions (dropped %s) in %.1f s",
        users,
        num_items,
        events,
        dropped,
        stats["seconds"]["total"],
    )
    return {k: stats[k] for k in ("users", "items", "interactions", "dropped")}
