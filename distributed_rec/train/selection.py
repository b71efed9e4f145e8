"""Does validation predict test? The rank correlation of two metric series over epochs.

Legend: E epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_ranks(values_E: Sequence[float]) -> np.ndarray:
    """float64 [E]: 1-based ranks, tied values sharing the mean of their ranks."""
    values = np.asarray(values_E, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x_E: Sequence[float], y_E: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's of the average ranks); None for fewer than 3
    points or a constant series."""
    if len(x_E) != len(y_E):
        raise ValueError(f"series of {len(x_E)} and {len(y_E)} points")
    if len(x_E) < 3:
        return None
    rx, ry = average_ranks(x_E), average_ranks(y_E)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return None if denominator == 0 else float((rx * ry).sum() / denominator)
