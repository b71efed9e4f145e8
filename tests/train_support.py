"""Tiny prepared run directories for the training tests: splits, training windows and semantic
IDs in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import JobConfig, load_config
from distributed_rec.data.split import windows_table
from distributed_rec.semantic_ids.id_table import SemanticIdTable

NUM_ITEMS, NUM_HEADS, CODEBOOK = 40, 4, 8


def make_tiny_run(
    root: Path, num_users: int = 24, seed: int = 0, max_length: int = 9, max_history: int = 6
) -> RunPaths:
    """Users with 5..max_length items each; train = every prefix (and its windows of up to
    max_history + 1 items), valid/test = leave-one-out."""
    rng = np.random.default_rng(seed)
    paths = RunPaths(root)
    train_rows: list[tuple[int, list[int], int]] = []
    valid_rows, test_rows = [], []
    sequences = []
    for user in range(num_users):
        length = int(rng.integers(5, max_length + 1))
        sequence = rng.choice(NUM_ITEMS, size=length, replace=False).tolist()
        sequences.append(sequence)
        for end in range(1, len(sequence) - 2):
            train_rows.append((user, sequence[:end], sequence[end]))
        valid_rows.append((user, sequence[:-2], sequence[-2]))
        test_rows.append((user, sequence[:-1], sequence[-1]))

    def table(rows: list[tuple[int, list[int], int]]) -> pa.Table:
        return pa.table(
            {
                "user_id": pa.array([r[0] for r in rows], pa.int64()),
                "history": pa.array([r[1] for r in rows], pa.list_(pa.int64())),
                "target": pa.array([r[2] for r in rows], pa.int64()),
            }
        )

    paths.train_split.mkdir(parents=True, exist_ok=True)
    half = len(train_rows) // 2
    pq.write_table(table(train_rows[:half]), paths.train_split / "part-00000.parquet")
    pq.write_table(table(train_rows[half:]), paths.train_split / "part-00001.parquet")
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    windows = windows_table(
        np.concatenate(sequences).astype(np.int64),
        np.cumsum(lengths) - lengths,
        lengths,
        max_history + 1,
        np.arange(num_users, dtype=np.int64),
    )
    paths.train_windows.mkdir(parents=True, exist_ok=True)
    half = windows.num_rows // 2
    pq.write_table(windows.slice(0, half), paths.train_windows / "part-00000.parquet")
    pq.write_table(windows.slice(half), paths.train_windows / "part-00001.parquet")
    pq.write_table(table(valid_rows), paths.eval_split("valid"))
    pq.write_table(table(test_rows), paths.eval_split("test"))
    codes = np.stack(
        np.unravel_index(
            rng.choice(CODEBOOK**NUM_HEADS, NUM_ITEMS, replace=False), (CODEBOOK,) * 4
        ),
        axis=1,
    ).astype(np.int64)
    SemanticIdTable(np.arange(NUM_ITEMS, dtype=np.int64), codes, CODEBOOK).write(paths.semantic_ids)
    return paths


def tiny_config(run_dir: Path, *overrides: str) -> JobConfig:
    """A 1-layer d_model-32 model, global batch 16 (micro 4), no dropout, no validation."""
    return load_config(None, tiny_overrides(run_dir, *overrides))


def tiny_overrides(run_dir: Path, *overrides: str) -> list[str]:
    """The command-line overrides of :func:`tiny_config` (for `python -m distributed_rec`)."""
    base = [
        f"--run_dir={run_dir}",
        "--device=cpu",
        f"--tokenize.num_heads={NUM_HEADS}",
        f"--tokenize.codebook_size={CODEBOOK}",
        "--data.max_history=6",
        "--model.d_model=32",
        "--model.num_layers=1",
        "--model.num_attention_heads=2",
        "--model.ffn_dim=64",
        "--model.dropout=0",
        "--train.global_batch_size=16",
        "--train.micro_batch_size=4",
        "--train.lr=1e-2",
        "--train.eval_every_epochs=1000",
        "--train.log_every_steps=1",
        "--decode.beam_size=4",
    ]
    return base + list(overrides)
