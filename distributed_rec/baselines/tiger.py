"""TIGER-style generative retrieval (Rajput et al., 2023) as a causal decoder over semantic IDs.

A sequence is the history items' codes (M tokens each, token m*K + c as in `model/vocab.py`),
then BOS, then the target's codes; the decoder predicts the target's M codes left to right,
target position j through its own output head (codebook j). Position ids are counted relative
to BOS, so the history looks the same while training and at every decoding step.

Legend: B batch, L tokens, H history tokens, M positions per item, K codes, D model width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distributed_rec.baselines.layers import CausalTransformer, CodebookHeads
from distributed_rec.baselines.tiger_search import PrefixTrie, constrained_beam_search
from distributed_rec.model.vocab import codes_to_tokens, pad_token
from distributed_rec.semantic_ids.id_table import SemanticIdTable


class TigerDecoder(nn.Module):
    """Causal pre-norm Transformer over [history tokens, BOS, target prefix]."""

    def __init__(
        self,
        num_heads: int,
        codebook_size: int,
        max_history: int,
        d_model: int,
        num_layers: int,
        num_attention_heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.codebook_size = codebook_size
        self.pad = pad_token(num_heads, codebook_size)
        self.bos = self.pad + 1
        self.bos_position = max_history * num_heads
        self.token_embedding = nn.Embedding(self.pad + 2, d_model)
        self.position_embedding = nn.Embedding(self.bos_position + num_heads, d_model)
        self.dropout = nn.Dropout(dropout)
        self.transformer = CausalTransformer(d_model, num_layers, num_attention_heads, dropout)
        self.heads = CodebookHeads(num_heads, codebook_size, d_model)
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

    def hidden(self, history_BH: torch.Tensor, prefix_BT: torch.Tensor) -> torch.Tensor:
        """Final hidden states [B, 1 + T, D] of BOS and the T target-prefix tokens.

        `history_BH` holds left-padded history tokens, `prefix_BT` the target's first T codes.
        """
        B, H = history_BH.shape
        T = prefix_BT.shape[1]
        if self.bos_position < H:
            raise ValueError(f"{H} history tokens exceed the model's {self.bos_position}")
        offsets_T = torch.arange(T, device=prefix_BT.device) * self.codebook_size
        bos_B1 = torch.full((B, 1), self.bos, dtype=torch.int64, device=history_BH.device)
        tokens_BL = torch.cat([history_BH, bos_B1, prefix_BT + offsets_T], dim=1)
        positions_L = torch.arange(tokens_BL.shape[1], device=tokens_BL.device)
        x_BLD = self.token_embedding(tokens_BL) + self.position_embedding(
            positions_L + self.bos_position - H
        )
        x_BLD = self.dropout(x_BLD)
        return self.transformer(x_BLD, tokens_BL == self.pad)[:, H:]

    def target_logits(self, history_BH: torch.Tensor, target_BM: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, M, K]: row j scores code j given the codes before it."""
        return self.heads.all_positions(self.hidden(history_BH, target_BM[:, :-1])).float()

    def next_logits(self, history_BH: torch.Tensor, prefix_BT: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] of code T (the next one) after the prefix [B, T]."""
        last_BD = self.hidden(history_BH, prefix_BT)[:, -1]
        return self.heads.one_position(last_BD, prefix_BT.shape[1]).float()


class TigerRecommender(nn.Module):
    """The decoder plus the item -> code map and the prefix trie of real items' IDs."""

    def __init__(
        self, table: SemanticIdTable, num_items: int, decoder: TigerDecoder, beam_size: int
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.beam_size = beam_size
        self._codes = table.dense_codes(num_items)  # int64 [num_items, M], -1: no ID
        self.register_buffer("item_codes", torch.from_numpy(self._codes))
        self._table = table
        self.trie = PrefixTrie(table)

    def history_tokens(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """int64 [B, H]: the histories' code tokens, left-padded with PAD."""
        codes = [self._codes[np.asarray(h, dtype=np.int64)] for h in histories]
        if any((c < 0).any() for c in codes):
            raise ValueError("a history item has no semantic ID in the table")
        tokens = [codes_to_tokens(c, self.decoder.codebook_size) for c in codes]
        longest = max((t.size for t in tokens), default=0)
        batch = np.full((len(histories), longest), self.decoder.pad, dtype=np.int64)
        for row, t in enumerate(tokens):
            batch[row, longest - t.size :] = t.reshape(-1)
        return torch.from_numpy(batch).to(self.item_codes.device)

    def loss(self, sequences: Sequence[np.ndarray]) -> torch.Tensor:
        """Mean cross-entropy over the M codes of each sequence's last item given the rest."""
        history_BH = self.history_tokens([s[:-1] for s in sequences])
        targets_B = torch.as_tensor(np.array([s[-1] for s in sequences]))
        target_BM = self.item_codes[targets_B.to(self.item_codes.device)]
        logits_BMK = self.decoder.target_logits(history_BH, target_BM)
        return F.cross_entropy(logits_BMK.flatten(0, 1), target_BM.flatten())

    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence[int]], top_k: int) -> np.ndarray:
        """int64 [B, top_k]: distinct real items by joint log-probability, -1 past the beams.

        Items of a user's own history are skipped (as the other models and the popularity floor
        do); the beams' best items outside the history fill the list. With beam_size at least
        top_k + history length this is the exact top-k of the non-history items the search finds.
        """
        if self.trie.device != self.item_codes.device:
            self.trie = PrefixTrie(self._table, self.item_codes.device)
        items_BR, _ = constrained_beam_search(
            self.decoder, self.history_tokens(histories), self.trie, self.beam_size
        )
        ranked = np.full((len(histories), top_k), -1, dtype=np.int64)
        for row, (items, history) in enumerate(zip(items_BR.cpu().numpy(), histories, strict=True)):
            keep = items[(items >= 0) & ~np.isin(items, np.asarray(history, dtype=np.int64))]
            ranked[row, : min(top_k, len(keep))] = keep[:top_k]
        return ranked
