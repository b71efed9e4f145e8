"""What the beam search asks the model: target logits for each beam's partly filled target.

A `Scoring` is started once per batch of users with their left-padded histories (no target
appended) and returns a `TargetScorer`, called once per search step with every beam's target
tokens. Two exist:
- `full_pass(logits_fn)`: every step re-encodes each beam's whole sequence (history + target);
  any attention, any model with a `target_logits`-like function;
- `cached_history(model)`: the history is encoded once per user (`MaskPredictor.encode_history`)
  and each step runs only the beams' target tokens against it; exact where the history never
  attends the target (`config.HISTORY_CACHE_ATTENTION`).

Legend: U users, R beams (all users, flat, grouped by user), L tokens, M positions, K codes,
B most beams of any one user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distributed_rec.distributed.env import has_native_bf16
from distributed_rec.model.transformer import MaskPredictor
from distributed_rec.model.vocab import mask_token

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(tokens_RL int64, is_pad_RL bool) -> logits [R, M, K] of the last M (target) positions."""

TargetScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(user_R int64, target_tokens_RM int64) -> logits [R, M, K] of each beam's target."""

Scoring = Callable[[torch.Tensor, torch.Tensor], TargetScorer]
"""(history tokens_UL, is_pad_UL) -> the TargetScorer of those users."""


def decode_uses_bf16(precision: str, device_type: str) -> bool:
    """'bf16' always, 'fp32' never, 'auto' where the device has native bf16 (has_native_bf16)."""
    if precision == "auto":
        return has_native_bf16(device_type)
    return precision == "bf16"


def full_pass(logits_fn: LogitsFn) -> Scoring:
    """Scoring that runs `logits_fn` over each beam's history followed by its target."""

    def start(tokens_UL: torch.Tensor, is_pad_UL: torch.Tensor) -> TargetScorer:
        def score(user_R: torch.Tensor, target_RM: torch.Tensor) -> torch.Tensor:
            tokens_RL = torch.cat([tokens_UL[user_R], target_RM], dim=1)
            is_pad_RL = torch.cat(
                [is_pad_UL[user_R], torch.zeros_like(target_RM, dtype=torch.bool)], 1
            )
            return logits_fn(tokens_RL, is_pad_RL)

        return score

    return start


def decoding_autocast(model: torch.nn.Module, precision: str) -> Callable[[], Any]:
    """Puts `model` in eval mode; returns a factory of its bf16 autocast context
    (enabled when `decode_uses_bf16` on the model's device)."""
    model.eval()
    device_type = next(model.parameters()).device.type
    use_bf16 = decode_uses_bf16(precision, device_type)
    return lambda: torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16)


def model_logits_fn(model: torch.nn.Module, precision: str = "fp32") -> LogitsFn:
    """`model.target_logits` in eval mode, under bf16 autocast when `decode_uses_bf16`.

    The logits are returned as fp32, so log-probabilities and beam scores are always fp32.
    """
    autocast = decoding_autocast(model, precision)

    def logits_fn(tokens_BL: torch.Tensor, is_pad_BL: torch.Tensor) -> torch.Tensor:
        with autocast():
            return model.target_logits(tokens_BL, is_pad_BL).float()

    return logits_fn


def _slots_by_user(user_R: torch.Tensor, num_users: int) -> torch.Tensor:
    """slot_R: beam r goes to [user_R[r], slot_R[r]] of a [U, B] grid (R grouped by user)."""
    if len(user_R) > 1 and bool((user_R[1:] < user_R[:-1]).any()):
        raise ValueError("beams must be grouped by user, in user order")
    counts_U = torch.bincount(user_R, minlength=num_users)
    starts_U = torch.cumsum(counts_U, 0) - counts_U
    return torch.arange(len(user_R), device=user_R.device) - starts_U[user_R]


def cached_history(model: MaskPredictor, precision: str = "fp32") -> Scoring:
    """Scoring that encodes each user's history once and then scores only the targets.

    Beams are laid out per user on a [U, B] grid (padding beams are fully masked targets whose
    outputs are dropped), so every user's cached keys serve all its beams in one matmul.
    """
    autocast = decoding_autocast(model, precision)
    M, K = model.num_heads, model.codebook_size

    def start(tokens_UL: torch.Tensor, is_pad_UL: torch.Tensor) -> TargetScorer:
        U = tokens_UL.shape[0]
        with autocast():
            cache = model.encode_history(tokens_UL, is_pad_UL)

        def score(user_R: torch.Tensor, target_RM: torch.Tensor) -> torch.Tensor:
            slot_R = _slots_by_user(user_R, U)
            B = int(slot_R.max()) + 1 if len(slot_R) else 1
            grid_UBM = torch.full(
                (U, B, M), mask_token(M, K), dtype=target_RM.dtype, device=target_RM.device
            )
            grid_UBM[user_R, slot_R] = target_RM
            with autocast():
                logits_UBMK = model.cached_target_logits(cache, grid_UBM)
            return logits_UBMK[user_R, slot_R].float()

        return score

    return start


def model_scoring(model: MaskPredictor, precision: str, cache_history: bool) -> Scoring:
    """The mask predictor's scoring: `cached_history` when asked (and exact), else `full_pass`."""
    if cache_history:
        return cached_history(model, precision)
    return full_pass(model_logits_fn(model, precision))
