"""SASRec (Kang & McAuley, 2018): a causal Transformer over item ids, scored against all items.

The input is the left-padded history; the hidden state of its last position scores every item
through the (tied) item embedding. Two ways to train:
- per prefix (`whole_sequence=False`): one cross-entropy term per sample (the train split holds
  every prefix of each user's sequence, so every transition is seen once); positions count from
  the end of the history (the last item is position 0);
- whole sequence (`whole_sequence=True`, SASRec's own objective): one causal pass over a
  training window scores the next item at every position, so every item after the window's
  first is a target; positions count from the first item (of the window, or of the history at
  inference), so that a position means the same in training and decoding.

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
        whole_sequence: bool = False,
    ) -> None:
        super().__init__()
        self.whole_sequence = whole_sequence
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

    def _positions(self, is_pad_BL: torch.Tensor) -> torch.Tensor:
        """int64 [B, L] position ids (see the module doc); padding gets position 0."""
        L = is_pad_BL.shape[1]
        index_L = torch.arange(L, device=is_pad_BL.device)
        if not self.whole_sequence:
            return (L - 1 - index_L).expand(is_pad_BL.shape)
        first_real_B = torch.where(is_pad_BL.all(1), L, (~is_pad_BL).int().argmax(1))
        return (index_L[None, :] - first_real_B[:, None]).clamp(min=0)

    def hidden(self, items_BL: torch.Tensor) -> torch.Tensor:
        """Final hidden states [B, L, D] of padded item sequences (pad = num_items)."""
        L = items_BL.shape[1]
        if self.max_history < L:
            raise ValueError(f"history length {L} exceeds max_history={self.max_history}")
        is_pad_BL = items_BL == self.pad
        x_BLD = self.item_embedding(items_BL) + self.position_embedding(self._positions(is_pad_BL))
        return self.transformer(self.dropout(x_BLD), is_pad_BL)

    def forward(self, history_BL: torch.Tensor) -> torch.Tensor:
        """Logits [B, N] of the next item after each (left-padded) history."""
        last_BD = self.hidden(history_BL)[:, -1]
        return last_BD @ self.item_embedding.weight[: self.num_items].T

    def loss(self, sequences: Sequence[np.ndarray]) -> torch.Tensor:
        """Mean cross-entropy over the batch's next-item targets: each sequence's last item
        given the items before it, or, whole-sequence, every item after a window's first."""
        device = self.item_embedding.weight.device
        if not self.whole_sequence:
            history_BL = pad_histories([s[:-1] for s in sequences], self.pad).to(device)
            targets_B = torch.as_tensor(np.array([s[-1] for s in sequences]), device=device)
            return F.cross_entropy(self(history_BL), targets_B)
        longest = max(len(s) for s in sequences)
        windows_BN = np.full((len(sequences), longest), self.pad, dtype=np.int64)
        for row, sequence in enumerate(sequences):
            windows_BN[row, : len(sequence)] = sequence  # right-padded: positions from 0
        windows_BN = torch.from_numpy(windows_BN).to(device)
        hidden_BLD = self.hidden(windows_BN[:, :-1])
        targets_BL = windows_BN[:, 1:]
        real = targets_BL != self.pad
        logits_TN = hidden_BLD[real] @ self.item_embedding.weight[: self.num_items].T
        return F.cross_entropy(logits_TN, targets_BL[real])

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
