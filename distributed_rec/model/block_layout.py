"""Whole-sequence (block-diffusion) input layout: every next-item target of a window in one pass.

A window is a user's items 0..n-1 in time order (an item is a block of M tokens). Under
inter-item causal attention with slots counted from the window's start, an item's clean hidden
states depend only on the items up to it, so one pass can hold, side by side (BD3-LM's
vectorised training, Arriola et al. 2025, with one block per item):

    TARGET  items 1..N-1, each noised by its own next-item draw; item i attends its own M tokens
            and the CLEAN copies of items < i: exactly what the prefix ending at i computes
            for its masked target;
    CONTEXT items 0..N-1, noised by the history (or MaskGR) draw; block-causal among themselves:
            exactly the per-item terms of a prefix's history pass under this attention;
    CLEAN   items 0..N-1, clean; block-causal among themselves (the keys TARGET attends to);
    QUERY   items 1..N-1, every token masked, attending like TARGET: the fully masked target the
            dense retrieval head (`dense.py`) reads, as decoding presents it.

Streams are laid out in that order, each right-padded to the batch's longest window N, so item
i of a stream always sits at the same token offset and position l holds codebook l % M.

Legend: B windows, N items of the longest window, M positions per item, T tokens of the layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distributed_rec.model.attention import with_real_keys

TARGET, CONTEXT, CLEAN, QUERY = 0, 1, 2, 3
MASKED_TARGETS = (TARGET, QUERY)
"""Streams of items 1..N-1 that attend the CLEAN items before them and their own tokens."""


@dataclass(frozen=True)
class BlockLayout:
    """Which stream and window item every token of the layout belongs to.

    stream_T, item_T: int64 [T]; streams: the streams present, in layout order; offset of each
    present stream's first token by stream id.
    """

    stream_T: torch.Tensor
    item_T: torch.Tensor
    streams: tuple[int, ...]
    offsets: dict[int, int]

    @property
    def length(self) -> int:
        return int(self.stream_T.shape[0])


def block_layout(
    num_items: int, num_heads: int, streams: tuple[int, ...], device: torch.device
) -> BlockLayout:
    """The layout of `streams` (a subset of TARGET, CONTEXT, CLEAN, QUERY, in that order) for N
    items.

    TARGET and QUERY need CLEAN: their items attend the clean copies of the items before them.
    """
    if any(s in streams for s in MASKED_TARGETS) and CLEAN not in streams:
        raise ValueError("the TARGET and QUERY streams attend the CLEAN stream; include it")
    if list(streams) != sorted(set(streams)) or not streams:
        raise ValueError(f"streams {streams} must be distinct, non-empty and in layout order")
    stream_parts, item_parts, offsets, offset = [], [], {}, 0
    for stream in streams:
        first = 1 if stream in MASKED_TARGETS else 0
        items = torch.arange(first, num_items, device=device).repeat_interleave(num_heads)
        offsets[stream] = offset
        offset += len(items)
        stream_parts.append(torch.full_like(items, stream))
        item_parts.append(items)
    return BlockLayout(torch.cat(stream_parts), torch.cat(item_parts), tuple(streams), offsets)


def layout_structure(layout: BlockLayout) -> torch.Tensor:
    """bool [T, T]: query q may attend key k (ignoring padding)."""
    s_q, s_k = layout.stream_T[:, None], layout.stream_T[None, :]
    i_q, i_k = layout.item_T[:, None], layout.item_T[None, :]
    masked_q = (s_q == TARGET) | (s_q == QUERY)
    target = masked_q & (((s_k == CLEAN) & (i_k < i_q)) | ((s_k == s_q) & (i_k == i_q)))
    causal_self = ~masked_q & (s_k == s_q) & (i_k <= i_q)
    return target | causal_self


def layout_mask(layout: BlockLayout, lengths_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(allowed bool [B, 1, T, T], is_pad bool [B, T]) for windows of `lengths_B` items."""
    is_pad_BT = layout.item_T[None, :] >= lengths_B[:, None]
    return with_real_keys(layout_structure(layout)[None], is_pad_BT), is_pad_BT


def stream_tokens(layout: BlockLayout, tokens_by_stream: dict[int, torch.Tensor]) -> torch.Tensor:
    """int64 [B, T]: each stream's tokens [B, N, M] placed at its offset (TARGET and QUERY drop
    item 0).

    Positions past a window's length must already hold PAD in the given tensors.
    """
    parts = []
    for stream in layout.streams:
        tokens_BNM = tokens_by_stream[stream]
        if stream in MASKED_TARGETS:
            tokens_BNM = tokens_BNM[:, 1:]
        parts.append(tokens_BNM.reshape(tokens_BNM.shape[0], -1))
    tokens_BT = torch.cat(parts, dim=1)
    if tokens_BT.shape[1] != layout.length:
        raise ValueError(f"{tokens_BT.shape[1]} tokens do not fill a layout of {layout.length}")
    return tokens_BT


def stream_positions(
    layout: BlockLayout, stream: int, mask_BNM: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows, layout columns and window items of the True entries of a stream's mask [B, N, M].

    For TARGET and QUERY, item 0 (which has no history) must not be selected.
    """
    B, N, M = mask_BNM.shape
    if stream in MASKED_TARGETS:
        if mask_BNM[:, 0].any():
            raise ValueError("item 0 of a window has no history: it is never a target")
        mask_BNM = mask_BNM[:, 1:]
    rows, items, positions = mask_BNM.nonzero(as_tuple=True)
    first = 1 if stream in MASKED_TARGETS else 0
    columns = layout.offsets[stream] + items * M + positions
    return rows, columns, items + first
