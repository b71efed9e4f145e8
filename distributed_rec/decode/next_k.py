"""Next-k prediction (MaskGR): the next k items of each user, decoded in parallel or in turn.

- parallel: item j (0-based) of the next k is searched after the history followed by j fully
  masked items, so the k searches are independent given the history (masked diffusion's
  conditional independence of masked tokens) and run as one batch: T model calls per user for
  all k items. Each search sees the items before its own only as masks; it does not condition
  on what the other searches fill (a simplification of decoding the 2M positions jointly).
- sequential: item j is searched after the history followed by the top-1 items predicted for
  0..j-1, as an autoregressive recommender would do: k * T model calls.

Either way position j's list excludes the user's history and the top-1 items of positions < j,
so the k predicted items (the top-1 of each position) are distinct real items.

Legend: U users, k positions, K list length, M positions per item, L tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from distributed_rec.decode.beam_search import beam_search
from distributed_rec.decode.constraint import ValidIdIndex
from distributed_rec.decode.recommend import codes_by_item, length_order, padded_items
from distributed_rec.decode.scoring import Scoring
from distributed_rec.model.vocab import encode_sequences, mask_token, pad_token
from distributed_rec.semantic_ids.id_table import SemanticIdTable

MODES = ("parallel", "sequential")


@dataclass
class NextK:
    """ranked_UkK int64 [U, k, K] (position j's list of user u, -1 padding) and the model calls
    (beam-search steps) each user's k lists took, besides encoding its history once."""

    ranked_UkK: np.ndarray
    calls_per_user: int

    @property
    def predicted_Uk(self) -> np.ndarray:
        """int64 [U, k]: the top-1 item of each position: k distinct items per user."""
        return self.ranked_UkK[:, :, 0]


def _with_masked_items(
    tokens_UL: torch.Tensor, is_pad_UL: torch.Tensor, count: int, mask_id: int, M: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The histories followed by `count` fully masked items: [U, L + count * M]."""
    U = tokens_UL.shape[0]
    masked = torch.full((U, count * M), mask_id, dtype=tokens_UL.dtype, device=tokens_UL.device)
    tokens = torch.cat([tokens_UL, masked], dim=1)
    return tokens, torch.cat([is_pad_UL, torch.zeros_like(masked, dtype=torch.bool)], dim=1)


def _search(
    scoring: Scoring,
    tokens_UL: torch.Tensor,
    is_pad_UL: torch.Tensor,
    excluded_UH: torch.Tensor | None,
    index: ValidIdIndex,
    search: dict,
) -> torch.Tensor:
    items_UK, _ = beam_search(
        scoring(tokens_UL, is_pad_UL), len(tokens_UL), index, excluded_UH=excluded_UH, **search
    )
    return items_UK


def recommend_next_k(
    scoring: Scoring,
    histories: Sequence[Sequence[int]],
    table: SemanticIdTable,
    *,
    k: int,
    mode: str,
    beam_size: int,
    steps: int,
    order: str,
    top_k: int,
    max_history: int,
    batch_size: int = 64,
    index: ValidIdIndex | None = None,
    exclude_history: bool = True,
) -> NextK:
    """Lists for each of the next `k` items of every user (see module doc), batched by history
    length as `recommend` batches. The model sees at most `max_history` items before the one
    it predicts (the most recent; masked or predicted items included), every list excludes the
    user's whole history."""
    if mode not in MODES:
        raise ValueError(f"next-k mode {mode!r} is not one of {', '.join(MODES)}")
    if not 1 <= k <= max_history:
        raise ValueError(f"k={k} must lie in 1..max_history={max_history}")
    if index is None:
        index = ValidIdIndex(table)
    device, M, K = index.device, table.num_heads, table.codebook_size
    codes = codes_by_item(table, histories)
    # k - 1 extra places: dropping the earlier positions' picks must leave top_k items
    search = {"beam_size": beam_size, "steps": steps, "order": order, "top_k": top_k + k - 1}
    ranked = np.full((len(histories), k, top_k), -1, dtype=np.int64)
    rows = length_order(histories)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            batch_histories = [list(histories[r]) for r in batch]
            U = len(batch)
            picks_Uk = torch.full((U, k), -1, dtype=torch.int64, device=device)
            lists: list[torch.Tensor] = []
            if mode == "parallel":
                variants = []
                for j in range(k):
                    kept = [h[len(h) - min(len(h), max_history - j) :] for h in batch_histories]
                    tokens, is_pad = encode_sequences(kept, codes, K)
                    variants.append(
                        _with_masked_items(
                            tokens.to(device), is_pad.to(device), j, mask_token(M, K), M
                        )
                    )
                width = max(t.shape[1] for t, _ in variants)
                padded = [_left_pad(t, p, width, pad_token(M, K)) for t, p in variants]
                stacked = torch.cat([t for t, _ in padded])
                stacked_pad = torch.cat([p for _, p in padded])
                excluded = padded_items(batch_histories).to(device) if exclude_history else None
                excluded_all = None if excluded is None else excluded.repeat(k, 1)
                found = _search(scoring, stacked, stacked_pad, excluded_all, index, search)
                lists = [found[j * U : (j + 1) * U] for j in range(k)]
            for j in range(k):
                if mode == "sequential":
                    extended = [
                        h + [int(p) for p in picks_Uk[u, :j] if p >= 0]
                        for u, h in enumerate(batch_histories)
                    ]
                    kept = [e[-max_history:] for e in extended]
                    tokens, is_pad = encode_sequences(kept, codes, K)
                    excluded = padded_items(extended).to(device) if exclude_history else None
                    lists.append(
                        _search(
                            scoring, tokens.to(device), is_pad.to(device), excluded, index, search
                        )
                    )
                items_UX = lists[j]
                taken = (items_UX[:, :, None] == picks_Uk[:, None, :j]).any(-1) if j else None
                if taken is not None:
                    items_UX = _drop(items_UX, taken)
                picks_Uk[:, j] = items_UX[:, 0]
                ranked[batch, j] = items_UX[:, :top_k].cpu().numpy()
    calls = steps if mode == "parallel" else k * steps
    return NextK(ranked, calls)


def _left_pad(
    tokens_UL: torch.Tensor, is_pad_UL: torch.Tensor, width: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded to `width` tokens: [U, width]."""
    U, L = tokens_UL.shape
    fill = torch.full((U, width - L), pad_id, dtype=tokens_UL.dtype, device=tokens_UL.device)
    fill_pad = torch.ones(U, width - L, dtype=torch.bool, device=tokens_UL.device)
    return torch.cat([fill, tokens_UL], 1), torch.cat([fill_pad, is_pad_UL], 1)


def _drop(items_UX: torch.Tensor, drop_UX: torch.Tensor) -> torch.Tensor:
    """Each row without its `drop_UX` entries, the rest moved left in order, -1 at the end."""
    keep = ~drop_UX & (items_UX >= 0)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    moved = items_UX.gather(1, order)
    return torch.where(keep.gather(1, order), moved, -1)
