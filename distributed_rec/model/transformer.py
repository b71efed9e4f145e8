"""The bidirectional mask predictor (SPEC §5): a pre-norm Transformer encoder over semantic-ID tokens.

Legend: B batch, L tokens (= M * items), I items, M positions per item, K codes per position,
D model width, H attention heads, V vocabulary (M*K + 2), N selected positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distributed_rec.model.attention import attention_mask
from distributed_rec.model.vocab import vocab_size


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (computed in float32), with a learned gain."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).type_as(x) * self.weight


class SwiGLU(nn.Module):
    """Gated feed-forward: down(silu(gate(x)) * up(x)), then dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x_BLD).chunk(2, dim=-1)
        return self.dropout(self.down(F.silu(gate) * up))


class SelfAttention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`, then dropout."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x_BLD: torch.Tensor, bias_B1LL: torch.Tensor, query_last: int = 0
    ) -> torch.Tensor:
        """`bias_B1LL` is the additive attention mask (0 where allowed, -inf elsewhere).

        With `query_last` = Q > 0 only the last Q positions attend (keys and values are still all
        L positions) and the output is [B, Q, D]; otherwise [B, L, D].
        """
        B, L, D = x_BLD.shape
        H = self.num_heads
        if query_last:
            weight_q, weight_kv = self.qkv.weight.split([D, 2 * D])
            q_BHQd = F.linear(x_BLD[:, -query_last:], weight_q)
            q_BHQd = q_BHQd.view(B, query_last, H, D // H).transpose(1, 2)
            kv = F.linear(x_BLD, weight_kv).view(B, L, 2, H, D // H)
            k_BHLd, v_BHLd = kv.permute(2, 0, 3, 1, 4).unbind(0)
            bias_B1LL = bias_B1LL[:, :, -query_last:]
        else:
            qkv = self.qkv(x_BLD).view(B, L, 3, H, D // H)
            q_BHQd, k_BHLd, v_BHLd = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(
            q_BHQd, k_BHLd, v_BHLd, attn_mask=bias_B1LL.to(q_BHQd.dtype)
        )
        return self.dropout(self.out(y.transpose(1, 2).reshape(B, -1, D)))


class Block(nn.Module):
    """Pre-norm Transformer layer: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout)
        self.ffn_norm = RMSNorm(dim)
        self.ffn = SwiGLU(dim, ffn_dim, dropout)

    def forward(
        self, x_BLD: torch.Tensor, bias_B1LL: torch.Tensor, query_last: int = 0
    ) -> torch.Tensor:
        """[B, L, D] -> [B, L, D], or only the last `query_last` positions [B, Q, D]."""
        attended = self.attn(self.attn_norm(x_BLD), bias_B1LL, query_last)
        x_BLD = (x_BLD[:, -query_last:] if query_last else x_BLD) + attended
        return x_BLD + self.ffn(self.ffn_norm(x_BLD))


class PositionHeads(nn.Module):
    """Position-specific output heads: weight [M, K, D]; position l scores codebook l % M."""

    def __init__(self, num_heads: int, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.codebook_size = codebook_size
        self.weight = nn.Parameter(torch.empty(num_heads, codebook_size, dim))
        self.bias = nn.Parameter(torch.zeros(num_heads, codebook_size))

    def forward(self, hidden: torch.Tensor, codebook_N: torch.Tensor | None = None) -> torch.Tensor:
        """hidden [B, L, D] (L a multiple of M) -> [B, L, K]; or, given `codebook_N`, selected
        positions hidden [N, D] -> [N, K] scored with each one's codebook."""
        if codebook_N is None:
            B, L, D = hidden.shape
            h_BIMD = hidden.view(B, L // self.num_heads, self.num_heads, D)
            logits_BIMK = torch.einsum("bimd,mkd->bimk", h_BIMD, self.weight) + self.bias
            return logits_BIMK.reshape(B, L, self.codebook_size)
        logits_NK = hidden.new_empty(hidden.shape[0], self.codebook_size)
        for m in range(self.num_heads):
            rows = (codebook_N == m).nonzero(as_tuple=True)[0]
            if rows.numel():
                scores = hidden[rows] @ self.weight[m].T + self.bias[m]
                logits_NK = logits_NK.index_put((rows,), scores)
        return logits_NK


class MaskPredictor(nn.Module):
    """Predicts the code at every position from a partly masked token sequence.

    Input layout (see `vocab.py`): left-padded, token position l holds codebook l % M, the target
    item is the last M positions. The item-slot embedding counts items from the end (target slot
    0, the most recent history item slot 1, ...), so left padding does not shift it.
    """

    def __init__(
        self,
        num_heads: int,
        codebook_size: int,
        max_items: int,
        d_model: int,
        num_layers: int,
        num_attention_heads: int,
        ffn_dim: int,
        dropout: float,
        attention: str = "bidirectional",
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.codebook_size = codebook_size
        self.max_items = max_items
        self.attention = attention
        self.token_embedding = nn.Embedding(vocab_size(num_heads, codebook_size), d_model)
        self.position_embedding = nn.Embedding(num_heads, d_model)
        self.slot_embedding = nn.Embedding(max_items, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, num_attention_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.norm = RMSNorm(d_model)
        self.heads = PositionHeads(num_heads, codebook_size, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.normal_(self.heads.weight, std=0.02)
        nn.init.zeros_(self.heads.bias)

    def encode(
        self, tokens_BL: torch.Tensor, is_pad_BL: torch.Tensor, last_only: int = 0
    ) -> torch.Tensor:
        """Final hidden states, float [B, L, D]; with `last_only` = Q, those of the last Q
        positions only, [B, Q, D] (the last layer then computes nothing else)."""
        B, L = tokens_BL.shape
        M = self.num_heads
        if L % M:
            raise ValueError(f"sequence length {L} is not a multiple of M={M}")
        if self.max_items < L // M:
            raise ValueError(f"{L // M} items exceed the model's max_items={self.max_items}")
        positions = torch.arange(L, device=tokens_BL.device)
        slots = (L - 1 - positions) // M
        x_BLD = (
            self.token_embedding(tokens_BL)
            + self.position_embedding(positions % M)
            + self.slot_embedding(slots)
        )
        x_BLD = self.dropout(x_BLD)
        allowed_B1LL = attention_mask(self.attention, is_pad_BL, M)
        bias_B1LL = torch.zeros(allowed_B1LL.shape, dtype=x_BLD.dtype, device=x_BLD.device)
        bias_B1LL = bias_B1LL.masked_fill(~allowed_B1LL, float("-inf"))
        for depth, block in enumerate(self.blocks):
            is_last = depth == len(self.blocks) - 1
            x_BLD = block(x_BLD, bias_B1LL, last_only if is_last else 0)
        return self.norm(x_BLD)

    def head(self, hidden_BLD: torch.Tensor) -> torch.Tensor:
        """Scores of the K codes of each position's codebook: [B, L, K]."""
        return self.heads(hidden_BLD)

    def head_at(self, hidden_ND: torch.Tensor, codebook_N: torch.Tensor) -> torch.Tensor:
        """Scores [N, K] of selected positions; `codebook_N` is each position's codebook."""
        return self.heads(hidden_ND, codebook_N)

    def forward(self, tokens_BL: torch.Tensor, is_pad_BL: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, K]: position l scores the K codes of codebook l % M."""
        return self.head(self.encode(tokens_BL, is_pad_BL))

    def target_logits(self, tokens_BL: torch.Tensor, is_pad_BL: torch.Tensor) -> torch.Tensor:
        """float32 logits [B, M, K] of the target item (the last M positions) only."""
        hidden_BMD = self.encode(tokens_BL, is_pad_BL, last_only=self.num_heads)
        return self.head(hidden_BMD).float()
