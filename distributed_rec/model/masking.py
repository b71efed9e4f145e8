"""Masking schedules of the training objectives (SPEC §6), as pure functions of drawn noise.

Noise is drawn once per global batch from an explicit `torch.Generator`, one row per sample, laid
out from the END of the sequence (column 0 of the item-level arrays is the target item), so a
sample's masks depend only on its row of noise, never on padding, micro-batch or rank.

Legend: G samples drawn for, B batch, L tokens, I items, S max items, M positions, K codes.
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
