"""Dense and hybrid ranking (MaskGR's dense retrieval beside the constrained beam search).

- dense: the dense head scores every item from the fully masked target; the list is the top-K
  items by that score (history excluded when asked).
- hybrid: a user's candidates are the beam's final items (with their beam scores) plus the dense
  head's top-N; a dense candidate the beam did not keep gets the score the search would have
  given it (`beam_search.path_scores`). Every candidate is then ranked by
  (1 - w) * generative log-prob + w * dense log-prob (log-softmax over all items). At w = 0 with
  no dense candidates the list is the generative one; at w = 1 it is the dense one.

`rank_with_dense` produces all three for a batch of users from one beam search, so the weight
can be chosen on validation and the three modes compared on the same run.

Legend: U users, L tokens, M positions, I items (semantic-ID table rows), C candidates per user,
R flat (user, candidate) pairs, K list length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from distributed_rec.decode.beam_search import beam_search, path_scores
from distributed_rec.decode.constraint import ValidIdIndex
from distributed_rec.decode.recommend import codes_by_item, length_order, padded_items
from distributed_rec.decode.scoring import Scoring, decoding_autocast
from distributed_rec.model.transformer import MaskPredictor
from distributed_rec.model.vocab import encode_sequences, mask_token
from distributed_rec.semantic_ids.id_table import SemanticIdTable


@dataclass
class RankedOutputs:
    """Per user (row u for histories[u]): generative and dense top-K item ids int64 [U, K]
    (-1 padding), and the hybrid candidates: item ids int64 [U, C] (-1 padding) with their
    generative and dense log-probabilities float32 [U, C] (-inf padding)."""

    generative_UK: np.ndarray
    dense_UK: np.ndarray
    candidates_UC: np.ndarray
    generative_UC: np.ndarray
    dense_UC: np.ndarray


def dense_log_probs(
    model: MaskPredictor,
    tokens_UL: torch.Tensor,
    is_pad_UL: torch.Tensor,
    *,
    cached: bool,
    precision: str = "fp32",
) -> torch.Tensor:
    """float32 [U, I]: log-softmax over all items of the dense head's scores, the target fully
    masked after each left-padded history; `cached` encodes the history once (exact where
    `config.HISTORY_CACHE_ATTENTION`), else one full pass."""
    autocast = decoding_autocast(model, precision)
    U, M = tokens_UL.shape[0], model.num_heads
    masked_UM = torch.full(
        (U, M), mask_token(M, model.codebook_size), dtype=tokens_UL.dtype, device=tokens_UL.device
    )
    with torch.inference_mode(), autocast():
        if cached:
            cache = model.encode_history(tokens_UL, is_pad_UL)
            hidden_UMD = model.cached_target_hidden(cache, masked_UM[:, None])[:, 0]
        else:
            tokens = torch.cat([tokens_UL, masked_UM], dim=1)
            is_pad = torch.cat([is_pad_UL, torch.zeros_like(masked_UM, dtype=torch.bool)], 1)
            hidden_UMD = model.encode(tokens, is_pad, last_only=M)
        scores_UI = model.dense_scores(hidden_UMD)
    return torch.log_softmax(scores_UI.float(), dim=-1)


def hybrid_rank(
    candidates_UC: np.ndarray,
    generative_UC: np.ndarray,
    dense_UC: np.ndarray,
    weight: float,
    top_k: int,
) -> np.ndarray:
    """int64 [U, top_k] candidates by (1 - weight) * generative + weight * dense, best first
    (ties keep candidate order); -1 where a user has fewer candidates."""
    if not 0 <= weight <= 1:
        raise ValueError(f"hybrid weight {weight} must lie in [0, 1]")
    real = candidates_UC >= 0
    if weight == 0:
        score = generative_UC.astype(np.float64)
    elif weight == 1:
        score = dense_UC.astype(np.float64)
    else:
        score = (1 - weight) * generative_UC.astype(np.float64) + weight * dense_UC
    score = np.where(real, score, -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")[:, :top_k]
    ranked = np.take_along_axis(candidates_UC, order, axis=1)
    taken = np.take_along_axis(real, order, axis=1)
    ranked = np.where(taken, ranked, -1)
    if ranked.shape[1] < top_k:
        ranked = np.pad(ranked, ((0, 0), (0, top_k - ranked.shape[1])), constant_values=-1)
    return ranked


def _candidates(
    beam_items_UB: torch.Tensor,
    beam_scores_UB: torch.Tensor,
    dense_top_UN: torch.Tensor,
    dense_lp_UI: torch.Tensor,
    row_of_item: torch.Tensor,
    index: ValidIdIndex,
    path_score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The union of beam and dense candidates per user with both scores (see module doc)."""
    U, B = beam_items_UB.shape
    N = dense_top_UN.shape[1]
    dense_items_UN = torch.where(dense_top_UN >= 0, index.item_ids_N[dense_top_UN.clamp(min=0)], -1)
    in_beam_UN = (dense_items_UN[:, :, None] == beam_items_UB[:, None, :]).any(-1)
    new_UN = ~in_beam_UN & (dense_top_UN >= 0)
    user_R, slot_R = new_UN.nonzero(as_tuple=True)  # row-major: grouped by user, in user order
    rows_R = dense_top_UN[user_R, slot_R]
    generative_UN = torch.full((U, N), -torch.inf, device=beam_items_UB.device)
    generative_UN[user_R, slot_R] = path_score(user_R, index.codes_NM[rows_R])
    items_UC = torch.cat([beam_items_UB, torch.where(new_UN, dense_items_UN, -1)], dim=1)
    generative_UC = torch.cat([beam_scores_UB, generative_UN], dim=1)
    rows_UC = torch.where(items_UC >= 0, row_of_item[items_UC.clamp(min=0)], 0)
    dense_UC = torch.where(items_UC >= 0, dense_lp_UI.gather(1, rows_UC), -torch.inf)
    generative_UC = torch.where(items_UC >= 0, generative_UC, -torch.inf)
    return items_UC, generative_UC, dense_UC


def rank_with_dense(
    model: MaskPredictor,
    scoring: Scoring,
    histories: Sequence[Sequence[int]],
    table: SemanticIdTable,
    *,
    beam_size: int,
    steps: int,
    order: str,
    top_k: int,
    dense_candidates: int,
    cached: bool,
    precision: str = "fp32",
    batch_size: int = 64,
    index: ValidIdIndex | None = None,
    exclude_history: bool = False,
    dense_only: bool = False,
    dense_prior_weight: float = 0.0,
) -> RankedOutputs:
    """Generative, dense and hybrid-candidate rankings of every user (see module doc); users are
    batched by history length exactly as `recommend` batches them, so the generative lists equal
    its lists (with `dense_prior_weight` 0). `dense_only` skips the beam search: only `dense_UK`
    is filled. `dense_prior_weight` > 0 guides the beam's pruning by the dense log-probs
    (`beam_search`'s prior; history items excluded when asked)."""
    if index is None:
        index = ValidIdIndex(table, next(model.parameters()).device)
    device = index.device
    dense = codes_by_item(table, histories)
    row_of_item = torch.full((len(dense),), -1, dtype=torch.int64, device=device)
    row_of_item[index.item_ids_N] = torch.arange(index.num_items, device=device)
    U, C = len(histories), max(beam_size, top_k) + dense_candidates
    out = RankedOutputs(
        generative_UK=np.full((U, top_k), -1, dtype=np.int64),
        dense_UK=np.full((U, top_k), -1, dtype=np.int64),
        candidates_UC=np.full((U, C), -1, dtype=np.int64),
        generative_UC=np.full((U, C), -np.inf, dtype=np.float32),
        dense_UC=np.full((U, C), -np.inf, dtype=np.float32),
    )
    rows = length_order(histories)
    keep = max(beam_size, top_k)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            tokens_UL, is_pad_UL = encode_sequences(
                [histories[r] for r in batch], dense, table.codebook_size
            )
            tokens_UL, is_pad_UL = tokens_UL.to(device), is_pad_UL.to(device)
            history_UH = padded_items([histories[r] for r in batch]).to(device)
            excluded_UH = history_UH if exclude_history else None
            dense_lp_UI = dense_log_probs(
                model, tokens_UL, is_pad_UL, cached=cached, precision=precision
            )
            ranked_lp_UI = dense_lp_UI.clone()
            if exclude_history and history_UH.shape[1]:
                users, cols = (history_UH >= 0).nonzero(as_tuple=True)
                ranked_lp_UI[users, row_of_item[history_UH[users, cols]]] = -torch.inf
            wanted = min(max(top_k, dense_candidates), index.num_items)
            top_lp_UN, top_UN = ranked_lp_UI.topk(wanted, dim=1)
            top_UN = torch.where(torch.isfinite(top_lp_UN), top_UN, -1)
            top_UK = top_UN[:, :top_k]
            dense_items_UK = torch.where(top_UK >= 0, index.item_ids_N[top_UK.clamp(min=0)], -1)
            out.dense_UK[batch, : dense_items_UK.shape[1]] = dense_items_UK.cpu().numpy()
            if dense_only:
                continue

            scorer = scoring(tokens_UL, is_pad_UL)
            items_UB, scores_UB = beam_search(
                scorer,
                len(batch),
                index,
                beam_size=beam_size,
                steps=steps,
                order=order,
                top_k=keep,
                excluded_UH=excluded_UH,
                prior_UN=ranked_lp_UI,
                prior_weight=dense_prior_weight,
            )
            items_UC, generative_UC, dense_UC = _candidates(
                items_UB,
                scores_UB,
                top_UN[:, :dense_candidates],
                dense_lp_UI,
                row_of_item,
                index,
                partial(path_scores, scorer, index=index, steps=steps, order=order),
            )
            width = items_UC.shape[1]
            out.generative_UK[batch] = items_UB[:, :top_k].cpu().numpy()
            out.candidates_UC[batch, :width] = items_UC.cpu().numpy()
            out.generative_UC[batch, :width] = generative_UC.cpu().numpy()
            out.dense_UC[batch, :width] = dense_UC.cpu().numpy()
    return out
