"""Dense retrieval beside the mask predictor (MaskGR's extension): item text embeddings as an
extra input on known items, and a head that scores every item from a masked target.

- Input: an item whose M tokens are all real codes (a history item, or a target once fully
  known) adds a projection of its text embedding to its token embeddings, position m taking the
  m-th D-wide slice. An item with any MASK or PAD token adds nothing, so a target being decoded
  never sees its own text and training matches decoding.
- Output: the final hidden states of a fully masked target item, concatenated ([M*D]), are
  projected into the text-embedding space; an item's score is the cosine between that query and
  the item's key (its normalised text embedding, plus a learned per-item offset when
  `learned_keys`), divided by the temperature tau. Training takes the cross-entropy of a softmax
  over all items.

Item rows follow the semantic-ID table (row r is table.item_ids[r]); a token tuple is mapped to
its row by one `searchsorted` over the tuples' integer keys sum_m code_m * K^m.

Legend: B batch, L tokens, I items of the table, M positions, K codes, D width, E text width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distributed_rec.model.catalog import lookup_rows, tuple_keys


@dataclass(frozen=True)
class DenseItems:
    """What the dense head needs to know about the items: codes int64 [I, M] (rows of the
    semantic-ID table) and their text embeddings float32 [I, E], row for row."""

    codes_IM: np.ndarray
    text_IE: np.ndarray

    def __post_init__(self) -> None:
        if self.codes_IM.ndim != 2 or self.text_IE.ndim != 2:
            raise ValueError("codes must be [I, M] and text embeddings [I, E]")
        if len(self.codes_IM) != len(self.text_IE):
            raise ValueError(
                f"{len(self.codes_IM)} semantic IDs but {len(self.text_IE)} text embeddings"
            )


class DenseRetrieval(nn.Module):
    """Text-embedding input projection and the all-items retrieval head (see module doc)."""

    def __init__(
        self,
        items: DenseItems,
        codebook_size: int,
        d_model: int,
        temperature: float,
        learned_keys: bool,
        text_input: bool,
    ) -> None:
        super().__init__()
        num_items, M = items.codes_IM.shape
        text_dim = items.text_IE.shape[1]
        if M * np.log2(codebook_size) >= 63:
            raise ValueError(f"K={codebook_size}, M={M}: tuple keys overflow int64")
        self.num_heads, self.codebook_size, self.d_model = M, codebook_size, d_model
        self.temperature = temperature
        codes = torch.as_tensor(items.codes_IM, dtype=torch.int64)
        keys = tuple_keys(codes, codebook_size)
        order = torch.argsort(keys)
        self.register_buffer("sorted_keys_I", keys[order])
        self.register_buffer("row_of_sorted_I", order)
        text = F.normalize(torch.as_tensor(items.text_IE, dtype=torch.float32), dim=-1)
        self.register_buffer("text_IE", text)
        self.input_projection = nn.Linear(text_dim, M * d_model, bias=False) if text_input else None
        self.query_projection = nn.Linear(M * d_model, text_dim)
        self.key_offset = nn.Embedding(num_items, text_dim) if learned_keys else None

    @property
    def num_items(self) -> int:
        return int(self.text_IE.shape[0])

    def reset_parameters(self) -> None:
        if self.input_projection is not None:
            nn.init.normal_(self.input_projection.weight, std=0.02)
        nn.init.normal_(self.query_projection.weight, std=0.02)
        nn.init.zeros_(self.query_projection.bias)
        if self.key_offset is not None:
            nn.init.zeros_(self.key_offset.weight)

    def rows_of(self, tokens_BIM: torch.Tensor) -> torch.Tensor:
        """int64 [B, I]: the table row of each item whose M tokens are real codes, else -1."""
        return lookup_rows(tokens_BIM, self.sorted_keys_I, self.row_of_sorted_I, self.codebook_size)

    def input_embeddings(self, tokens_BL: torch.Tensor) -> torch.Tensor | None:
        """[B, L, D] to add to the token embeddings (zero on items not fully known), or None."""
        if self.input_projection is None:
            return None
        B, L = tokens_BL.shape
        M, D = self.num_heads, self.d_model
        rows_BI = self.rows_of(tokens_BL.view(B, L // M, M))
        known_BI = rows_BI >= 0
        text_BIE = self.text_IE[rows_BI.clamp(min=0)] * known_BI[..., None]
        projected = self.input_projection(text_BIE.to(self.input_projection.weight.dtype))
        return projected.view(B, L, D)

    def item_keys(self) -> torch.Tensor:
        """float32 [I, E], unit norm."""
        keys = self.text_IE
        if self.key_offset is not None:
            keys = keys + self.key_offset.weight.float()
        return F.normalize(keys, dim=-1)

    def scores(self, hidden_BMD: torch.Tensor) -> torch.Tensor:
        """float32 [B, I] logits of every item from a masked target's hidden states [B, M, D]."""
        B = hidden_BMD.shape[0]
        query_BE = self.query_projection(hidden_BMD.reshape(B, -1)).float()
        return F.normalize(query_BE, dim=-1) @ self.item_keys().T / self.temperature

    def loss_sum(self, hidden_BMD: torch.Tensor, target_rows_B: torch.Tensor) -> torch.Tensor:
        """Sum over the B targets of -log softmax(scores)[target row] (float32 scalar)."""
        return F.cross_entropy(self.scores(hidden_BMD), target_rows_B, reduction="sum")
