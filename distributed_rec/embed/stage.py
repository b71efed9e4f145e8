"""The embed stage: item text -> sentence embeddings as a Ray Data `map_batches` job (SPEC §3).

The summary names the node of every embedding actor (`actor_nodes`: node id -> items embedded).

Legend: N items, D embedding dimension (P after the optional PCA).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distributed_rec.artifacts import RunPaths, read_artifact_table
from distributed_rec.config import JobConfig
from distributed_rec.distributed.nodes import NodeTally, current_node
from distributed_rec.distributed.ray_runtime import ray_connection
from distributed_rec.embed.model import SentenceEmbedder, model_fingerprint, resolve_model_path
from distributed_rec.embed.pca import apply_pca, fit_pca, training_item_ids
from distributed_rec.errors import ArtifactError, DataError

log = logging.getLogger(__name__)

METADATA_KEY = b"distributed_rec.embed"
ACTOR_START_TIMEOUT_S = 600
"""Seconds the job waits for all its actors to load the model before it hands out batches (so
that every actor gets some); past it, the stage fails with Ray's "Timed out while starting
actors" (the cluster lacks the CPUs/GPUs they ask for) instead of waiting forever."""


def read_items(path: Path) -> tuple[np.ndarray, list[str]]:
    """Item ids int64 [N] (must be 0..N-1) and their texts from `items.parquet`."""
    table = read_artifact_table(path, ("item_id", "text"), producer="prepare")
    item_ids = table["item_id"].to_numpy().astype(np.int64)
    if not np.array_equal(np.sort(item_ids), np.arange(len(item_ids))):
        raise DataError(path, "item_id must be the dense ids 0..N-1, each once")
    texts = [t if t is not None else "" for t in table["text"].to_pylist()]
    return item_ids, texts


def cache_key(config: JobConfig, item_ids: np.ndarray, texts: list[str], train_ids: Any) -> str:
    """Content key of an embedding file: model identity, embedding options, item texts."""
    digest = hashlib.sha256()
    model_path = resolve_model_path(config.embed.model)
    options = {
        "model": config.embed.model,
        "model_files": model_fingerprint(model_path),
        "normalize": config.embed.normalize,
        "max_seq_length": config.embed.max_seq_length,
        "pca_dim": config.embed.pca_dim,
        "pca_whiten": config.embed.pca_whiten,
    }
    digest.update(json.dumps(options, sort_keys=True).encode())
    for item_id, text in zip(item_ids.tolist(), texts, strict=True):
        digest.update(f"{item_id}\x1f{text}\x1e".encode())
    if train_ids is not None:
        digest.update(np.ascontiguousarray(train_ids, dtype=np.int64).tobytes())
    return digest.hexdigest()


def stored_cache_key(path: Path) -> str | None:
    """The cache key in an existing embedding file's metadata, or None."""
    if not path.exists():
        return None
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(METADATA_KEY)
    return json.loads(raw).get("cache_key") if raw else None


def actor_resources(config: JobConfig) -> dict[str, float]:
    """Resources of one embedding actor: `ray.actor_num_cpus` CPUs, one GPU on cuda."""
    gpus = 1 if config.embed.device.startswith("cuda") else 0
    return {"num_cpus": config.ray.actor_num_cpus, "num_gpus": gpus}


class NodeNamingEmbedder(SentenceEmbedder):
    """A SentenceEmbedder whose output batches also hold `node` str [B]: the Ray node of the
    actor that embedded them."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().__call__(batch)
        out["node"] = np.full(len(out["item_id"]), current_node() or "local")
        return out


def embed_with_ray(
    config: JobConfig, items_path: Path, num_items: int
) -> tuple[np.ndarray, dict[str, int]]:
    """float32 [N, D] embeddings in item-id order, computed by Ray Data actors, and the items
    each actor's node embedded (node id -> items)."""
    import ray

    with ray_connection(config.ray):
        ray.data.DataContext.get_current().wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
        dataset = ray.data.read_parquet(str(items_path)).select_columns(["item_id", "text"])
        blocks = max(1, min(num_items // config.embed.batch_size + 1, 4 * config.embed.concurrency))
        embedded = dataset.repartition(blocks).map_batches(
            NodeNamingEmbedder,
            fn_constructor_kwargs={
                "model": config.embed.model,
                "device": config.embed.device,
                "normalize": config.embed.normalize,
                "max_seq_length": config.embed.max_seq_length,
                "num_threads": config.embed.num_threads,
            },
            compute=ray.data.ActorPoolStrategy(size=config.embed.concurrency),
            **actor_resources(config),
            batch_size=config.embed.batch_size,
            batch_format="numpy",
        )
        ids, vectors, nodes = [], [], NodeTally()
        for batch in embedded.iter_batches(batch_format="numpy", batch_size=None):
            ids.append(batch["item_id"])
            vectors.append(np.stack(batch["embedding"]).astype(np.float32))
            nodes.add("embed", batch["node"].tolist())
    item_ids = np.concatenate(ids)
    if not np.array_equal(np.sort(item_ids), np.arange(num_items)):
        raise ArtifactError(f"the embedding job returned {len(item_ids)} rows for {num_items}")
    out = np.empty((num_items, vectors[0].shape[1]), dtype=np.float32)
    out[item_ids] = np.concatenate(vectors)
    return out, nodes.as_dict().get("embed", {})


def write_embeddings(path: Path, embeddings: np.ndarray, metadata: dict[str, Any]) -> None:
    """One Parquet file: item_id int64 (0..N-1), embedding fixed_size_list<float32>[D]."""
    n, d = embeddings.shape
    flat = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1))
    table = pa.table(
        {
            "item_id": pa.array(np.arange(n, dtype=np.int64)),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, d),
        }
    ).replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def read_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Item ids int64 [N] and float32 [N, D] embeddings from `item_embeddings.parquet`."""
    table = read_artifact_table(path, ("item_id", "embedding"), producer="embed")
    column = table["embedding"].combine_chunks()
    if not pa.types.is_fixed_size_list(column.type):
        raise DataError(path, f"embedding must be fixed_size_list<float32>, got {column.type}")
    vectors = column.values.to_numpy().reshape(len(table), column.type.list_size)
    return table["item_id"].to_numpy().astype(np.int64), vectors.astype(np.float32)


def run_embed(config: JobConfig) -> dict[str, Any]:
    """Embed every item of `prepare/items.parquet`; skipped when the cached file matches."""
    paths = RunPaths.of(config.run_dir)
    item_ids, texts = read_items(paths.items)
    train_ids = training_item_ids(paths.train_split) if config.embed.pca_dim else None
    key = cache_key(config, item_ids, texts, train_ids)
    summary: dict[str, Any] = {"num_items": len(item_ids), "model": config.embed.model}
    if stored_cache_key(paths.item_embeddings) == key:
        log.info("embed: %s holds these items and model, reused", paths.item_embeddings)
        _, vectors = read_embeddings(paths.item_embeddings)
        return {**summary, "cached": True, "dim": int(vectors.shape[1])}

    started = time.perf_counter()
    vectors, actor_nodes = embed_with_ray(config, paths.items, len(item_ids))
    embed_seconds = time.perf_counter() - started
    raw_dim = int(vectors.shape[1])
    if train_ids is not None:
        train_ids = train_ids[(train_ids >= 0) & (train_ids < len(item_ids))]
        # centred data of n items has rank n - 1 at most
        dim = max(1, min(config.embed.pca_dim, len(train_ids) - 1, raw_dim))
        if dim < config.embed.pca_dim:
            log.warning(
                "embed.pca_dim=%d exceeds min(#training items=%d - 1, dim=%d): using %d",
                config.embed.pca_dim,
                len(train_ids),
                raw_dim,
                dim,
            )
        pca = fit_pca(vectors[train_ids], dim, config.embed.pca_whiten)
        vectors = apply_pca(vectors, pca)
    metadata = {"cache_key": key, "model": config.embed.model, "raw_dim": raw_dim}
    write_embeddings(paths.item_embeddings, vectors, metadata)
    log.info("embed: %d items in %.1f s", len(item_ids), embed_seconds)
    return {
        **summary,
        "cached": False,
        "dim": int(vectors.shape[1]),
        "raw_dim": raw_dim,
        "embed_seconds": embed_seconds,
        "items_per_second": len(item_ids) / max(embed_seconds, 1e-9),
        "actor_nodes": actor_nodes,
    }
