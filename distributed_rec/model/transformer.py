"""The bidirectional mask predictor (SPEC §5): a pre-norm Transformer encoder over semantic-ID tokens.

Legend: B batch, L tokens (= M * items), I items, M positions per item, K codes per position,
D model width, H attention heads, d head width, V vocabulary (M*K + 2), N selected positions;
in cached decoding U users and R beams per user.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distributed_rec.model.attention import (
    attention_mask,
    history_slots,
    sequence_slots,
    within_item_mask,
)
from distributed_rec.model.catalog import ItemCodes
from distributed_rec.model.dense import DenseRetrieval
from distributed_rec.model.kv_cache import HistoryCache, cached_attention
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

    def keys_values(self, x_BLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, H, L, d] of (normalised) inputs, as `forward` computes them."""
        B, L, D = x_BLD.shape
        kv = F.linear(x_BLD, self.qkv.weight[D:]).view(B, L, 2, self.num_heads, -1)
        keys, values = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return keys, values

    def forward_cached(
        self, x_URMD: torch.Tensor, cache: HistoryCache, layer: int, own_bias_MM: torch.Tensor
    ) -> torch.Tensor:
        """Target tokens [U, R, M, D] of every beam against the cached history: [U, R, M, D]."""
        U, R, M, D = x_URMD.shape
        H = self.num_heads
        qkv = self.qkv(x_URMD).view(U, R, M, 3, H, D // H).permute(3, 0, 1, 4, 2, 5)
        q_URHMd, k_URHMd, v_URHMd = qkv.unbind(0)
        y_URHMd = cached_attention(
            q_URHMd,
            k_URHMd,
            v_URHMd,
            cache.keys[layer],
            cache.values[layer],
            cache.key_bias_U11L.to(q_URHMd.dtype),
            own_bias_MM.to(q_URHMd.dtype),
        )
        return self.dropout(self.out(y_URHMd.transpose(2, 3).reshape(U, R, M, D)))

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

    def forward_cached(
        self, x_URMD: torch.Tensor, cache: HistoryCache, layer: int, own_bias_MM: torch.Tensor
    ) -> torch.Tensor:
        """[U, R, M, D] target tokens -> [U, R, M, D], attending to `cache` at `layer`."""
        x_URMD = x_URMD + self.attn.forward_cached(
            self.attn_norm(x_URMD), cache, layer, own_bias_MM
        )
        return x_URMD + self.ffn(self.ffn_norm(x_URMD))


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
    0, the most recent history item slot 1, ...), or from the first real item under
    inter-item causal attention (`attention.sequence_slots`); left padding shifts neither.

    With a `dense` module (MaskGR's dense retrieval, `dense.py`) every fully known item's text
    embedding is added to its token embeddings, and `dense_scores` scores every item from the
    hidden states of a fully masked target. With a `catalog` (`catalog.py`), `catalog_scores`
    scores every item by the sum of its code logits (the one-step beam score, up to a constant).
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
        dense: DenseRetrieval | None = None,
        catalog: ItemCodes | None = None,
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
        self.dense = dense
        self.catalog = catalog
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.normal_(self.heads.weight, std=0.02)
        nn.init.zeros_(self.heads.bias)
        if self.dense is not None:
            self.dense.reset_parameters()

    def embed(self, tokens_BL: torch.Tensor, slots_BL: torch.Tensor) -> torch.Tensor:
        """Token + position-in-item + item-slot embeddings [B, L, D] (before dropout)."""
        positions_L = torch.arange(tokens_BL.shape[-1], device=tokens_BL.device)
        x = (
            self.token_embedding(tokens_BL)
            + self.position_embedding(positions_L % self.num_heads)
            + self.slot_embedding(slots_BL)
        )
        if self.dense is not None:
            shape = tokens_BL.shape
            text = self.dense.input_embeddings(tokens_BL.reshape(-1, shape[-1]))
            if text is not None:
                x = x + text.view(*shape, -1).to(x.dtype)
        return x

    def encode(
        self,
        tokens_BL: torch.Tensor,
        is_pad_BL: torch.Tensor,
        last_only: int = 0,
        *,
        slots_BL: torch.Tensor | None = None,
        allowed_B1LL: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states, float [B, L, D]; with `last_only` = Q, those of the last Q
        positions only, [B, Q, D] (the last layer then computes nothing else).

        `slots_BL` and `allowed_B1LL` (bool attention mask) replace the ones the attention kind
        derives from the padding: the whole-sequence layout (`block_layout.py`) passes its own.
        """
        B, L = tokens_BL.shape
        M = self.num_heads
        if L % M:
            raise ValueError(f"sequence length {L} is not a multiple of M={M}")
        if slots_BL is None:
            if self.max_items < L // M:
                raise ValueError(f"{L // M} items exceed the model's max_items={self.max_items}")
            slots_BL = sequence_slots(self.attention, is_pad_BL, M)
        elif slots_BL.numel() and int(slots_BL.max()) >= self.max_items:
            raise ValueError(f"item slot {int(slots_BL.max())} >= max_items={self.max_items}")
        if allowed_B1LL is None:
            allowed_B1LL = attention_mask(self.attention, is_pad_BL, M)
        x_BLD = self.dropout(self.embed(tokens_BL, slots_BL))
        bias_B1LL = torch.zeros(allowed_B1LL.shape, dtype=x_BLD.dtype, device=x_BLD.device)
        bias_B1LL = bias_B1LL.masked_fill(~allowed_B1LL, float("-inf"))
        for depth, block in enumerate(self.blocks):
            is_last = depth == len(self.blocks) - 1
            x_BLD = block(x_BLD, bias_B1LL, last_only if is_last else 0)
        return self.norm(x_BLD)

    def encode_history(self, tokens_UL: torch.Tensor, is_pad_UL: torch.Tensor) -> HistoryCache:
        """Every layer's keys and values of left-padded histories (no target item appended).

        Exact only under attention where the history never attends the target
        (`config.HISTORY_CACHE_ATTENTION`); the last layer's outputs are never needed, so only its
        keys and values are computed.
        """
        U, L = tokens_UL.shape
        M = self.num_heads
        within_item_mask(self.attention, M, tokens_UL.device)  # raises for other attention
        if L % M:
            raise ValueError(f"history length {L} is not a multiple of M={M}")
        if self.max_items < L // M + 1:
            raise ValueError(f"{L // M + 1} items exceed the model's max_items={self.max_items}")
        slots_UL, target_slot_U = history_slots(self.attention, is_pad_UL, M)
        x_ULD = self.dropout(self.embed(tokens_UL, slots_UL))
        allowed_U1LL = attention_mask(self.attention, is_pad_UL, M)
        bias_U1LL = torch.zeros(allowed_U1LL.shape, dtype=x_ULD.dtype, device=x_ULD.device)
        bias_U1LL = bias_U1LL.masked_fill(~allowed_U1LL, float("-inf"))
        keys, values = [], []
        for depth, block in enumerate(self.blocks):
            k_UHLd, v_UHLd = block.attn.keys_values(block.attn_norm(x_ULD))
            keys.append(k_UHLd)
            values.append(v_UHLd)
            if depth < len(self.blocks) - 1:
                x_ULD = block(x_ULD, bias_U1LL)
        key_bias = torch.zeros(U, 1, 1, L, dtype=torch.float32, device=tokens_UL.device)
        key_bias = key_bias.masked_fill(is_pad_UL[:, None, None, :], float("-inf"))
        return HistoryCache(keys, values, key_bias, target_slot_U)

    def cached_target_logits(self, cache: HistoryCache, tokens_URM: torch.Tensor) -> torch.Tensor:
        """float32 logits [U, R, M, K] of R candidate targets per user, given its cached history.

        Equal (to float rounding) to `target_logits` of the history followed by each target.
        """
        U, R, M = tokens_URM.shape
        hidden_URMD = self.cached_target_hidden(cache, tokens_URM)
        return self.head(hidden_URMD.reshape(U * R, M, -1)).float().view(U, R, M, -1)

    def cached_target_hidden(self, cache: HistoryCache, tokens_URM: torch.Tensor) -> torch.Tensor:
        """Final hidden states [U, R, M, D] of R candidate targets per user (see
        `cached_target_logits`)."""
        U, R, M = tokens_URM.shape
        if cache.num_users != U or self.num_heads != M:
            raise ValueError(f"targets {tuple(tokens_URM.shape)} do not fit a cache of {U} users")
        slots_URM = cache.target_slot_U[:, None, None].expand(U, R, M)
        x_URMD = self.dropout(self.embed(tokens_URM, slots_URM))
        own_bias_MM = torch.zeros(M, M, dtype=torch.float32, device=tokens_URM.device)
        own_bias_MM = own_bias_MM.masked_fill(
            ~within_item_mask(self.attention, M, tokens_URM.device), float("-inf")
        )
        for depth, block in enumerate(self.blocks):
            x_URMD = block.forward_cached(x_URMD, cache, depth, own_bias_MM)
        return self.norm(x_URMD)

    def dense_scores(self, hidden_BMD: torch.Tensor) -> torch.Tensor:
        """float32 [B, I] retrieval logits of every item (table rows) from a fully masked
        target's hidden states [B, M, D]."""
        if self.dense is None:
            raise ValueError("this model has no dense retrieval head (model.dense_loss_weight=0)")
        return self.dense.scores(hidden_BMD)

    def catalog_scores(self, hidden_BMD: torch.Tensor) -> torch.Tensor:
        """float32 [B, I] generative scores of every item (table rows) from a fully masked
        target's hidden states [B, M, D]: sum_m of the item's code logit at position m."""
        if self.catalog is None:
            raise ValueError("this model has no catalogue (model.catalog_loss_weight=0)")
        return self.catalog.item_logits(self.head(hidden_BMD))

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
