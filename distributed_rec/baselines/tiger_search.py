"""Autoregressive beam search over semantic IDs, constrained to real items by a prefix trie.

The trie stores, for every prefix length t, the distinct t-code prefixes of the items' IDs
(sorted mixed-radix keys) and which codes may follow each, so a batch of beams finds its allowed
next codes with one binary search. Beams score a full ID by its joint log-probability
sum_t log p(c_t | history, c_<t) under the model (softmax over all K codes).

Legend: B users, R beams per user, T filled prefix length, M positions, K codes, N items.
"""

from __future__ import annotations

from typing import Protocol

import torch

from distributed_rec.semantic_ids.id_table import SemanticIdTable

_MAX_KEY = 2**62


class NextCodeModel(Protocol):
    num_heads: int
    codebook_size: int

    def next_logits(self, history_BH: torch.Tensor, prefix_BT: torch.Tensor) -> torch.Tensor: ...


class PrefixTrie:
    """Per prefix length t: sorted prefix keys [P_t] and allowed next codes, bool [P_t, K]."""

    def __init__(self, table: SemanticIdTable, device: str | torch.device = "cpu") -> None:
        if table.num_items == 0:
            raise ValueError("the semantic ID table has no items")
        K, M = table.codebook_size, table.num_heads
        if K**M >= _MAX_KEY:
            raise ValueError(f"K^M = {K}^{M} does not fit an int64 prefix key")
        self.codebook_size, self.num_heads = K, M
        self.device = torch.device(device)
        codes_NM = torch.as_tensor(table.codes, dtype=torch.int64, device=self.device)
        self.keys: list[torch.Tensor] = []
        self.allowed: list[torch.Tensor] = []
        for t in range(M):
            keys_P, row_N = torch.unique(self.key(codes_NM[:, :t]), return_inverse=True)
            allowed_PK = torch.zeros(len(keys_P), K, dtype=torch.bool, device=self.device)
            allowed_PK[row_N, codes_NM[:, t]] = True
            self.keys.append(keys_P)
            self.allowed.append(allowed_PK)
        self.full_keys, order = torch.sort(self.key(codes_NM))
        self.item_ids = torch.as_tensor(table.item_ids, device=self.device)[order]

    def key(self, prefix_RT: torch.Tensor) -> torch.Tensor:
        """int64 [R]: mixed-radix key of each prefix (base K, first code most significant)."""
        T = prefix_RT.shape[1]
        radix_T = self.codebook_size ** torch.arange(T - 1, -1, -1, device=prefix_RT.device)
        return (prefix_RT * radix_T).sum(-1)

    def _lookup(self, keys_P: torch.Tensor, query_R: torch.Tensor) -> tuple[torch.Tensor, ...]:
        row_R = torch.searchsorted(keys_P, query_R).clamp(max=len(keys_P) - 1)
        return row_R, keys_P[row_R] == query_R

    def allowed_next(self, prefix_RT: torch.Tensor) -> torch.Tensor:
        """bool [R, K]: codes that extend each prefix towards some item (none for a dead one)."""
        T = prefix_RT.shape[1]
        row_R, found_R = self._lookup(self.keys[T], self.key(prefix_RT))
        return self.allowed[T][row_R] & found_R[:, None]

    def items_of(self, codes_RM: torch.Tensor) -> torch.Tensor:
        """int64 [R]: the item of each complete ID, -1 where no item has it."""
        row_R, found_R = self._lookup(self.full_keys, self.key(codes_RM))
        return torch.where(found_R, self.item_ids[row_R], -1)


@torch.no_grad()
def constrained_beam_search(
    model: NextCodeModel, history_BH: torch.Tensor, trie: PrefixTrie, beam_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top `beam_size` complete IDs per user, decoded left to right, each a real item.

    `history_BH` holds the users' left-padded history tokens. Returns items_BR (int64, distinct
    per row, -1 for unfilled slots when fewer real items exist) and their joint log-probabilities
    scores_BR (float32, descending, -inf for unfilled slots).
    """
    B = history_BH.shape[0]
    K, M = trie.codebook_size, trie.num_heads
    device = history_BH.device
    prefix_BRT = torch.zeros(B, 1, 0, dtype=torch.int64, device=device)
    score_BR = torch.zeros(B, 1, device=device)
    for t in range(M):
        R = prefix_BRT.shape[1]
        prefix_NT = prefix_BRT.reshape(B * R, t)
        logits_NK = model.next_logits(history_BH.repeat_interleave(R, dim=0), prefix_NT)
        logp_NK = torch.log_softmax(logits_NK, dim=-1)
        logp_NK = logp_NK.masked_fill(~trie.allowed_next(prefix_NT), -torch.inf)
        candidates_BC = (score_BR[:, :, None] + logp_NK.view(B, R, K)).view(B, R * K)
        score_BR, index_BR = candidates_BC.topk(min(beam_size, R * K), dim=1)
        parent_BR, code_BR = index_BR // K, index_BR % K
        parents_BRT = prefix_BRT.gather(1, parent_BR[:, :, None].expand(-1, -1, t))
        prefix_BRT = torch.cat([parents_BRT, code_BR[:, :, None]], dim=2)
    R = prefix_BRT.shape[1]
    items_BR = trie.items_of(prefix_BRT.reshape(B * R, M)).view(B, R)
    items_BR = torch.where(torch.isfinite(score_BR), items_BR, -1)
    return items_BR, score_BR
