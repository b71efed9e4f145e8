"""Token ids of the mask predictor and the layout of its input sequences (SPEC §5).

One vocabulary: position m of an item's ID with code c is token m*K + c; then PAD = M*K and
MASK = M*K + 1. A sequence is the history items then the target item, M tokens each, LEFT-padded
to the longest sequence of the batch, so the target always occupies the last M positions and
token position l holds codebook l % M.

Legend: B batch, L = M * items tokens, M positions per item, K codes per position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def pad_token(num_heads: int, codebook_size: int) -> int:
    return num_heads * codebook_size


def mask_token(num_heads: int, codebook_size: int) -> int:
    return num_heads * codebook_size + 1


def vocab_size(num_heads: int, codebook_size: int) -> int:
    return num_heads * codebook_size + 2


def codes_to_tokens(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """int64 [..., M] codes -> int64 [..., M] token ids (offset by position block)."""
    num_heads = codes.shape[-1]
    return codes + np.arange(num_heads, dtype=np.int64) * codebook_size


def encode_sequences(
    item_sequences: Sequence[Sequence[int]],
    item_codes: np.ndarray,
    codebook_size: int,
    mask_last_item: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded token batch for item sequences (each the history then, optionally, a target).

    `item_codes` is int64 [num_items, M] indexed by item id. When `mask_last_item`, the last
    item's M tokens are MASK (its id is still needed; pass any placeholder item).
    Returns tokens_BL (int64) and is_pad_BL (bool), L = M * longest sequence.
    """
    num_heads = item_codes.shape[1]
    pad = pad_token(num_heads, codebook_size)
    longest = max((len(s) for s in item_sequences), default=0)
    tokens = np.full((len(item_sequences), longest * num_heads), pad, dtype=np.int64)
    offsets = np.arange(num_heads, dtype=np.int64) * codebook_size
    for row, items in enumerate(item_sequences):
        if not len(items):
            continue
        seq_tokens = item_codes[np.asarray(items, dtype=np.int64)] + offsets
        if mask_last_item:
            seq_tokens[-1] = mask_token(num_heads, codebook_size)
        tokens[row, tokens.shape[1] - seq_tokens.size :] = seq_tokens.reshape(-1)
    tokens_t = torch.from_numpy(tokens)
    return tokens_t, tokens_t == pad


def encode_histories_for_decoding(
    histories: Sequence[Sequence[int]], item_codes: np.ndarray, codebook_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories followed by a fully masked target item: tokens_BL, is_pad_BL."""
    placeholder = 0
    return encode_sequences(
        [list(h) + [placeholder] for h in histories], item_codes, codebook_size, mask_last_item=True
    )


def encode_windows(
    windows: Sequence[Sequence[int]], item_codes: np.ndarray, codebook_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token windows for whole-sequence training.

    Returns tokens int64 [B, N, M] (item i of window b at [b, i]; PAD past its end) and the
    window lengths int64 [B], N = the longest window.
    """
    num_heads = item_codes.shape[1]
    lengths = np.fromiter((len(w) for w in windows), np.int64, len(windows))
    longest = int(lengths.max(initial=0))
    tokens = np.full(
        (len(windows), longest, num_heads), pad_token(num_heads, codebook_size), dtype=np.int64
    )
    offsets = np.arange(num_heads, dtype=np.int64) * codebook_size
    for row, items in enumerate(windows):
        if len(items):
            tokens[row, : len(items)] = item_codes[np.asarray(items, dtype=np.int64)] + offsets
    return torch.from_numpy(tokens), torch.from_numpy(lengths)
