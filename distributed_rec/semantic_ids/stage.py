"""The tokenize stage: item embeddings -> unique semantic IDs, checkpoint and metrics (SPEC §4).

Legend: N items, D embedding dimension, M heads, K codes per head.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from distributed_rec.artifacts import RunPaths, write_json_atomic
from distributed_rec.config import TokenizerConfig
from distributed_rec.embed.stage import read_embeddings
from distributed_rec.errors import ArtifactError, DistributedRecError
from distributed_rec.semantic_ids.base import Tokenizer, code_statistics, collision_rate
from distributed_rec.semantic_ids.collaborative import (
    Sequences,
    collaborative_vectors,
    fuse_features,
)
from distributed_rec.semantic_ids.collisions import make_unique, rebalance_last_head
from distributed_rec.semantic_ids.faiss_tokenizers import OPQTokenizer, ResidualKMeansTokenizer
from distributed_rec.semantic_ids.id_table import SemanticIdTable
from distributed_rec.semantic_ids.vq_tokenizer import VQTokenizer

log = logging.getLogger(__name__)


class TokenizerError(DistributedRecError):
    """The tokenizer cannot be trained with this configuration on these items."""


def build_tokenizer(config: TokenizerConfig, writer: Any = None) -> Tokenizer:
    """The tokenizer named by `config.method` (mhvq, rqvae, rqkmeans, opq)."""
    if config.method == "mhvq":
        return VQTokenizer(config, multi_head=True, writer=writer)
    if config.method == "rqvae":
        return VQTokenizer(config, multi_head=False, writer=writer)
    if config.method == "rqkmeans":
        return ResidualKMeansTokenizer(config)
    if config.method == "opq":
        return OPQTokenizer(config)
    raise TokenizerError(f"tokenize.method={config.method!r} is unknown")


@contextlib.contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Use `num_threads` torch CPU threads inside the block (0: leave as is)."""
    previous = torch.get_num_threads()
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def tokenize(
    embeddings: np.ndarray, config: TokenizerConfig, writer: Any = None
) -> tuple[Tokenizer, np.ndarray, dict[str, Any]]:
    """Fit a tokenizer on `embeddings` [N, D]; return it, unique codes [N, M] and metrics."""
    with torch_threads(config.num_threads):
        return _tokenize(embeddings, config, writer)


def _tokenize(
    embeddings: np.ndarray, config: TokenizerConfig, writer: Any
) -> tuple[Tokenizer, np.ndarray, dict[str, Any]]:
    n = len(embeddings)
    if n < config.codebook_size:
        raise TokenizerError(
            f"tokenize.codebook_size={config.codebook_size} exceeds the number of items ({n}); "
            "lower it"
        )
    started = time.perf_counter()
    try:
        tokenizer = build_tokenizer(config, writer).fit(embeddings)
    except ValueError as err:
        raise TokenizerError(f"tokenize.method={config.method}: {err}") from None
    fit_seconds = time.perf_counter() - started
    raw = tokenizer.encode(embeddings)
    dists = tokenizer.code_distances(embeddings)
    rebalanced = rebalance_last_head(raw, dists, config.sinkhorn_iters)
    codes = make_unique(rebalanced, dists)
    recon = tokenizer.reconstruct(embeddings)
    moved = int((codes != raw).any(axis=1).sum())
    metrics: dict[str, Any] = {
        "method": config.method,
        "num_items": n,
        "num_heads": config.num_heads,
        "codebook_size": config.codebook_size,
        "collision_rate_before": collision_rate(raw),
        "collision_rate_after_rebalance": collision_rate(rebalanced),
        "collision_rate_after": collision_rate(codes),
        "items_moved": moved,
        "recon_mse": float(np.mean((embeddings - recon) ** 2)),
        "relative_recon_mse": float(
            np.mean((embeddings - recon) ** 2) / max(float(embeddings.var(0).mean()), 1e-12)
        ),
        **code_statistics(codes, config.codebook_size),
        "raw_codebook_usage": code_statistics(raw, config.codebook_size)["codebook_usage"],
        "epochs": int(tokenizer.history.get("epochs", 0)),
        "fit_seconds": fit_seconds,
        "seconds": time.perf_counter() - started,
        **{k: v for k, v in tokenizer.history.items() if k not in ("epochs",)},
    }
    return tokenizer, codes, metrics


def training_sequences(paths: RunPaths, item_ids: np.ndarray) -> Sequences:
    """The train windows of prepare (each user's training sequence: never a valid or test
    target) with item ids mapped to rows of the sorted `item_ids`."""
    files = sorted(paths.train_windows.glob("part-*.parquet"))
    if not files:
        raise ArtifactError(f"{paths.train_windows} has no windows: run the prepare stage first")
    column = pq.read_table(files, columns=["items"])["items"].combine_chunks()
    if column.null_count:
        raise ArtifactError(f"{paths.train_windows}: a null window; re-run the prepare stage")
    offsets = column.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    items = pc.cast(column.flatten(), "int64").to_numpy()
    rows = np.searchsorted(item_ids, items)
    known = (rows < len(item_ids)) & (item_ids[rows.clip(max=len(item_ids) - 1)] == items)
    if not known.all():
        missing = int(items[~known][0])
        raise ArtifactError(
            f"{paths.train_windows}: item {missing} has no embedding in {paths.item_embeddings}; "
            "re-run the embed stage"
        )
    return Sequences(offsets=offsets, items=rows)


def item_features(
    config: TokenizerConfig, paths: RunPaths, item_ids: np.ndarray, text_ND: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """The vectors the tokenizer quantises, float32 [N, F], by `tokenize.features`, and what
    describes them (dimensions, items without a training occurrence)."""
    if config.features == "text":
        return text_ND, {"features": "text", "feature_dim": int(text_ND.shape[1])}
    sequences = training_sequences(paths, item_ids)
    collaborative, seen = collaborative_vectors(
        sequences,
        len(item_ids),
        config.collaborative_dim,
        config.collaborative_window,
        config.seed,
    )
    text = text_ND if config.features == "text+collaborative" else None
    fused = fuse_features(text, collaborative, config.collaborative_share)
    unseen = int((~seen).sum())
    if unseen:
        log.warning(
            "tokenize: %d of %d items never occur in the training split; their collaborative "
            "vector is 0 (%s)",
            unseen,
            len(item_ids),
            "their text places them" if text is not None else "only collisions separate them",
        )
    info = {
        "features": config.features,
        "feature_dim": int(fused.shape[1]),
        "collaborative_dim": config.collaborative_dim,
        "items_without_training_occurrence": unseen,
    }
    return fused, info


def run_tokenize(config: Any) -> dict[str, Any]:
    """Train the configured tokenizer on every item's features and write the ID table."""
    from torch.utils.tensorboard import SummaryWriter

    paths = RunPaths.of(config.run_dir)
    item_ids, embeddings = read_embeddings(paths.item_embeddings)
    order = np.argsort(item_ids, kind="stable")
    item_ids, embeddings = item_ids[order], embeddings[order]
    embeddings, feature_info = item_features(config.tokenize, paths, item_ids, embeddings)
    writer = SummaryWriter(str(paths.tensorboard("tokenize")))
    try:
        tokenizer, codes, metrics = tokenize(embeddings, config.tokenize, writer)
        metrics.update(feature_info)
        for key in ("collision_rate_before", "collision_rate_after", "recon_mse"):
            writer.add_scalar(f"tokenize/final_{key}", metrics[key], 0)
    finally:
        writer.close()
    table = SemanticIdTable(
        item_ids=item_ids, codes=codes, codebook_size=config.tokenize.codebook_size
    )
    table.write(paths.semantic_ids)
    checkpoint = {
        **tokenizer.state_dict(),
        "config": {k: v for k, v in vars(config.tokenize).items()},
        "input_dim": int(embeddings.shape[1]),
        "item_ids": torch.from_numpy(item_ids),
        "codes": torch.from_numpy(codes),
    }
    paths.tokenizer_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.tokenizer_checkpoint.with_name(".tokenizer.pt.tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(paths.tokenizer_checkpoint)
    write_json_atomic(paths.tokenizer_metrics, metrics)
    log.info(
        "tokenize[%s]: %d items, collisions %.4f -> %.4f, min usage %.3f",
        metrics["method"],
        metrics["num_items"],
        metrics["collision_rate_before"],
        metrics["collision_rate_after"],
        min(metrics["codebook_usage"]),
    )
    keys = ("method", "num_items", "collision_rate_before", "collision_rate_after", "recon_mse")
    return {k: metrics[k] for k in keys} | {"epochs": metrics["epochs"]}
