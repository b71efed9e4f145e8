"""Metrics of the three ranking modes from one decode (generative, dense, hybrid), and the hybrid
weight chosen on the validation split.

The shards of a model with the dense head write the generative list, the dense list and the
hybrid candidates with both scores (`evaluate/shards.py`); the weight w of
(1 - w) * generative + w * dense is `decode.hybrid_weight`, or, when that is negative, the w of
0, 1/n, ..., 1 (n = `decode.hybrid_grid`) with the best validation NDCG@10 (the smallest such w
on ties), then applied unchanged to every split.

Legend: U users, C candidates per user, K list length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distributed_rec.config import DecodeConfig
from distributed_rec.decode.hybrid import hybrid_rank
from distributed_rec.evaluate.metrics import ranking_metrics
from distributed_rec.evaluate.shards import read_prediction_columns

DENSE_COLUMNS = ("dense", "candidates", "generative_scores", "dense_scores")
SELECTION_METRIC = "ndcg@10"


def hybrid_lists(columns: dict[str, np.ndarray], weight: float, top_k: int) -> np.ndarray:
    """int64 [U, top_k] hybrid lists of the merged prediction columns at `weight`."""
    return hybrid_rank(
        columns["candidates"],
        columns["generative_scores"],
        columns["dense_scores"],
        weight,
        top_k,
    )


def choose_weight(
    columns: dict[str, np.ndarray], targets_U: np.ndarray, grid: int, top_k: int
) -> tuple[float, dict[str, float]]:
    """(best w, {w: validation NDCG@10}) over w = 0, 1/grid, ..., 1."""
    by_weight: dict[str, float] = {}
    best_w, best = 0.0, -1.0
    for step in range(grid + 1):
        weight = step / grid
        value = ranking_metrics(hybrid_lists(columns, weight, top_k), targets_U)[SELECTION_METRIC]
        by_weight[f"{weight:.4g}"] = value
        if value > best:
            best_w, best = weight, value
    return best_w, by_weight


def mode_metrics(
    files: dict[str, list[Path]],
    targets: dict[str, np.ndarray],
    generative: dict[str, dict[str, float]],
    decode: DecodeConfig,
) -> dict[str, Any]:
    """{"modes": {mode: {split: metrics}}, "hybrid_weight", "hybrid_weight_from",
    "valid_by_weight"} for the splits of `files` (the shard files of each split)."""
    columns = {split: read_prediction_columns(f, DENSE_COLUMNS) for split, f in files.items()}
    top_k = decode.top_k
    report: dict[str, Any] = {"hybrid_weight_from": "decode.hybrid_weight"}
    weight = decode.hybrid_weight
    if weight < 0:
        if "valid" not in columns:
            raise ValueError(
                "decode.hybrid_weight < 0 chooses the weight on the valid split: "
                "add valid to evaluate.splits or set decode.hybrid_weight in [0, 1]"
            )
        weight, by_weight = choose_weight(
            columns["valid"], targets["valid"], decode.hybrid_grid, top_k
        )
        report.update(hybrid_weight_from="valid", valid_by_weight=by_weight)
    report["hybrid_weight"] = weight
    report["modes"] = {
        "generative": generative,
        "dense": {s: ranking_metrics(c["dense"], targets[s]) for s, c in columns.items()},
        "hybrid": {
            s: ranking_metrics(hybrid_lists(c, weight, top_k), targets[s])
            for s, c in columns.items()
        },
    }
    return report
