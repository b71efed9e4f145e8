"""SASRec (Kang & McAuley, 2018): a causal Transformer over item ids, scored against all items.

The input is the left-padded history; the hidden state of its last position scores every item
through the (tied) item embedding. Training uses one cross-entropy term per sample (the train
split already holds every prefix of each user's sequence, so every transition is seen once).

Legend: B batch, L history length, D model width, N items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distributed_rec.baselines.layers import CausalTransformer


def pad_histories(histories: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    """int64 [B, L]: histories left-padded with `pad` to the longest one."""
    longest = max((len(h) for h in histories), default=0)
    batch = np.full((len(histories), longest), pad, dtype=np.int64)
    for row, history in enumerate(histories):
        if len(history):
            batch[row, longest - len(history) :] = history
    return torch.from_numpy(batch)


class SASRec(nn.Module):
    """Item embedding + position embedding (counted from the end) -> causal pre-norm blocks."""

    def __init__(
        self,
        num_items: int,
        max_history: int,
        d_model: int,
        num_layers: int,
        num_attention_heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.num_items = num_items
        self.max_history = max_history
        self.pad = num_items
        self.item_embedding = nn.Embedding(num_items + 1, d_model, padding_idx=num_items)
        self.position_embedding = nn.Embedding(max_history, d_model)
        self.dropout = nn.Dropout(dropout)
        self.transformer = CausalTransformer(d_model, num_layers, num_attention_heads, dropout)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, history_BL: torch.Tensor) -> torch.Tensor:
        """Logits [B, N] of the next item after each (left-padded) history."""
        B, L = history_BL.shape
        if self.max_history < L:
            raise ValueError(f"history length {L} exceeds max_history={self.max_history}")
        is_pad_BL = history_BL == self.pad
        from_end_L = torch.arange(L - 1, -1, -1, device=history_BL.device)
        x_BLD = self.item_embedding(history_BL) + self.position_embedding(from_end_L)
        x_BLD = self.dropout(x_BLD)
        last_BD = self.transformer(x_BLD, is_pad_BL)[:, -1]
        return last_BD @ self.item_embedding.weight[: self.num_items].T

    def loss(self, sequences: Sequence[np.ndarray]) -> torch.Tensor:
        """Mean cross-entropy of each sequence's last item given the items before it."""
        device = self.item_embedding.weight.device
        history_BL = pad_histories([s[:-1] for s in sequences], self.pad).to(device)
        targets_B = torch.as_tensor(np.array([s[-1] for s in sequences]), device=device)
        return F.cross_entropy(self(history_BL), targets_B)

    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence[int]], top_k: int) -> np.ndarray:
        """int64 [B, top_k]: best-scored items, best first, excluding items of the history.

        Prepare drops repeated (user, item) events, so a target is never in its own history.
        """
        device = self.item_embedding.weight.device
        history_BL = pad_histories(histories, self.pad).to(device)
        logits_BN = self(history_BL).float()
        seen_BN1 = torch.zeros(len(histories), self.num_items + 1, dtype=torch.bool, device=device)
        seen_BN1.scatter_(1, history_BL, True)  # the pad column soaks up padding
        logits_BN = logits_BN.masked_fill(seen_BN1[:, : self.num_items], -torch.inf)
        k = min(top_k, self.num_items)
        ranked = np.full((len(histories), top_k), -1, dtype=np.int64)
        scores_Bk, items_Bk = logits_BN.topk(k, dim=1)
        items = items_Bk.cpu().numpy()
        items[~torch.isfinite(scores_Bk).cpu().numpy()] = -1
        ranked[:, :k] = items
        return ranked
