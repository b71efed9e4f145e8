"""A tiny run directory ready for the evaluate stage: splits, semantic IDs and a real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import JobConfig, load_config
from distributed_rec.embed.stage import write_embeddings
from distributed_rec.model import build_mask_predictor
from distributed_rec.model.weights import dense_items_for, save_best_model
from distributed_rec.semantic_ids.id_table import SemanticIdTable

NUM_ITEMS, NUM_USERS, M, K = 30, 40, 4, 8


def eval_overrides(run_dir: Path | str) -> list[str]:
    """CLI overrides of the tiny evaluation setting (also passed to `ray job submit`)."""
    return [
        f"--run_dir={run_dir}",
        "--device=cpu",
        f"--tokenize.num_heads={M}",
        f"--tokenize.codebook_size={K}",
        "--model.d_model=16",
        "--model.num_layers=1",
        "--model.num_attention_heads=2",
        "--model.ffn_dim=32",
        "--model.dropout=0",
        "--data.max_history=5",
        "--decode.beam_size=5",
        "--decode.steps=2",
        "--evaluate.batch_size=8",
        "--evaluate.num_shards=3",
        "--ray.num_cpus=2",
    ]


def eval_config(run_dir: Path, *overrides: str) -> JobConfig:
    return load_config(None, [*eval_overrides(run_dir), *overrides])


def _write_split(path: Path, users: np.ndarray, histories: list, targets: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "history": pa.array(histories, pa.list_(pa.int64())),
            "target": pa.array(targets, pa.int64()),
        }
    )
    pq.write_table(table, path)


def build_run_dir(config: JobConfig, seed: int = 0) -> None:
    """Random users (6-9 items each, no repeats), unique semantic IDs, a random-weight model."""
    rng = np.random.default_rng(seed)
    paths = RunPaths(Path(config.run_dir))
    sequences = [
        rng.choice(NUM_ITEMS, size=rng.integers(6, 10), replace=False).tolist()
        for _ in range(NUM_USERS)
    ]
    users = np.arange(100, 100 + NUM_USERS)  # user ids need not start at 0
    train_rows = [
        (u, seq[max(0, i - 5) : i], seq[i])
        for u, seq in zip(users, sequences, strict=True)
        for i in range(1, len(seq) - 2)
    ]
    _write_split(
        paths.train_split / "part-00000.parquet", *map(list, zip(*train_rows, strict=True))
    )
    _write_split(
        paths.eval_split("valid"),
        users,
        [s[:-2][-5:] for s in sequences],
        [s[-2] for s in sequences],
    )
    _write_split(
        paths.eval_split("test"),
        users,
        [s[:-1][-5:] for s in sequences],
        [s[-1] for s in sequences],
    )
    tuples = rng.choice(K**M, size=NUM_ITEMS, replace=False)
    codes = np.stack([(tuples // K**m) % K for m in range(M)], axis=1)
    table = SemanticIdTable(np.arange(NUM_ITEMS), codes.astype(np.int64), K)
    table.write(paths.semantic_ids)
    if config.model.dense_loss_weight > 0:
        vectors = rng.normal(size=(NUM_ITEMS, 12)).astype(np.float32)
        write_embeddings(paths.item_embeddings, vectors, {"model": "random"})
    torch.manual_seed(seed)
    model = build_mask_predictor(
        config.model, M, K, config.data.max_history + 1, dense_items_for(config, table), codes
    )
    save_best_model(model, paths.best_model)
