"""Ranking metrics and the popularity baseline on tiny hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distributed_rec.evaluate.metrics import (
    METRIC_KEYS,
    hit_matrix,
    item_counts,
    ndcg_at_k,
    popularity_ranking,
    ranking_metrics,
    recall_at_k,
)


def test_hand_computed_metrics() -> None:
    # user 0: target 7 at rank 1; user 1: target 3 at rank 3; user 2: target 9 at rank 7;
    # user 3: target 5 missing (list padded with -1).
    ranked = np.array(
        [
            [7, 1, 2, 3, 4, 5, 6, 8, 9, 10],
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            [1, 2, 3, 4, 5, 6, 9, 8, 7, 10],
            [1, 2, -1, -1, -1, -1, -1, -1, -1, -1],
        ]
    )
    targets = np.array([7, 3, 9, 5])
    metrics = ranking_metrics(ranked, targets)
    assert tuple(metrics) == METRIC_KEYS
    assert metrics["recall@1"] == 0.25
    assert metrics["recall@5"] == 0.5
    assert metrics["recall@10"] == 0.75
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4, abs=1e-15)
    assert metrics["ndcg@10"] == pytest.approx(
        (1 + 1 / math.log2(4) + 1 / math.log2(8)) / 4, abs=1e-15
    )


def test_padding_never_hits_and_shapes_are_checked() -> None:
    ranked = np.array([[-1, -1], [-1, 4]])
    assert hit_matrix(ranked, np.array([-1, 4])).tolist() == [[False, False], [False, True]]
    hits = hit_matrix(ranked, np.array([-1, 4]))
    assert recall_at_k(hits, 1) == 0.0
    assert ndcg_at_k(hits, 2) == pytest.approx(0.5 / math.log2(3))
    with pytest.raises(ValueError, match="ranked lists must be"):
        hit_matrix(np.array([1, 2]), np.array([1, 2]))


def test_short_lists_and_no_users() -> None:
    # k beyond the list length: missing ranks count as misses
    assert ranking_metrics(np.array([[3]]), np.array([3]))["recall@10"] == 1.0
    empty = ranking_metrics(np.zeros((0, 10), dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert set(empty.values()) == {0.0}


def test_item_counts() -> None:
    assert item_counts([[0, 2], [2], [3, 2]], 5).tolist() == [1, 0, 3, 1, 0]


def test_popularity_ranking_excludes_history_and_breaks_ties_by_id() -> None:
    counts = np.array([5, 9, 9, 1, 0])
    # order: 1, 2 (tie, smaller id first), 0, 3, 4
    ranked = popularity_ranking(counts, [[1], [], [0, 1, 2, 3]], k=3)
    assert ranked.tolist() == [[2, 0, 3], [1, 2, 0], [4, -1, -1]]
    same = popularity_ranking(counts, [[1], []], k=3, exclude_history=False)
    assert same.tolist() == [[1, 2, 0], [1, 2, 0]]
    assert popularity_ranking(counts, [[]], k=7).tolist() == [[1, 2, 0, 3, 4, -1, -1]]
