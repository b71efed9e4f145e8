"""Adaptive-order beam search over the target item's M positions, constrained to real items (§7).

Each of the T steps scores every beam of every user of the batch at once (one `TargetScorer`
call: a full forward pass per beam, or only the target tokens against a cached history), chooses
M/T masked positions per beam, and expands them jointly: the candidates of a beam are the
distinct code tuples at its chosen positions among the items consistent with what the beam has
filled, so every partial ID agrees with some real item and a complete one is an item.
Scores are sums of fp32 log-probabilities; log-probs are log_softmax over all K codes of a
position (the model's distribution), restricted to the valid codes without renormalising.
The best `beam_size` candidates per user, over all of its beams, survive each step (the last step
keeps max(beam_size, top_k) so that greedy search still returns a top-K list). Items a user must
not be recommended (e.g. its history) are dropped at the last step, before that selection, so
they never take a place in the list.

Legend: U users, R beams (all users, flat), L tokens, M positions, K codes, P or C candidates
(beam, representative item) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distributed_rec.decode.constraint import UNFILLED, ValidIdIndex
from distributed_rec.decode.orders import choose_positions
from distributed_rec.decode.scoring import TargetScorer
from distributed_rec.model.vocab import mask_token


@dataclass
class Beams:
    """Flat beams of all users: user_R int64, filled_RM int64 (UNFILLED = -1), score_R fp32."""

    user_R: torch.Tensor
    filled_RM: torch.Tensor
    score_R: torch.Tensor


def _target_log_probs(scorer: TargetScorer, beams: Beams, K: int) -> torch.Tensor:
    """fp32 [R, M, K] log-probabilities of the target positions given each beam's filled codes."""
    R, M = beams.filled_RM.shape
    offsets_M = torch.arange(M, device=beams.filled_RM.device) * K
    filled = beams.filled_RM != UNFILLED
    target_RM = torch.where(
        filled, beams.filled_RM + offsets_M, mask_token(M, K)
    )  # everything not yet chosen is (re-)masked
    logits_RMK = scorer(beams.user_R, target_RM)
    if logits_RMK.shape != (R, M, K):
        raise ValueError(f"the scorer returned {tuple(logits_RMK.shape)}, expected [R, {M}, {K}]")
    return torch.log_softmax(logits_RMK.float(), dim=-1)


def _chosen_positions(
    beams: Beams, log_probs_RMK: torch.Tensor, index: ValidIdIndex, order: str, count: int
) -> torch.Tensor:
    """bool [R, M]: the `count` positions each beam fills next under `order`."""
    filled_RM = beams.filled_RM != UNFILLED
    if bool(((~filled_RM).sum(1) == count).all()):  # every open position: no order to choose
        return ~filled_RM
    if order == "adaptive":  # confidence = max probability over the valid codes only
        valid_RMK = index.valid_codes(beams.filled_RM)
        priority_RMK = log_probs_RMK.masked_fill(~valid_RMK, -torch.inf)
    else:
        priority_RMK = log_probs_RMK
    return choose_positions(order, priority_RMK, filled_RM, count)


def _grouped_top(user_C: torch.Tensor, score_C: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the best `keep` candidates of each user, grouped by user, best first.

    Ties keep candidate order (stable sorts), so the search is deterministic.
    """
    by_score = torch.sort(score_C, descending=True, stable=True).indices
    order = by_score[torch.sort(user_C[by_score], stable=True).indices]
    user_sorted = user_C[order]
    counts = torch.bincount(user_sorted)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=order.device) - starts[user_sorted]
    return order[rank < keep]


def _expand(
    beams: Beams,
    log_probs_RMK: torch.Tensor,
    chosen_RM: torch.Tensor,
    index: ValidIdIndex,
    keep: int,
    excluded_UH: torch.Tensor | None = None,
    guide: tuple[torch.Tensor, float] | None = None,
) -> Beams:
    """Fill the chosen positions jointly with every distinct valid tuple; keep the best per user.

    `excluded_UH` (item ids, -1 padding) drops complete candidates that are one of their user's
    excluded items; pass it only at the last step, where every candidate is a whole item.
    `guide` = (prior_UN, weight): candidates are kept by score + weight * the best prior of an
    item they can still become (their scores stay generative).
    """
    M = chosen_RM.shape[1]
    filled_RM = beams.filled_RM != UNFILLED
    beam_P, row_P = index.completions(beams.filled_RM, filled_RM | chosen_RM)
    codes_PM = index.codes_NM[row_P]
    chosen_PM = chosen_RM[beam_P]
    positions_M = torch.arange(M, device=codes_PM.device)
    gathered_PM = log_probs_RMK[beam_P[:, None], positions_M, codes_PM]
    score_P = beams.score_R[beam_P] + torch.where(chosen_PM, gathered_PM, 0.0).sum(-1)
    new_filled_PM = torch.where(chosen_PM | filled_RM[beam_P], codes_PM, UNFILLED)
    user_P = beams.user_R[beam_P]
    if excluded_UH is not None and excluded_UH.shape[1]:
        item_P = index.items_of(new_filled_PM)
        allowed = ~(excluded_UH[user_P] == item_P[:, None]).any(1)
        user_P, new_filled_PM, score_P = user_P[allowed], new_filled_PM[allowed], score_P[allowed]
    priority_P = score_P
    if guide is not None:
        prior_UN, weight = guide
        priority_P = score_P + weight * index.best_consistent(new_filled_PM, user_P, prior_UN)
    best = _grouped_top(user_P, priority_P, keep)
    return Beams(user_P[best], new_filled_PM[best], score_P[best])


def beam_search(
    scorer: TargetScorer,
    num_users: int,
    index: ValidIdIndex,
    *,
    beam_size: int,
    steps: int,
    order: str,
    top_k: int,
    excluded_UH: torch.Tensor | None = None,
    prior_UN: torch.Tensor | None = None,
    prior_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranked items int64 [U, top_k] and their fp32 scores [U, top_k] (-1 / -inf padding).

    `scorer` scores the targets of the `num_users` users it was started for (`scoring.py`), on
    the index's device. `excluded_UH` int64 [U, H] lists items (-1 padding) that must not
    appear in user u's list. A prior over items (`prior_UN` [U, N] by table row, e.g. dense
    log-probabilities) with `prior_weight` > 0 guides the pruning of every step but the last:
    a partial ID is kept by its score plus `prior_weight` times the best prior among the items it
    can still become. The returned scores and the final ranking stay generative.
    """
    U = num_users
    M, K = index.num_heads, index.codebook_size
    if M % steps:
        raise ValueError(f"steps={steps} must divide the number of positions M={M}")
    if beam_size < 1 or top_k < 1:
        raise ValueError(f"beam_size={beam_size} and top_k={top_k} must be >= 1")
    device = index.device
    beams = Beams(
        user_R=torch.arange(U, device=device),
        filled_RM=torch.full((U, M), UNFILLED, dtype=torch.int64, device=device),
        score_R=torch.zeros(U, dtype=torch.float32, device=device),
    )
    for step in range(steps):
        log_probs_RMK = _target_log_probs(scorer, beams, K)
        chosen_RM = _chosen_positions(beams, log_probs_RMK, index, order, M // steps)
        last = step == steps - 1
        keep = max(beam_size, top_k) if last else beam_size
        guide = None if last or prior_UN is None or prior_weight == 0 else (prior_UN, prior_weight)
        excluded = excluded_UH if last else None
        beams = _expand(beams, log_probs_RMK, chosen_RM, index, keep, excluded, guide)
    return _ranked_lists(beams, index, U, top_k)


def path_scores(
    scorer: TargetScorer,
    user_R: torch.Tensor,
    codes_RM: torch.Tensor,
    *,
    index: ValidIdIndex,
    steps: int,
    order: str,
) -> torch.Tensor:
    """fp32 [R]: the score the search gives item `codes_RM[r]` for user `user_R[r]` along the
    path it would take to that item (the positions `order` picks from what is filled so far,
    the item's own codes filled in): equal to its beam score wherever the beam search keeps it.

    `user_R` must be grouped by user, in user order (as the beams are).
    """
    R, M = codes_RM.shape
    if M % steps:
        raise ValueError(f"steps={steps} must divide the number of positions M={M}")
    beams = Beams(
        user_R=user_R,
        filled_RM=torch.full_like(codes_RM, UNFILLED),
        score_R=torch.zeros(R, dtype=torch.float32, device=codes_RM.device),
    )
    if R == 0:
        return beams.score_R
    for step in range(steps):
        if step == 0:  # every target fully masked: one pass per user serves all its rows
            users_V, row_V = torch.unique_consecutive(user_R, return_inverse=True)
            first = Beams(users_V, beams.filled_RM[: len(users_V)], beams.score_R[: len(users_V)])
            log_probs_RMK = _target_log_probs(scorer, first, index.codebook_size)[row_V]
        else:
            log_probs_RMK = _target_log_probs(scorer, beams, index.codebook_size)
        chosen_RM = _chosen_positions(beams, log_probs_RMK, index, order, M // steps)
        gathered_RM = log_probs_RMK.gather(2, codes_RM[..., None])[..., 0]
        beams = Beams(
            user_R,
            torch.where(chosen_RM, codes_RM, beams.filled_RM),
            beams.score_R + torch.where(chosen_RM, gathered_RM, 0.0).sum(-1),
        )
    return beams.score_R


def _first_of_each(group_R: torch.Tensor, key_R: torch.Tensor) -> torch.Tensor:
    """Indices of the first row of every distinct (group, key), in row order."""
    by_key = torch.sort(key_R, stable=True).indices
    order = by_key[torch.sort(group_R[by_key], stable=True).indices]
    group_s, key_s = group_R[order], key_R[order]
    first = torch.ones_like(group_s, dtype=torch.bool)
    first[1:] = (group_s[1:] != group_s[:-1]) | (key_s[1:] != key_s[:-1])
    return torch.sort(order[first]).values


def _ranked_lists(
    beams: Beams, index: ValidIdIndex, num_users: int, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter the finished beams (grouped by user, best first) into [U, top_k] lists.

    An item reached by two beams of one user is listed once, with its better score.
    """
    items_R = index.items_of(beams.filled_RM)
    distinct = _first_of_each(beams.user_R, items_R)
    beams = Beams(beams.user_R[distinct], beams.filled_RM[distinct], beams.score_R[distinct])
    items_R = items_R[distinct]
    counts = torch.bincount(beams.user_R, minlength=num_users)
    starts = torch.cumsum(counts, 0) - counts
    rank_R = torch.arange(len(items_R), device=items_R.device) - starts[beams.user_R]
    keep = rank_R < top_k
    ranked_UK = torch.full((num_users, top_k), -1, dtype=torch.int64, device=items_R.device)
    scores_UK = torch.full((num_users, top_k), -torch.inf, device=items_R.device)
    ranked_UK[beams.user_R[keep], rank_R[keep]] = items_R[keep]
    scores_UK[beams.user_R[keep], rank_R[keep]] = beams.score_R[keep]
    return ranked_UK, scores_UK
