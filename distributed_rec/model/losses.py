"""Weighted masked cross-entropy terms of the objectives (SPEC §6).

Each function returns the SUM of its weighted per-token losses; the caller divides by the
normaliser of the whole global batch (target tokens G*M for the next-item loss, real tokens for
the history and MaskGR losses), so the loss does not depend on how a batch is split into
micro-batches or processes.

Legend: B batch, L tokens, M positions per item, K codes, N masked positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Normalisers:
    """Denominators of the whole global batch: target tokens (M per next-item target) and real
    (non-pad) tokens."""

    target_tokens: float
    real_tokens: float


def token_codes(tokens_BL: torch.Tensor, num_heads: int, codebook_size: int) -> torch.Tensor:
    """int64 [B, L]: the code (0..K-1) of each real token (token = m*K + code, m = l % M)."""
    length = tokens_BL.shape[1]
    offsets_L = (torch.arange(length, device=tokens_BL.device) % num_heads) * codebook_size
    return tokens_BL - offsets_L


def weighted_masked_ce(
    logits_NK: torch.Tensor, codes_N: torch.Tensor, weight_N: torch.Tensor
) -> torch.Tensor:
    """Sum over the N masked positions of weight * cross-entropy (computed in float32)."""
    ce_N = F.cross_entropy(logits_NK.float(), codes_N, reduction="none")
    return (ce_N * weight_N).sum()


def next_item_loss_sum(
    logits_NK: torch.Tensor, codes_N: torch.Tensor, k_N: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """Sum of (M / k) * CE over the masked target tokens; divide by the number of target tokens."""
    return weighted_masked_ce(logits_NK, codes_N, num_heads / k_N.float())


def rate_weighted_loss_sum(
    logits_NK: torch.Tensor, codes_N: torch.Tensor, rate_N: torch.Tensor
) -> torch.Tensor:
    """Sum of CE / r over masked tokens (history mask rate r or MaskGR t); divide by real tokens."""
    return weighted_masked_ce(logits_NK, codes_N, 1.0 / rate_N)
