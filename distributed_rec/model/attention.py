"""Attention masks and item slots of the mask predictor's variants (SPEC §5).

Masks are booleans (True = may attend). Sequences are left-padded with the target item last.
An item's *slot* feeds the learned slot embedding; it is counted from the end (target 0, the most
recent history item 1, ...) for every variant except `inter_item_causal`, which counts from the
first real item (0, 1, ...). Under block-causal attention an item's hidden states then depend
only on the items up to it, never on how many follow: the property that lets one pass train every
next-item target of a sequence (`block_layout.py`) and lets decoding cache the history
(`kv_cache.py`).

Legend: B batch, L tokens, M positions per item.
"""

from __future__ import annotations

import torch

from distributed_rec.config import HISTORY_CACHE_ATTENTION

SLOTS_FROM_START = ("inter_item_causal",)


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
    return with_real_keys(allowed_LL[None], is_pad_BL)


def with_real_keys(allowed_BLL: torch.Tensor, is_pad_BL: torch.Tensor) -> torch.Tensor:
    """bool [B, 1, L, L]: `allowed_BLL` (or [1, L, L]) restricted to real keys, plus the diagonal."""
    L = is_pad_BL.shape[1]
    allowed_BLL = allowed_BLL & ~is_pad_BL[:, None, :]
    allowed_BLL = allowed_BLL | torch.eye(L, dtype=torch.bool, device=is_pad_BL.device)[None]
    return allowed_BLL[:, None]


def sequence_slots(kind: str, is_pad_BL: torch.Tensor, num_heads: int) -> torch.Tensor:
    """int64 [B, L]: the slot of each position's item (padding clamped to slot 0)."""
    B, L = is_pad_BL.shape
    positions_L = torch.arange(L, device=is_pad_BL.device)
    if kind in SLOTS_FROM_START:
        pad_items_B1 = is_pad_BL.sum(1, keepdim=True) // num_heads
        return (positions_L // num_heads - pad_items_B1).clamp(min=0)
    return ((L - 1 - positions_L) // num_heads).expand(B, L)


def history_slots(
    kind: str, is_pad_UL: torch.Tensor, num_heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots of left-padded histories WITHOUT the target, as if it followed them.

    Returns (history slots int64 [U, L], target slot int64 [U]).
    """
    U, L = is_pad_UL.shape
    positions_L = torch.arange(L, device=is_pad_UL.device)
    items_U = (L - is_pad_UL.sum(1)) // num_heads
    if kind in SLOTS_FROM_START:
        return sequence_slots(kind, is_pad_UL, num_heads), items_U
    slots_UL = ((L - 1 - positions_L) // num_heads + 1).expand(U, L)
    return slots_UL, torch.zeros_like(items_U)


def within_item_mask(kind: str, num_heads: int, device: torch.device) -> torch.Tensor:
    """bool [M, M]: which positions of the target item a target position attends to (cached)."""
    if kind not in HISTORY_CACHE_ATTENTION:
        raise ValueError(f"attention {kind!r} lets the history attend the target: not cacheable")
    full = torch.ones(num_heads, num_heads, dtype=torch.bool, device=device)
    return torch.tril(full) if kind == "causal" else full
