"""Collision handling: Sinkhorn re-balancing of colliding items, then guaranteed uniqueness.

Legend: N items, M heads, K codes per head; `dists` float [N, M, K] is the squared distance of
each item's head-m input to every code of head m (Tokenizer.code_distances).

1. `rebalance_last_head`: as the reference does, the items that share their tuple with another
   item get their last head re-assigned by a Sinkhorn-balanced assignment over their distances,
   which spreads them over the K codes; items without a collision keep their tuple (codes that
   would land on one are blocked); repeated while that lowers the number of colliding items.
2. `make_unique`: every item that still shares its tuple, except the lowest item id of its
   group, moves (in item-id order) to the free tuple of least total distance sum_m dists[m, c_m]
   -- usually its tuple with one head changed to its next-nearest code. M stays fixed, and the
   result is deterministic.
"""

from __future__ import annotations

import heapq

import numpy as np
import torch

SINKHORN_EPSILON = 0.003
"""Entropic regularisation of the Sinkhorn assignment on distances scaled to [-1, 1] (reference)."""


def colliding_mask(codes: np.ndarray) -> np.ndarray:
    """bool [N]: True where the item's M-tuple is shared with another item."""
    if len(codes) == 0:
        return np.zeros(0, dtype=bool)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)] > 1


def sinkhorn_assign(
    dists: np.ndarray,
    iters: int,
    epsilon: float = SINKHORN_EPSILON,
    blocked: np.ndarray | None = None,
) -> np.ndarray:
    """int64 [n] codes from a balanced (Sinkhorn-Knopp) transport of n items onto K codes.

    Distances [n, K] are centred and scaled to [-1, 1] as in the reference; the plan has rows
    summing to 1/n and columns to 1/K (computed in the log domain); each item takes its argmax.
    `blocked` (bool [n, K]) excludes codes an item must not take (rows fully blocked are not).
    """
    d = torch.from_numpy(np.asarray(dists, dtype=np.float64))
    middle = (d.max() + d.min()) / 2
    amplitude = d.max() - middle + 1e-5
    log_q = -((d - middle) / amplitude) / epsilon
    if blocked is not None:
        mask = torch.from_numpy(blocked & ~blocked.all(axis=1, keepdims=True))
        log_q = log_q.masked_fill(mask, -torch.inf)
    n, k = log_q.shape
    for _ in range(iters):
        column = torch.logsumexp(log_q, dim=0, keepdim=True)
        log_q = log_q - torch.where(torch.isfinite(column), column, 0.0) - np.log(k)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - np.log(n)
    return log_q.argmax(dim=1).numpy().astype(np.int64)


def rebalance_last_head(
    codes: np.ndarray, dists: np.ndarray, iters: int, max_rounds: int = 30
) -> np.ndarray:
    """Codes [N, M] with the last head of colliding items re-assigned by Sinkhorn.

    Items that did not collide are never touched: the last-head codes that would give a
    colliding item the tuple of a settled (unique) item are blocked in the transport. Rounds
    repeat while the number of colliding items falls.
    """
    best = codes.copy()
    best_count = int(colliding_mask(best).sum())
    for _ in range(max_rounds):
        mask = colliding_mask(best)
        if not mask.any():
            break
        settled = {tuple(row) for row in best[~mask].tolist()}
        rows = np.flatnonzero(mask)
        k = dists.shape[2]
        blocked = np.array(
            [[(*best[row, :-1].tolist(), c) in settled for c in range(k)] for row in rows]
        )
        current = best.copy()
        current[rows, -1] = sinkhorn_assign(dists[rows, -1], iters, blocked=blocked)
        count = int(colliding_mask(current).sum())
        if count >= best_count:
            break
        best, best_count = current, count
    return best


def _nearest_free_tuple(dists_MK: np.ndarray, occupied: set[tuple[int, ...]]) -> tuple:
    """Best-first search over tuples in order of total distance; the first free one."""
    order = np.argsort(dists_MK, axis=1, kind="stable")  # [M, K] codes by distance
    sorted_d = np.take_along_axis(dists_MK, order, axis=1)
    num_heads, k = order.shape
    start = (0,) * num_heads
    heap = [(float(sorted_d[:, 0].sum()), start)]
    seen = {start}
    while heap:
        cost, ranks = heapq.heappop(heap)
        candidate = tuple(int(order[m, r]) for m, r in enumerate(ranks))
        if candidate not in occupied:
            return candidate
        for m in range(num_heads):
            if ranks[m] + 1 < k:
                nxt = ranks[:m] + (ranks[m] + 1,) + ranks[m + 1 :]
                if nxt not in seen:
                    seen.add(nxt)
                    step = float(sorted_d[m, ranks[m] + 1] - sorted_d[m, ranks[m]])
                    heapq.heappush(heap, (cost + step, nxt))
    raise ValueError("no free semantic ID left: K**M is smaller than the number of items")


def make_unique(codes: np.ndarray, dists: np.ndarray) -> np.ndarray:
    """Codes [N, M] where every row is distinct; rows are processed in item (row) order."""
    n, num_heads = codes.shape
    k = dists.shape[2]
    if n > k**num_heads:
        raise ValueError(f"{n} items cannot have distinct IDs with K={k}, M={num_heads}")
    out = codes.copy()
    occupied: set[tuple[int, ...]] = set()
    twins: list[int] = []
    for row in range(n):
        key = tuple(int(c) for c in out[row])
        if key in occupied:
            twins.append(row)
        else:
            occupied.add(key)
    for row in twins:
        new = _nearest_free_tuple(dists[row], occupied)
        out[row] = new
        occupied.add(new)
    return out
