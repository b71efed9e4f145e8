"""The catalogue as the mask predictor sees it: every real item's M-code tuple (rows of the
semantic-ID table), to find the item of a token tuple and to score every item from the
per-position code logits of a target.

The generative score of item i from a fully masked target is sum_m logit_m[c_m(i)]: up to a
constant per target it is the one-step (T = 1) beam score sum_m log softmax_m[c_m(i)], so a
softmax over the catalogue of these scores is the generative model's distribution over real
items, and its cross-entropy trains the ranking that one-step decoding returns
(`model.catalog_loss_weight`).

Legend: B batch, I items of the table, M positions, K codes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def tuple_keys(codes_NM: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """int64 [N]: sum_m codes[:, m] * K^m (unique per tuple while K^M < 2^63)."""
    M = codes_NM.shape[-1]
    powers_M = codebook_size ** torch.arange(M, device=codes_NM.device, dtype=torch.int64)
    return (codes_NM * powers_M).sum(-1)


def lookup_rows(
    tokens_BIM: torch.Tensor,
    sorted_keys_I: torch.Tensor,
    row_of_sorted_I: torch.Tensor,
    codebook_size: int,
) -> torch.Tensor:
    """int64 [B, I']: the table row of each item whose M tokens are real codes, else -1, given
    the table's tuple keys in sorted order and the row of each."""
    M, K = tokens_BIM.shape[-1], codebook_size
    codes = tokens_BIM - torch.arange(M, device=tokens_BIM.device) * K
    real = ((codes >= 0) & (codes < K)).all(-1)
    keys = tuple_keys(codes.clamp(0, K - 1), K)
    at = torch.searchsorted(sorted_keys_I, keys).clamp(max=len(sorted_keys_I) - 1)
    found = real & (sorted_keys_I[at] == keys)
    return torch.where(found, row_of_sorted_I[at], -1)


class ItemCodes(nn.Module):
    """The table's codes [I, M] as (non-persistent) buffers: derived from the semantic-ID
    table, never stored in a checkpoint."""

    def __init__(self, codes_IM: np.ndarray, codebook_size: int) -> None:
        super().__init__()
        num_items, M = codes_IM.shape
        if num_items == 0:
            raise ValueError("the catalogue has no items")
        if M * np.log2(codebook_size) >= 63:
            raise ValueError(f"K={codebook_size}, M={M}: tuple keys overflow int64")
        self.codebook_size = codebook_size
        codes = torch.as_tensor(codes_IM, dtype=torch.int64)
        keys = tuple_keys(codes, codebook_size)
        order = torch.argsort(keys)
        self.register_buffer("codes_IM", codes, persistent=False)
        self.register_buffer("sorted_keys_I", keys[order], persistent=False)
        self.register_buffer("row_of_sorted_I", order, persistent=False)

    @property
    def num_items(self) -> int:
        return int(self.codes_IM.shape[0])

    def rows_of(self, tokens_BIM: torch.Tensor) -> torch.Tensor:
        """int64 [B, I']: the table row of each item whose M tokens are real codes, else -1."""
        return lookup_rows(tokens_BIM, self.sorted_keys_I, self.row_of_sorted_I, self.codebook_size)

    def item_logits(self, logits_BMK: torch.Tensor) -> torch.Tensor:
        """float32 [B, I]: sum over positions m of each item's code logit at m."""
        B, M, _ = logits_BMK.shape
        scores_BI = logits_BMK.new_zeros(B, self.num_items, dtype=torch.float32)
        for m in range(M):
            scores_BI = scores_BI + logits_BMK[:, m].float()[:, self.codes_IM[:, m]]
        return scores_BI
