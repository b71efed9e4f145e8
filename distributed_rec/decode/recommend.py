"""Top-K recommendations for many users: batching by history length around `beam_search`.

Legend: U users, L tokens, M positions, K codes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from distributed_rec.decode.beam_search import beam_search
from distributed_rec.decode.constraint import ValidIdIndex
from distributed_rec.decode.scoring import Scoring
from distributed_rec.model.vocab import encode_sequences
from distributed_rec.semantic_ids.id_table import SemanticIdTable


def length_order(histories: Sequence[Sequence[int]]) -> np.ndarray:
    """Row order by history length (stable): batches of similar length need little padding."""
    return np.argsort(
        np.fromiter((len(h) for h in histories), np.int64, len(histories)), kind="stable"
    )


def codes_by_item(table: SemanticIdTable, histories: Sequence[Sequence[int]]) -> np.ndarray:
    """int64 [max item id + 1, M] codes by item id; ValueError naming an item without an ID."""
    top = max(int(table.item_ids.max()), max((max(h) for h in histories if len(h)), default=0))
    dense = np.full((top + 1, table.num_heads), -1, dtype=np.int64)
    dense[table.item_ids] = table.codes
    for history in histories:
        rows = np.asarray(history, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or (dense[rows, 0] < 0).any()):
            bad = [int(i) for i in rows if i < 0 or dense[i, 0] < 0]
            raise ValueError(f"history item {bad[0]} has no semantic ID in the table")
    return dense


def padded_items(histories: Sequence[Sequence[int]]) -> torch.Tensor:
    """int64 [U, max length] item ids, -1 after each history."""
    longest = max((len(h) for h in histories), default=0)
    padded = np.full((len(histories), longest), -1, dtype=np.int64)
    for row, history in enumerate(histories):
        padded[row, : len(history)] = history
    return torch.from_numpy(padded)


def recommend(
    scoring: Scoring,
    histories: Sequence[Sequence[int]],
    table: SemanticIdTable,
    *,
    beam_size: int,
    steps: int,
    order: str,
    top_k: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    index: ValidIdIndex | None = None,
    exclude_history: bool = False,
) -> np.ndarray:
    """Ranked item ids int64 [U, top_k], row u for histories[u]; -1 where fewer items exist.

    Users are decoded `batch_size` at a time in order of history length (stable), so the
    batches, and therefore the results, depend only on the input order and `batch_size`.
    `scoring` is `scoring.full_pass(logits_fn)` or `scoring.cached_history(model)`.
    Greedy decoding is `beam_size=1`. Pass a prebuilt `index` to reuse it across calls.
    With `exclude_history`, no user is recommended an item of its own history (the search
    replaces such items with the next best real ones).
    """
    if index is None:
        index = ValidIdIndex(table, device)
    dense = codes_by_item(table, histories)
    ranked = np.full((len(histories), top_k), -1, dtype=np.int64)
    rows = length_order(histories)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            tokens_UL, is_pad_UL = encode_sequences(
                [histories[r] for r in batch], dense, table.codebook_size
            )
            excluded_UH = padded_items([histories[r] for r in batch]) if exclude_history else None
            scorer = scoring(tokens_UL.to(index.device), is_pad_UL.to(index.device))
            items_UK, _ = beam_search(
                scorer,
                len(batch),
                index,
                beam_size=beam_size,
                steps=steps,
                order=order,
                top_k=top_k,
                excluded_UH=None if excluded_UH is None else excluded_UH.to(index.device),
            )
            ranked[batch] = items_UK.cpu().numpy()
    return ranked
