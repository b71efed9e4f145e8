"""The history's keys and values, computed once per user and shared by every beam and step.

Under attention where the history never attends the target (inter-item causal, causal), the
history's hidden states, and so every layer's keys and values, do not depend on the target's
tokens. Decoding computes them once (`MaskPredictor.encode_history`); each beam-search step then
runs only the target's M tokens of every beam through the layers, attending to the cached history
of its user and to its own item (`cached_attention`).

Legend: U users, B beams per user (padded to the most of any user), M positions per item,
L history tokens, H attention heads, d head width, D model width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HistoryCache:
    """Per-layer history keys/values of U users and where their target item sits.

    keys, values: one [U, H, L, d] tensor per layer; key_bias_U11L: float [U, 1, 1, L], 0 for
    real history keys and -inf for padding; target_slot_U: int64 [U], the target's item slot.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    key_bias_U11L: torch.Tensor
    target_slot_U: torch.Tensor

    @property
    def num_users(self) -> int:
        return int(self.target_slot_U.shape[0])


def cached_attention(
    q_UBHMd: torch.Tensor,
    k_UBHMd: torch.Tensor,
    v_UBHMd: torch.Tensor,
    keys_UHLd: torch.Tensor,
    values_UHLd: torch.Tensor,
    key_bias_U11L: torch.Tensor,
    own_bias_MM: torch.Tensor,
) -> torch.Tensor:
    """Softmax attention of each beam's M target queries over [its user's history ; its item].

    One softmax over both key sets, computed as two score blocks: the history block is one
    batched matmul per user (all B beams' queries against the shared keys, nothing copied per
    beam); the own-item block is [M, M] per beam. `own_bias_MM` is 0 / -inf (causal inside the
    item, or all 0). Returns [U, B, H, M, d].
    """
    U, B, H, M, d = q_UBHMd.shape
    scale = 1.0 / math.sqrt(d)
    q_UHQd = q_UBHMd.permute(0, 2, 1, 3, 4).reshape(U, H, B * M, d)
    history_UHQL = torch.matmul(q_UHQd, keys_UHLd.transpose(-1, -2)) * scale + key_bias_U11L
    L = keys_UHLd.shape[2]
    history_UBHML = history_UHQL.view(U, H, B, M, L).permute(0, 2, 1, 3, 4)
    own_UBHMM = torch.matmul(q_UBHMd, k_UBHMd.transpose(-1, -2)) * scale + own_bias_MM
    weights = torch.softmax(torch.cat([history_UBHML, own_UBHMM], dim=-1).float(), dim=-1)
    weights = weights.to(v_UBHMd.dtype)
    p_history_UHQL = weights[..., :L].permute(0, 2, 1, 3, 4).reshape(U, H, B * M, L)
    from_history = torch.matmul(p_history_UHQL, values_UHLd).view(U, H, B, M, d)
    from_own = torch.matmul(weights[..., L:], v_UBHMd)
    return from_history.permute(0, 2, 1, 3, 4) + from_own
