"""The evaluate stage: sharded decoding as a Ray batch job, merged metrics, popularity floor.

The driver reads only user ids, history lengths and targets of each split (to sample users and
plan the shards); each shard is a Ray task (retried when its worker dies or it raises) that
reads its own users' histories from the split file, loads the checkpoint once, decodes and
writes a Parquet file; the driver merges the files and computes the metrics, so they equal a
single-process run. `evaluate.use_ray=false` runs the shards in-process.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import numpy as np

from distributed_rec.artifacts import RunPaths, write_json_atomic
from distributed_rec.config import ConfigError, EvaluateConfig, JobConfig
from distributed_rec.decode.scoring import decode_uses_bf16
from distributed_rec.distributed.env import resolve_device
from distributed_rec.distributed.ray_runtime import ray_connection
from distributed_rec.errors import ArtifactError, DistributedRecError
from distributed_rec.evaluate.metrics import popularity_ranking, ranking_metrics
from distributed_rec.evaluate.modes import mode_metrics
from distributed_rec.evaluate.popularity import training_item_counts
from distributed_rec.evaluate.shards import (
    SplitIndex,
    iter_split_rows,
    plan_shards,
    read_predictions,
    read_split_index,
    shard_path,
)
from distributed_rec.evaluate.tables import metrics_markdown
from distributed_rec.evaluate.worker import CRASH_ONCE_ENV, decode_shard
from distributed_rec.semantic_ids.id_table import SemanticIdTable

log = logging.getLogger(__name__)

RANKED_LISTS = {
    "generative": "generated top-K (constrained beam search over real items)",
    "dense": "dense top-K (every item scored by the dense retrieval head)",
    "hybrid": "hybrid top-K (beam and dense candidates re-scored by a weighted sum)",
}

Job = tuple[str, int, np.ndarray]
"""(split, shard index, the split-file rows of the shard's users in decoding order)."""


def _run_in_process(config: JobConfig, jobs: list[Job]) -> tuple[list[dict[str, Any]], float]:
    started = time.perf_counter()
    results = [decode_shard(config, split, shard, rows) for split, shard, rows in jobs]
    return results, time.perf_counter() - started


def shard_task_options(config: JobConfig) -> dict[str, Any]:
    """Ray task options of one shard: `ray.actor_num_cpus` CPUs, one GPU when decoding on
    cuda, retried (a lost worker or node, or an exception) up to `evaluate.max_retries` times."""
    return {
        "num_cpus": config.ray.actor_num_cpus,
        "num_gpus": 1 if config.device == "cuda" else 0,
        "max_retries": config.evaluate.max_retries,
        "retry_exceptions": True,
    }


def _run_with_ray(config: JobConfig, jobs: list[Job]) -> tuple[list[dict[str, Any]], float]:
    """Shards as Ray tasks; the seconds count from submission (Ray start-up excluded)."""
    import ray
    from ray.exceptions import RayTaskError

    with ray_connection(config.ray):
        task = ray.remote(decode_shard).options(**shard_task_options(config))
        started = time.perf_counter()
        config_ref = ray.put(config)
        marker = os.environ.get(CRASH_ONCE_ENV, "")
        refs = [task.remote(config_ref, split, shard, rows, marker) for split, shard, rows in jobs]
        try:
            results = ray.get(refs)
        except RayTaskError as err:
            if isinstance(err.cause, DistributedRecError):
                raise err.cause from None
            raise
        return results, time.perf_counter() - started


def _check_inputs(paths: RunPaths) -> None:
    if not paths.semantic_ids.exists():
        raise ArtifactError(f"{paths.semantic_ids} is missing: run the tokenize stage first")
    if not paths.best_model.exists():
        raise ArtifactError(f"{paths.best_model} is missing: run the train stage first")


def sample_users(users: SplitIndex, evaluate: EvaluateConfig) -> SplitIndex:
    """All users, or a seeded sample of `evaluate.max_users` of them (in their original order)."""
    if not evaluate.max_users or len(users) <= evaluate.max_users:
        return users
    rng = np.random.default_rng(evaluate.sample_seed)
    rows = np.sort(rng.choice(len(users), size=evaluate.max_users, replace=False))
    return users.take(rows)


def _popularity(
    paths: RunPaths, config: JobConfig, counts_N: np.ndarray, users: SplitIndex, split: str
) -> dict[str, float]:
    """The popularity floor's metrics on `users`, their histories streamed from the split."""
    path, k = paths.eval_split(split), config.decode.top_k
    parts = [
        popularity_ranking(counts_N, part.histories, k, exclude_history=True)
        for part in iter_split_rows(path, users.rows, config.data.max_history)
    ]
    return ranking_metrics(np.concatenate(parts) if parts else np.zeros((0, k)), users.targets)


def run_evaluate(config: JobConfig) -> dict[str, Any]:
    """Decode every user of `evaluate.splits`; write metrics.json and metrics.md."""
    started = time.perf_counter()
    paths = RunPaths.of(config.run_dir)
    _check_inputs(paths)
    users = {
        split: sample_users(
            read_split_index(paths.eval_split(split), config.data.max_history), config.evaluate
        )
        for split in config.evaluate.splits
    }
    plans = {
        split: plan_shards(u, config.evaluate.batch_size, config.evaluate.num_shards)
        for split, u in users.items()
    }
    jobs: list[Job] = []
    for split, plan in plans.items():
        shutil.rmtree(paths.predictions(split), ignore_errors=True)  # no stale shards
        paths.publish(paths.predictions(split))
        jobs += [(split, shard, users[split].rows[rows]) for shard, rows in enumerate(plan)]

    run = _run_with_ray if config.evaluate.use_ray else _run_in_process
    shard_results, decode_seconds = run(config, jobs)

    metrics: dict[str, Any] = {}
    paths.fetch(*(paths.predictions(split) for split in plans))  # shards written elsewhere
    files = {
        split: [shard_path(paths.predictions(split), shard) for shard in range(len(plan))]
        for split, plan in plans.items()
    }
    targets: dict[str, np.ndarray] = {}
    for split in plans:
        _, targets[split], ranked = read_predictions(files[split])
        metrics[split] = ranking_metrics(ranked, targets[split])
    ranking: dict[str, Any] = {"mode": "generative"}
    if config.model.dense_loss_weight > 0:
        generative = {split: metrics[split] for split in plans}
        try:
            ranking.update(mode_metrics(files, targets, generative, config.decode))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        ranking["mode"] = config.decode.ranking
        metrics.update(ranking["modes"][config.decode.ranking])
    popularity_split = "test" if "test" in users else config.evaluate.splits[-1]
    table = SemanticIdTable.read(paths.semantic_ids)
    num_items = 1 + max(int(table.item_ids.max()), *(int(u.targets.max()) for u in users.values()))
    counts = training_item_counts(paths.train_split, num_items)
    total_users = sum(len(u) for u in users.values())
    metrics.update(
        popularity=_popularity(paths, config, counts, users[popularity_split], popularity_split),
        popularity_split=popularity_split,
        users={split: len(u) for split, u in users.items()},
        users_per_s=total_users / decode_seconds,
        decode_seconds=decode_seconds,
        shard_seconds=[r["seconds"] for r in shard_results],
        shard_nodes=[r.get("node") for r in shard_results],
        users_per_worker_s={
            split: len(users[split])
            / sum(
                r["seconds"] for (s, _, _), r in zip(jobs, shard_results, strict=True) if s == split
            )
            for split in users
        },
        num_shards=len(jobs),
        sampled_users=config.evaluate.max_users or None,
        use_ray=config.evaluate.use_ray,
        decode={
            key: getattr(config.decode, key)
            for key in (
                "beam_size",
                "valid_beam_size",
                "steps",
                "order",
                "top_k",
                "precision",
                "exclude_history",
                "ranking",
                "dense_candidates",
                "hybrid_weight",
                "dense_prior_weight",
            )
        },
        config_hash=config.section_hash("data", "tokenize", "model", "train", "decode"),
        ranked_lists=RANKED_LISTS[ranking["mode"]],
        ranking=ranking,
    )
    uses_bf16 = decode_uses_bf16(config.decode.precision, resolve_device(config.device))
    metrics["decode"]["forward_dtype"] = "bf16" if uses_bf16 else "fp32"
    metrics["decode"]["history_cache"] = config.cached_decoding
    metrics["wall_seconds"] = time.perf_counter() - started
    write_json_atomic(paths.eval_metrics, metrics)
    paths.eval_table.write_text(metrics_markdown(metrics))
    log.info("evaluate: %s", {s: metrics[s] for s in (*users, "popularity")})
    return {
        "users": metrics["users"],
        "users_per_s": metrics["users_per_s"],
        **{split: metrics[split] for split in users},
        "popularity": metrics["popularity"],
    }
