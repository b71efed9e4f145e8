"""The most-popular baseline: the floor every model must beat (SPEC §8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from distributed_rec.errors import ArtifactError
from distributed_rec.evaluate.metrics import popularity_ranking, ranking_metrics
from distributed_rec.evaluate.shards import EvalUsers


def training_item_counts(train_split: Path, num_items: int) -> np.ndarray:
    """int64 [N]: occurrences of each item in the users' training sequences.

    The train split holds every prefix (history -> target) of each training sequence, so the
    targets are every item but each user's first, which is the history of its length-1 prefix.
    """
    files = sorted(train_split.glob("part-*.parquet"))
    if not files:
        raise ArtifactError(f"{train_split} has no part-*.parquet files: run the prepare stage")
    counts = np.zeros(num_items, dtype=np.int64)
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(1 << 16, columns=["history", "target"]):
            np.add.at(counts, batch.column("target").to_numpy().astype(np.int64), 1)
            history = batch.column("history")
            offsets = history.offsets.to_numpy()
            firsts = offsets[:-1][np.diff(offsets) == 1]
            np.add.at(counts, history.values.to_numpy()[firsts].astype(np.int64), 1)
    return counts


def popularity_metrics(counts_N: np.ndarray, users: EvalUsers, top_k: int) -> dict[str, float]:
    """Metrics of the top-k most popular training items not already in each user's history."""
    ranked = popularity_ranking(counts_N, users.histories, top_k, exclude_history=True)
    return ranking_metrics(ranked, users.targets)
