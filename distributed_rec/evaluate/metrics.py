"""Ranking metrics over a users x K hit matrix, and the most-popular baseline (SPEC §8).

Every user has exactly one target (leave-one-out). A ranked list holds item ids, best first;
-1 marks an empty slot (fewer than K real items) and never hits.

Legend: U users, K list length, N items.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

RECALL_KS = (1, 5, 10)
NDCG_KS = (5, 10)
METRIC_KEYS = tuple(f"recall@{k}" for k in RECALL_KS) + tuple(f"ndcg@{k}" for k in NDCG_KS)


def hit_matrix(ranked_UK: np.ndarray, targets_U: np.ndarray) -> np.ndarray:
    """bool [U, K]: hits[u, r] is True when the item at rank r+1 of user u is its target."""
    ranked_UK = np.asarray(ranked_UK, dtype=np.int64)
    targets_U = np.asarray(targets_U, dtype=np.int64)
    if ranked_UK.ndim != 2 or targets_U.shape != (ranked_UK.shape[0],):
        raise ValueError(
            f"ranked lists must be [U, K] and targets [U]; got {ranked_UK.shape}, {targets_U.shape}"
        )
    return (ranked_UK == targets_U[:, None]) & (ranked_UK >= 0)


def recall_at_k(hits_UK: np.ndarray, k: int) -> float:
    """Recall@k = mean over users of |top-k ∩ {target}| / |{target}|, i.e. the hit rate@k."""
    if hits_UK.shape[0] == 0:
        return 0.0
    return float(hits_UK[:, :k].any(axis=1).mean())


def ndcg_at_k(hits_UK: np.ndarray, k: int) -> float:
    """NDCG@k = mean over users of DCG@k / IDCG@k with binary relevance.

    DCG@k = sum_{r=1..k} hit_r / log2(r + 1); with one target IDCG@k = 1, so a user whose target
    is at rank r <= k scores 1 / log2(r + 1) and 0 otherwise.
    """
    if hits_UK.shape[0] == 0:
        return 0.0
    top = hits_UK[:, :k].astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2, dtype=np.float64))
    return float((top @ discounts).mean())


def ranking_metrics(
    ranked_UK: np.ndarray,
    targets_U: np.ndarray,
    ks: Sequence[int] = RECALL_KS,
    ndcg_ks: Sequence[int] = NDCG_KS,
) -> dict[str, float]:
    """{"recall@k" for k in ks, "ndcg@k" for k in ndcg_ks} averaged over the U users.

    A list shorter than k counts as missing the remaining ranks (no renormalisation).
    """
    hits = hit_matrix(ranked_UK, targets_U)
    metrics = {f"recall@{k}": recall_at_k(hits, k) for k in ks}
    metrics.update({f"ndcg@{k}": ndcg_at_k(hits, k) for k in ndcg_ks})
    return metrics


def item_counts(item_sequences: Iterable[Sequence[int]], num_items: int) -> np.ndarray:
    """int64 [N]: how often each item occurs in the given sequences."""
    counts = np.zeros(num_items, dtype=np.int64)
    for sequence in item_sequences:
        np.add.at(counts, np.asarray(sequence, dtype=np.int64), 1)
    return counts


def popularity_ranking(
    counts_N: np.ndarray,
    histories: Sequence[Sequence[int]],
    k: int,
    exclude_history: bool = True,
) -> np.ndarray:
    """int64 [U, k]: the k most frequent training items per user (ties: smaller item id first).

    With `exclude_history`, items already in the user's history are skipped. Prepare drops repeated
    (user, item) events, so a target is never in its own history and skipping them only makes the
    floor stronger (a stricter baseline for the model). Slots beyond N items are -1.
    """
    order = np.lexsort((np.arange(len(counts_N)), -np.asarray(counts_N)))
    ranked = np.full((len(histories), k), -1, dtype=np.int64)
    if not exclude_history:
        top = order[:k]
        ranked[:, : len(top)] = top
        return ranked
    longest = max((len(h) for h in histories), default=0)
    head = order[: k + longest]  # enough candidates even if the whole history is among them
    for row, history in enumerate(histories):
        keep = head[~np.isin(head, np.asarray(history, dtype=np.int64))][:k]
        ranked[row, : len(keep)] = keep
    return ranked
