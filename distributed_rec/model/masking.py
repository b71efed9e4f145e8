"""Masking schedules of the training objectives (SPEC §6), as pure functions of drawn noise.

Noise is drawn once per global batch from an explicit `torch.Generator`, one row per sample, laid
out from the END of the sequence (column 0 of the item-level arrays is the target item), so a
sample's masks depend only on its row of noise, never on padding, micro-batch or rank.

Legend: G samples (or windows) drawn for, B batch, L tokens, I or N items, S max items,
M positions, K codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MaskNoise:
    """Per-sample random draws; row g belongs to sample g of the global batch.

    k_G: int64 [G] in 1..M, target tokens masked by the next-item objective.
    order_GM: float [G, M], the k smallest mark the masked target positions.
    j_GS: int64 [G, S] in 0..M, per-item history mask rate r = j / M (column 0 = target item).
    token_u_GT: float [G, S*M] in [0, 1), per-token uniforms (column 0 = last token).
    t_G: float [G] in (0, 1], MaskGR mask rate.
    """

    k_G: torch.Tensor
    order_GM: torch.Tensor
    j_GS: torch.Tensor
    token_u_GT: torch.Tensor
    t_G: torch.Tensor

    def rows(self, index: np.ndarray | torch.Tensor) -> MaskNoise:
        index = torch.as_tensor(index, dtype=torch.long)
        return MaskNoise(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def draw_noise(
    generator: torch.Generator, num_samples: int, max_items: int, num_heads: int
) -> MaskNoise:
    """Every random number the objectives need for `num_samples` sequences."""
    G, S, M = num_samples, max_items, num_heads
    return MaskNoise(
        k_G=torch.randint(1, M + 1, (G,), generator=generator),
        order_GM=torch.rand(G, M, generator=generator),
        j_GS=torch.randint(0, M + 1, (G, S), generator=generator),
        token_u_GT=torch.rand(G, S * M, generator=generator),
        t_G=1.0 - torch.rand(G, generator=generator),
    )


def noise_generator(*key: int) -> torch.Generator:
    """A torch.Generator seeded from an integer key such as (seed, epoch, step)."""
    state = np.random.SeedSequence(list(key)).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def token_uniforms(noise: MaskNoise, length: int) -> torch.Tensor:
    """float [B, L]: the per-token uniforms aligned to a left-padded length L."""
    return noise.token_u_GT[:, :length].flip(1)


def item_rate_per_token(noise: MaskNoise, length: int, num_heads: int) -> torch.Tensor:
    """float [B, L]: history mask rate j/M of the item each position belongs to."""
    num_items = length // num_heads
    rate_BI = noise.j_GS[:, :num_items].flip(1).float() / num_heads
    return rate_BI.repeat_interleave(num_heads, dim=1)


def next_item_mask(noise: MaskNoise, length: int, num_heads: int) -> torch.Tensor:
    """bool [B, L]: exactly k_b of the last M positions (the target item) are masked."""
    rank_BM = noise.order_GM.argsort(dim=1).argsort(dim=1)
    target_BM = rank_BM < noise.k_G[:, None]
    mask_BL = torch.zeros(target_BM.shape[0], length, dtype=torch.bool)
    mask_BL[:, length - num_heads :] = target_BM
    return mask_BL


def history_mask(
    noise: MaskNoise, is_pad_BL: torch.Tensor, num_heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask_BL, rate_BL): each real token masked with its item's rate r = j/M."""
    length = is_pad_BL.shape[1]
    rate_BL = item_rate_per_token(noise, length, num_heads)
    mask_BL = (token_uniforms(noise, length) < rate_BL) & ~is_pad_BL
    return mask_BL, rate_BL


def sequence_mask(noise: MaskNoise, is_pad_BL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask_BL, rate_BL): MaskGR, every real token masked with its sequence's rate t."""
    length = is_pad_BL.shape[1]
    rate_BL = noise.t_G[:, None].expand(-1, length)
    mask_BL = (token_uniforms(noise, length) < rate_BL) & ~is_pad_BL
    return mask_BL, rate_BL


# --- whole-sequence training: one noise draw per item of a window ----------------------------


@dataclass(frozen=True)
class WindowNoise:
    """Per-window random draws of whole-sequence training; row g belongs to window g.

    Item-level arrays are laid out from the START of the window (column i = item i), so a
    window's masks depend only on its row, never on padding, micro-batch or rank.
    k_GS: int64 [G, S] in 1..M, target tokens of item i masked by its next-item draw.
    order_GSM: float [G, S, M], the k smallest mark them.
    j_GS: int64 [G, S] in 0..M, item i's history mask rate r = j / M.
    token_u_GSM: float [G, S, M] in [0, 1), per-token uniforms of the history (or MaskGR) draw.
    t_G: float [G] in (0, 1], MaskGR mask rate of the window.
    """

    k_GS: torch.Tensor
    order_GSM: torch.Tensor
    j_GS: torch.Tensor
    token_u_GSM: torch.Tensor
    t_G: torch.Tensor

    def rows(self, index: np.ndarray | torch.Tensor) -> WindowNoise:
        index = torch.as_tensor(index, dtype=torch.long)
        return WindowNoise(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def draw_window_noise(
    generator: torch.Generator, num_windows: int, max_items: int, num_heads: int
) -> WindowNoise:
    """Every random number whole-sequence training needs for `num_windows` windows."""
    G, S, M = num_windows, max_items, num_heads
    return WindowNoise(
        k_GS=torch.randint(1, M + 1, (G, S), generator=generator),
        order_GSM=torch.rand(G, S, M, generator=generator),
        j_GS=torch.randint(0, M + 1, (G, S), generator=generator),
        token_u_GSM=torch.rand(G, S, M, generator=generator),
        t_G=1.0 - torch.rand(G, generator=generator),
    )


def window_next_item_mask(noise: WindowNoise, num_items: int) -> torch.Tensor:
    """bool [B, N, M]: exactly k_{b,i} of item i's M tokens masked (the next-item draw)."""
    order_BNM = noise.order_GSM[:, :num_items]
    rank_BNM = order_BNM.argsort(dim=-1).argsort(dim=-1)
    return rank_BNM < noise.k_GS[:, :num_items, None]


def window_history_mask(
    noise: WindowNoise, is_real_BN: torch.Tensor, num_heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, rate) bool/float [B, N, M]: each real token masked with its item's rate j/M."""
    num_items = is_real_BN.shape[1]
    rate_BNM = (noise.j_GS[:, :num_items].float() / num_heads)[..., None].expand(-1, -1, num_heads)
    mask_BNM = (noise.token_u_GSM[:, :num_items] < rate_BNM) & is_real_BN[..., None]
    return mask_BNM, rate_BNM


def window_sequence_mask(
    noise: WindowNoise, is_real_BN: torch.Tensor, num_heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, rate) [B, N, M]: MaskGR, every real token masked with its window's rate t."""
    B, N = is_real_BN.shape
    rate_BNM = noise.t_G[:, None, None].expand(B, N, num_heads)
    mask_BNM = (noise.token_u_GSM[:, :N] < rate_BNM) & is_real_BN[..., None]
    return mask_BNM, rate_BNM
