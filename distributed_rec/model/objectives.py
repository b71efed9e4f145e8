"""LLaDA-Rec and MaskGR training objectives: masking + model passes + weighted losses (SPEC §6).

Legend: B batch, L tokens, M positions per item, K codes, D width, N masked positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distributed_rec.config import ModelConfig
from distributed_rec.model import losses, masking
from distributed_rec.model.losses import Normalisers
from distributed_rec.model.transformer import MaskPredictor
from distributed_rec.model.vocab import mask_token
from distributed_rec.model.whole_sequence import whole_sequence_terms

__all__ = [
    "Normalisers",
    "TrainingObjective",
    "query_loss_sums",
    "masked_pass",
    "objective_terms",
]


def masked_pass(
    model: MaskPredictor, tokens_BL: torch.Tensor, is_pad_BL: torch.Tensor, mask_BL: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass with `mask_BL` tokens replaced by MASK.

    Returns (logits_NK, codes_N, rows_N) at the masked positions (row-major order); the output
    head is computed only there.
    """
    M, K = model.num_heads, model.codebook_size
    codes_BL = losses.token_codes(tokens_BL, M, K)
    inputs_BL = tokens_BL.masked_fill(mask_BL, mask_token(M, K))
    hidden_BLD = model.encode(inputs_BL, is_pad_BL)
    rows, cols = mask_BL.nonzero(as_tuple=True)
    logits_NK = model.head_at(hidden_BLD[rows, cols], cols % M)
    return logits_NK, codes_BL[rows, cols], rows


def query_loss_sums(
    model: MaskPredictor, tokens_BL: torch.Tensor, is_pad_BL: torch.Tensor, names: list[str]
) -> dict[str, torch.Tensor]:
    """All-items cross-entropies of each sample's target (the last M tokens), presented fully
    masked, summed over the B samples, by name: "dense" (the dense head) and "catalog" (the
    generative catalogue scores), from one forward pass."""
    M = model.num_heads
    B, L = tokens_BL.shape
    inputs_BL = tokens_BL.clone()
    inputs_BL[:, L - M :] = mask_token(M, model.codebook_size)
    hidden_BMD = model.encode(inputs_BL, is_pad_BL, last_only=M)
    targets = tokens_BL[:, L - M :].reshape(B, 1, M)
    heads = {
        "dense": lambda: (model.dense_scores(hidden_BMD), model.dense.rows_of(targets)),
        "catalog": lambda: (model.catalog_scores(hidden_BMD), model.catalog.rows_of(targets)),
    }
    sums = {}
    for name in names:
        scores_BI, rows_B1 = heads[name]()
        sums[name] = F.cross_entropy(scores_BI, rows_B1[:, 0], reduction="sum")
    return sums


def objective_terms(
    model: MaskPredictor,
    tokens_BL: torch.Tensor,
    is_pad_BL: torch.Tensor,
    noise: masking.MaskNoise,
    model_cfg: ModelConfig,
    norm: Normalisers,
) -> dict[str, torch.Tensor]:
    """Loss terms of one micro-batch, each already divided by the global-batch normaliser.

    Returns {"loss": weighted total} plus "item" and "history" (llada) or "maskgr" terms,
    "dense" with the dense head and "catalog" with the catalogue loss; a term whose weight is 0 is skipped (no forward pass). Summing "loss" over all micro-batches of all
    processes gives the global-batch loss.
    """
    M, L = model.num_heads, tokens_BL.shape[1]
    terms: dict[str, torch.Tensor] = {}
    total = tokens_BL.new_zeros((), dtype=torch.float32)
    if model_cfg.objective == "maskgr":
        mask_BL, rate_BL = masking.sequence_mask(noise, is_pad_BL)
        logits_NK, codes_N, _ = masked_pass(model, tokens_BL, is_pad_BL, mask_BL)
        loss_sum = losses.rate_weighted_loss_sum(logits_NK, codes_N, rate_BL[mask_BL])
        terms["maskgr"] = loss_sum / norm.real_tokens
        total = total + terms["maskgr"]
    if model_cfg.objective == "llada" and model_cfg.item_loss_weight > 0:
        mask_BL = masking.next_item_mask(noise, L, M)
        logits_NK, codes_N, rows_N = masked_pass(model, tokens_BL, is_pad_BL, mask_BL)
        loss_sum = losses.next_item_loss_sum(logits_NK, codes_N, noise.k_G[rows_N], M)
        terms["item"] = loss_sum / norm.target_tokens
        total = total + model_cfg.item_loss_weight * terms["item"]
    if model_cfg.objective == "llada" and model_cfg.history_loss_weight > 0:
        mask_BL, rate_BL = masking.history_mask(noise, is_pad_BL, M)
        logits_NK, codes_N, _ = masked_pass(model, tokens_BL, is_pad_BL, mask_BL)
        loss_sum = losses.rate_weighted_loss_sum(logits_NK, codes_N, rate_BL[mask_BL])
        terms["history"] = loss_sum / norm.real_tokens
        total = total + model_cfg.history_loss_weight * terms["history"]
    weights = {"dense": model_cfg.dense_loss_weight, "catalog": model_cfg.catalog_loss_weight}
    names = [name for name, weight in weights.items() if weight > 0]
    if names:
        for name, loss_sum in query_loss_sums(model, tokens_BL, is_pad_BL, names).items():
            terms[name] = loss_sum / (norm.target_tokens / M)
            total = total + weights[name] * terms[name]
    terms["loss"] = total
    return terms


class TrainingObjective(torch.nn.Module):
    """The module handed to DeepSpeed: wraps the predictor so every parameter is used inside
    `forward` (ZeRO-3 gathers parameters per module call).

    Per prefix: forward(tokens_BL, is_pad_BL, MaskNoise, norm); with `whole_sequence`:
    forward(windows_BNM, lengths_B, WindowNoise, norm) (`whole_sequence.py`).
    """

    def __init__(
        self, model: MaskPredictor, model_cfg: ModelConfig, whole_sequence: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.model_cfg = model_cfg
        self.whole_sequence = whole_sequence

    def forward(
        self,
        tokens: torch.Tensor,
        pad_or_lengths: torch.Tensor,
        noise: masking.MaskNoise | masking.WindowNoise,
        norm: Normalisers,
    ) -> dict[str, torch.Tensor]:
        terms = whole_sequence_terms if self.whole_sequence else objective_terms
        return terms(self.model, tokens, pad_or_lengths, noise, self.model_cfg, norm)
