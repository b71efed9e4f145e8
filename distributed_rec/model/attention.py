"""Attention masks of the mask predictor's variants (SPEC §5), as booleans (True = may attend).

Legend: B batch, L tokens, M positions per item. Sequences are left-padded with the target item
last, so an item is identified by its slot counted from the end: slot(l) = (L - 1 - l) // M.
"""

from __future__ import annotations

import torch


def structure_mask(kind: str, length: int, num_heads: int, device: torch.device) -> torch.Tensor:
    """bool [L, L]: query q may attend key k under attention `kind` (ignoring padding)."""
    positions = torch.arange(length, device=device)
    q, k = positions[:, None], positions[None, :]
    slot_q, slot_k = (length - 1 - q) // num_heads, (length - 1 - k) // num_heads
    if kind == "bidirectional":
        return torch.ones(length, length, dtype=torch.bool, device=device)
    if kind == "causal":
        return k <= q
    if kind == "inter_item_causal":
        return slot_k >= slot_q
    if kind == "intra_item_causal":
        return (slot_k != slot_q) | (k <= q)
    raise ValueError(f"unknown attention kind {kind!r}")


def attention_mask(kind: str, is_pad_BL: torch.Tensor, num_heads: int) -> torch.Tensor:
    """bool [B, 1, L, L]: structure mask AND real keys; every query may attend itself.

    The diagonal keeps padded queries (whose outputs are never used) from having no key at all,
    which would make softmax undefined.
    """
    B, L = is_pad_BL.shape
    allowed_LL = structure_mask(kind, L, num_heads, is_pad_BL.device)
    allowed_BLL = allowed_LL[None] & ~is_pad_BL[:, None, :]
    allowed_BLL = allowed_BLL | torch.eye(L, dtype=torch.bool, device=is_pad_BL.device)[None]
    return allowed_BLL[:, None]
