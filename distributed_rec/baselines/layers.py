"""The causal pre-norm Transformer shared by the baselines (kept apart from the mask predictor,
whose blocks evolve with its attention variants).

Legend: B batch, L tokens (left-padded), D model width, H attention heads, M positions, K codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(is_pad_BL: torch.Tensor) -> torch.Tensor:
    """bool [B, 1, L, L]: query q may attend real keys k <= q, and always itself.

    The diagonal keeps padded queries (whose outputs are never used) from having no key at all.
    """
    L = is_pad_BL.shape[1]
    positions = torch.arange(L, device=is_pad_BL.device)
    allowed_BLL = (positions[None, :] <= positions[:, None])[None] & ~is_pad_BL[:, None, :]
    return (allowed_BLL | torch.eye(L, dtype=torch.bool, device=is_pad_BL.device))[:, None]


class CausalBlock(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP of width 4 D."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x_BLD: torch.Tensor, allowed_B1LL: torch.Tensor) -> torch.Tensor:
        B, L, D = x_BLD.shape
        qkv = self.qkv(self.attn_norm(x_BLD)).view(B, L, 3, self.num_heads, D // self.num_heads)
        q_BHLd, k_BHLd, v_BHLd = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        y_BHLd = F.scaled_dot_product_attention(
            q_BHLd,
            k_BHLd,
            v_BHLd,
            attn_mask=allowed_B1LL,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        x_BLD = x_BLD + self.dropout(self.out(y_BHLd.transpose(1, 2).reshape(B, L, D)))
        return x_BLD + self.dropout(self.mlp(self.mlp_norm(x_BLD)))


class CausalTransformer(nn.Module):
    """A stack of causal blocks and a final LayerNorm over embedded, left-padded tokens."""

    def __init__(self, dim: int, num_layers: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} attention heads")
        self.blocks = nn.ModuleList(CausalBlock(dim, num_heads, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x_BLD: torch.Tensor, is_pad_BL: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D]; position l sees only real positions <= l."""
        allowed_B1LL = causal_mask(is_pad_BL)
        for block in self.blocks:
            x_BLD = block(x_BLD, allowed_B1LL)
        return self.norm(x_BLD)


class CodebookHeads(nn.Module):
    """One output layer per codebook: weight [M, K, D], bias [M, K]."""

    def __init__(self, num_heads: int, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_heads, codebook_size, dim) * 0.02)
        self.bias = nn.Parameter(torch.zeros(num_heads, codebook_size))

    def all_positions(self, hidden_BMD: torch.Tensor) -> torch.Tensor:
        """Logits [B, M, K]: row j is scored by codebook j's layer."""
        return torch.einsum("bmd,mkd->bmk", hidden_BMD, self.weight) + self.bias

    def one_position(self, hidden_BD: torch.Tensor, position: int) -> torch.Tensor:
        """Logits [B, K] of codebook `position`."""
        return hidden_BD @ self.weight[position].T + self.bias[position]
