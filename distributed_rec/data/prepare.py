"""The prepare stage (SPEC §2): raw logs -> cleaned, split, user-hash-sharded Parquet.

Every step over interaction rows is a Ray task (a local Ray instance is started when
ray.address is empty); the driver holds counts, the item metadata and the kept users' raw ids
(to number them), never interaction rows:

1. read (:mod:`~distributed_rec.data.blocks`): blocks of the input in parallel, validated and
   written as rows partitioned by user shard;
2. clean (:mod:`~distributed_rec.data.buckets`): per shard, the metadata check, time order and
   duplicate removal; then k-core rounds, the driver summing item counts, to the fixed point;
3. write: per shard, the interactions, training-sample and training-window parts and the valid
   / test rows, which one task per split merges in user order (:mod:`~distributed_rec.data.merge`).

Intermediate files live in `run_dir/_prepare_work` (removed at the end, also on failure);
outputs are built in `prepare/_staging` (removed on failure) and moved into place at the end, so
a failed run never leaves a mix of old and new shards. Each task's node is counted per step
(`stats.json: task_nodes`); a task whose worker or node dies is re-run on another
(:mod:`~distributed_rec.data.tasks`).
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
from distributed_rec.config import DataConfig, JobConfig
from distributed_rec.data.blocks import (
    ORDER_SHIFT,
    BlockResult,
    Inputs,
    plan_blocks,
    read_block,
    read_inputs,
    settle_lines,
)
from distributed_rec.data.buckets import (
    ShardLoad,
    kcore_round,
    kept_users,
    load_shard,
    total_counts,
    write_shard,
)
from distributed_rec.data.cleaning import digit_ids, id_order
from distributed_rec.data.issues import Issues
from distributed_rec.data.items import items_table, unique_metadata
from distributed_rec.data.merge import merge_eval_split
from distributed_rec.data.raw import RawData
from distributed_rec.data.tasks import run_tasks, submit_tasks
from distributed_rec.distributed.nodes import NodeTally
from distributed_rec.distributed.ray_runtime import ray_connection
from distributed_rec.errors import DataError

log = logging.getLogger(__name__)
OUTPUTS = ("items.parquet", "interactions", "splits")
STAGING = "_staging"


def _publish(staging: Path, stage_dir: Path) -> None:
    for name in OUTPUTS:
        target = stage_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        (staging / name).rename(target)
    shutil.rmtree(staging)


def _read(
    data: DataConfig, work: Path, nodes: NodeTally
) -> tuple[list[BlockResult], Issues, int, Inputs, np.ndarray]:
    """Read every block; raise the first error in input order; merge the counted skips. Also
    returns the line shift of each block (:func:`~distributed_rec.data.blocks.settle_lines`)."""
    blocks = plan_blocks(data)
    pending = submit_tasks(read_block, [(b, data, str(work)) for b in blocks])
    inputs, meta_error = None, None
    if blocks[0].kind != "reader":  # the metadata, read while the blocks are
        try:
            inputs = read_inputs(data, lambda fn, calls: run_tasks(fn, calls, nodes=nodes))
        except DataError as err:
            meta_error = err  # raised after the interactions' own errors, as if read after them
    results = pending.results(nodes)
    results, line_shift = settle_lines(
        blocks, results, data, str(work), lambda fn, calls: run_tasks(fn, calls, nodes=nodes)
    )
    for result in results:
        if result.error is not None:
            raise DataError(*result.error)
    issues = Issues(data.errors)
    for result in results:
        issues.merge(result.issues)
    rows = sum(r.rows for r in results)
    if blocks[0].kind != "reader" and rows == 0 and issues.total == 0:
        raise DataError(blocks[0].path, "file is empty")
    if meta_error is not None:
        raise meta_error
    if inputs is None:
        inputs = results[0].inputs  # the 'reader' block read the metadata too
        assert inputs is not None, "a 'reader' block returns the metadata"
    return results, issues, rows, inputs, line_shift


def _report_absent(
    loads: list[ShardLoad], inputs: Inputs, issues: Issues, line_shift: np.ndarray
) -> int:
    """Interactions whose item has no metadata: DataError (strict) or counted (lenient);
    `line_shift` int64 [blocks] is added to the line of the row named."""
    absent_rows = sum(s.absent_rows for s in loads)
    if not absent_rows:
        return 0
    first = min((s.first_absent for s in loads if s.first_absent), key=lambda a: a.order)
    absent = {i for s in loads for i in s.absent_items}
    problem = (
        f"item {first.item!r} is absent from the metadata file {inputs.items_path.name}"
        f" ({len(absent)} item(s) without metadata)"
    )
    if first.line < 0:
        problem += f" (user {first.user!r})"
    line = first.line + int(line_shift[first.order >> ORDER_SHIFT]) if first.line >= 0 else None
    path = inputs.row_path(first.source)
    issues.report("missing_metadata", path, problem, line, count=absent_rows)
    return absent_rows


def _kcore(
    work: Path, counts: np.ndarray, k: int, shards: int, nodes: NodeTally
) -> tuple[np.ndarray, np.ndarray, int]:
    """(alive bool [N], events per item int64 [N], rounds) at the k-core fixed point."""
    import ray

    if k <= 0:
        return counts > 0, counts, 0
    alive, rounds = counts >= k, 0
    while True:
        rounds += 1
        ref = ray.put(alive)
        calls = [(s, str(work), ref, k) for s in range(shards)]
        results = run_tasks(kcore_round, calls, nodes=nodes)
        counts = total_counts(results, len(alive))
        still = alive & (counts >= k)
        if np.array_equal(still, alive):
            return alive, counts, rounds
        alive = still


def _dense_users(parts: list[pa.Array | None], integer: bool, numeric: bool) -> list[np.ndarray]:
    """Dense ids of each shard's kept users: their rank in the order of all raw ids."""
    present = [p for p in parts if p is not None and len(p)]
    if not present:
        return [np.zeros(0, np.int64) for _ in parts]
    every = pa.concat_arrays(present)
    order = id_order(every if integer else pc.cast(every, pa.string()), numeric)
    dense = np.empty(len(every), np.int64)
    dense[order] = np.arange(len(every))
    sizes = [0 if p is None else len(p) for p in parts]
    return np.split(dense, np.cumsum(sizes)[:-1])


def _prepare(config: JobConfig, work: Path, started: float) -> dict[str, Any]:
    import ray

    data = config.data
    paths = RunPaths.of(config.run_dir)
    shards = data.num_shards
    nodes = NodeTally()
    results, issues, rows, inputs, line_shift = _read(data, work, nodes)
    read_seconds = time.perf_counter() - started
    raw = RawData(
        pa.table({"item": pa.array([], pa.string())}),
        inputs.items,
        inputs.interactions_path,
        inputs.items_path,
        issues,
        inputs.meta_issues,
        inputs.aliases,
        inputs.sources,
    )
    metadata = unique_metadata(raw)
    meta_ids = pc.cast(metadata["item"], pa.string()).combine_chunks()
    loads: list[ShardLoad] = run_tasks(
        load_shard, [(s, str(work), ray.put(meta_ids)) for s in range(shards)], nodes=nodes
    )
    absent_rows = _report_absent(loads, inputs, issues, line_shift)
    records = rows + issues.total - absent_rows  # absent rows were counted in `rows` already
    if rows == absent_rows:
        raise DataError(
            inputs.interactions_path,
            f"no interactions left: every one of the {records} record(s) was skipped "
            f"(data.errors=lenient): {issues.summary()}",
        )
    counts = first_counts = total_counts([s.item_counts for s in loads], len(meta_ids))
    raw_counts = {
        "users": sum(s.raw_users for s in loads),
        "items": int((counts > 0).sum()) + len({i for s in loads for i in s.absent_items}),
    }
    duplicates = sum(s.duplicates for s in loads)
    alive, counts, rounds = _kcore(work, counts, data.kcore, shards, nodes)
    events = int(counts[alive].sum())
    dropped_clean = {"duplicate": duplicates, "kcore": rows - absent_rows - duplicates - events}
    if events == 0:
        raise DataError(
            inputs.interactions_path,
            f"no interactions left after cleaning (dropped: {dropped_clean}); "
            f"lower data.kcore (now {data.kcore}) or check the input",
        )
    kept_codes = np.flatnonzero(alive & (counts > 0))
    integer_users = any(r.integer_ids[0] for r in results if r.rows)
    integer_items = any(r.integer_ids[1] for r in results if r.rows)
    present = meta_ids.take(pa.array(np.flatnonzero(first_counts > 0)))
    item_numeric = integer_items or all(digit_ids(present))
    kept_ids = meta_ids.take(pa.array(kept_codes))
    item_order = kept_codes[id_order(kept_ids, item_numeric)]
    item_dense = np.full(len(meta_ids), -1, np.int64)
    item_dense[item_order] = np.arange(len(item_order))
    item_ids = meta_ids.take(pa.array(item_order))

    alive_ref = ray.put(alive)
    calls = [(s, str(work), alive_ref, data.kcore) for s in range(shards)]
    users = run_tasks(kept_users, calls, nodes=nodes)
    user_numeric = all(all(s.user_digits) for s in loads)
    dense = _dense_users(users, integer_users, user_numeric)
    num_users = sum(len(d) for d in dense)
    clean_seconds = time.perf_counter() - started - read_seconds

    stage_dir = paths.stage_dir("prepare")
    staging = stage_dir / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    for folder in ("interactions", "splits/train", "splits/train_windows"):
        (staging / folder).mkdir(parents=True)
    dense_ref = ray.put(item_dense)
    calls = [
        (
            s,
            str(work),
            str(staging),
            alive_ref,
            data.kcore,
            dense_ref,
            dense[s],
            data.max_history,
            data.train_item_drop,
            data.train_drop_seed,
        )
        for s in range(shards)
    ]
    pending = submit_tasks(write_shard, calls)
    items = items_table(item_ids, metadata, raw, data)  # while the shards are written
    pq.write_table(items, staging / "items.parquet")
    written = pending.results(nodes)
    merged = run_tasks(
        merge_eval_split,
        [
            (
                [str(work / "eval" / split / f"{s:05d}.parquet") for s in range(shards)],
                str(staging / "splits" / f"{split}.parquet"),
                num_users,
            )
            for split in ("valid", "test")
        ],
        nodes=nodes,
    )
    split_counts: dict[str, int] = {}
    for split, count in zip(("valid", "test"), merged, strict=True):
        split_counts[f"{split}_users"] = count
        split_counts[f"{split}_users_without_history"] = sum(
            w[f"{split}_users_without_history"] for w in written
        )
    _publish(staging, stage_dir)
    write_seconds = time.perf_counter() - started - read_seconds - clean_seconds

    shard_rows = [
        {k: w[k] for k in ("shard", "interactions", "train_samples", "train_windows")}
        for w in written
        if w["interactions"]
    ]
    dropped = {**issues.as_dict(), **dropped_clean}
    stats = {
        "format": data.format,
        "source": str(inputs.interactions_path),
        "metadata": str(inputs.items_path),
        "users": num_users,
        "items": len(item_ids),
        "interactions": events,
        "sparsity": 1.0 - events / (num_users * len(item_ids)),
        "avg_length": events / num_users,
        "raw": {"interactions": records, **raw_counts, "metadata_items": inputs.items.num_rows},
        "dropped": dropped,
        "skipped_metadata": inputs.meta_issues.as_dict(),
        "items_without_text": int(pc.sum(pc.equal(items["text"], "")).as_py() or 0),
        "split": {
            "train_samples": sum(w["train_samples"] for w in written),
            "train_windows": sum(w["train_windows"] for w in written),
            **split_counts,
            "max_history": data.max_history,
            "train_item_drop": data.train_item_drop,
        },
        "kcore": data.kcore,
        "kcore_rounds": rounds,
        "errors": data.errors,
        "num_shards": shards,
        "shards": shard_rows,
        "read_blocks": len(results),
        "task_nodes": nodes.as_dict(),
        "id_order": "dense ids follow the sorted raw ids (numeric when every id is an integer)",
        "seconds": {
            "read": read_seconds,
            "clean": clean_seconds,
            "write": write_seconds,
            "total": time.perf_counter() - started,
        },
    }
    write_json_atomic(paths.prepare_stats, stats)
    log.info(
        "prepare: %d users, %d items, %d interactions (dropped %s) in %.1f s",
        num_users,
        len(item_ids),
        events,
        dropped,
        stats["seconds"]["total"],
    )
    return {k: stats[k] for k in ("users", "items", "interactions", "dropped", "task_nodes")}


def run_prepare(config: JobConfig) -> dict[str, Any]:
    """Prepare the dataset of `config.data` into `run_dir/prepare`; returns stats.json's content."""
    started = time.perf_counter()
    if config.data.download:
        from dataclasses import replace

        from distributed_rec.data.download import download_dataset

        config = replace(config, data=download_dataset(config.data))
    work = RunPaths.of(config.run_dir).root / "_prepare_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with ray_connection(config.ray):
            return _prepare(config, work, started)
    except BaseException:
        # outputs half-written when a task failed for good: the previous ones stay in place
        shutil.rmtree(RunPaths(Path(config.run_dir)).stage_dir("prepare") / STAGING, True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
