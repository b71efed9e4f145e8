"""Whole-sequence training objective: the LLaDA-Rec (or MaskGR) loss of every item of a window
from one forward pass over the block-diffusion layout (`block_layout.py`).

How the per-prefix terms map onto it (docs/training.md, "Whole-sequence training"):
- L_item: item i >= 1 of a window gets its own next-item draw (k_i of its M tokens masked,
  weight M/k_i) and is predicted from the clean items before it: the per-prefix next-item loss
  of the prefix ending at i, every target of the window at once. Normaliser: the target tokens
  of the global batch (M per target), as before.
- lambda * L_his: under inter-item causal attention the history pass is itself block-causal, so
  the loss of item i's masked tokens depends only on items 0..i and their masks. The CONTEXT
  stream computes it once per item of the window (weight 1/r_i, normalised by the real tokens of
  the global batch), where the per-prefix version recomputed it, with fresh noise, in every
  prefix containing the item. lambda keeps its meaning: the weight of the mean history-token
  loss relative to the mean target-token loss; what changes is that each item of a window counts
  once instead of once per later prefix.
- MaskGR: one rate t per window, every real token masked with it, weight 1/t, in the CONTEXT
  stream alone (no TARGET, no CLEAN copy).
- Dense retrieval (model.dense_loss_weight > 0): item i >= 1 is also presented fully masked in
  the QUERY stream (attending the clean items before it, as decoding presents a target), and the
  dense head's all-items cross-entropy of its hidden states is summed per item; normaliser: the
  targets of the global batch (target tokens / M), as in the per-prefix objective.
- Catalogue loss (model.catalog_loss_weight > 0): from the same QUERY hidden states, the
  cross-entropy of the softmax over every item of its summed code logits (`catalog.py`), with
  the same normaliser.

Legend: B windows, N items (longest window), M positions, K codes, T layout tokens, D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distributed_rec.config import ModelConfig
from distributed_rec.model import masking
from distributed_rec.model.block_layout import (
    CLEAN,
    CONTEXT,
    QUERY,
    TARGET,
    BlockLayout,
    block_layout,
    layout_mask,
    stream_positions,
    stream_tokens,
)
from distributed_rec.model.losses import Normalisers
from distributed_rec.model.transformer import MaskPredictor
from distributed_rec.model.vocab import mask_token


def _streams(model_cfg: ModelConfig) -> tuple[int, ...]:
    streams = []
    if model_cfg.objective == "maskgr":
        streams.append(CONTEXT)
    elif model_cfg.item_loss_weight > 0:
        streams.append(TARGET)
    if model_cfg.objective != "maskgr" and model_cfg.history_loss_weight > 0:
        streams.append(CONTEXT)
    if model_cfg.dense_loss_weight > 0 or model_cfg.catalog_loss_weight > 0:
        streams.append(QUERY)
    if TARGET in streams or QUERY in streams:
        streams.append(CLEAN)
    return tuple(sorted(streams))


def per_item_losses(
    model: MaskPredictor,
    windows_BNM: torch.Tensor,
    lengths_B: torch.Tensor,
    noise: masking.WindowNoise,
    model_cfg: ModelConfig,
) -> dict[str, torch.Tensor]:
    """Loss sums per window item, float32 [B, N]: "item" (0 at item 0), "history" or "maskgr",
    and "dense" (0 at item 0) with the dense head.

    `windows_BNM` are the windows' tokens, right-padded with PAD; `lengths_B` their item counts.
    """
    B, N, M = windows_BNM.shape
    K = model.codebook_size
    device = windows_BNM.device
    is_real_BN = torch.arange(N, device=device)[None, :] < lengths_B[:, None]
    streams = _streams(model_cfg)
    masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if TARGET in streams:
        target_BNM = masking.window_next_item_mask(noise, N) & is_real_BN[..., None]
        target_BNM[:, 0] = False
        weight_BNM = (M / noise.k_GS[:, :N].float())[..., None].expand(B, N, M)
        masks[TARGET] = (target_BNM, weight_BNM)
    if CONTEXT in streams:
        schedule = (
            masking.window_sequence_mask
            if model_cfg.objective == "maskgr"
            else masking.window_history_mask
        )
        context_BNM, rate_BNM = schedule(noise, is_real_BN, M)
        masks[CONTEXT] = (context_BNM, 1.0 / rate_BNM)

    layout = block_layout(N, M, streams, device)
    allowed_B1TT, is_pad_BT = layout_mask(layout, lengths_B)
    mask_id = mask_token(M, K)
    tokens = {s: windows_BNM.masked_fill(m, mask_id) for s, (m, _) in masks.items()}
    tokens[CLEAN] = windows_BNM
    if QUERY in streams:
        tokens[QUERY] = windows_BNM.masked_fill(is_real_BN[..., None], mask_id)
    tokens_BT = stream_tokens(layout, tokens)
    slots_BT = layout.item_T[None, :].expand(B, -1)
    hidden_BTD = model.encode(tokens_BT, is_pad_BT, slots_BL=slots_BT, allowed_B1LL=allowed_B1TT)

    codes_BNM = windows_BNM - torch.arange(M, device=device) * K
    names = {TARGET: "item", CONTEXT: "maskgr" if model_cfg.objective == "maskgr" else "history"}
    sums: dict[str, torch.Tensor] = {}
    for stream, (mask_BNM, weight_BNM) in masks.items():
        rows, columns, items = stream_positions(layout, stream, mask_BNM)
        positions = columns % M
        logits_PK = model.head_at(hidden_BTD[rows, columns], positions)
        ce_P = F.cross_entropy(
            logits_PK.float(), codes_BNM[rows, items, positions], reduction="none"
        )
        weighted_P = ce_P * weight_BNM[rows, items, positions]
        sums_BN = torch.zeros(B, N, dtype=torch.float32, device=device)
        sums[names[stream]] = sums_BN.index_put((rows, items), weighted_P, accumulate=True)
    if QUERY in streams:
        sums.update(_query_sums(model, hidden_BTD, layout, windows_BNM, is_real_BN, model_cfg))
    return sums


def _query_sums(
    model: MaskPredictor,
    hidden_BTD: torch.Tensor,
    layout: BlockLayout,
    windows_BNM: torch.Tensor,
    is_real_BN: torch.Tensor,
    model_cfg: ModelConfig,
) -> dict[str, torch.Tensor]:
    """float32 [B, N] each: the all-items cross-entropies of each item >= 1 from its QUERY copy:
    "dense" (the dense head) and "catalog" (the generative catalogue scores), as configured."""
    B, N, M = windows_BNM.shape
    select_BNM = is_real_BN[..., None].expand(B, N, M).clone()
    select_BNM[:, 0] = False
    rows, columns, items = stream_positions(layout, QUERY, select_BNM)
    hidden_PMD = hidden_BTD[rows, columns].view(-1, M, hidden_BTD.shape[-1])
    rows_P, items_P = rows[::M], items[::M]
    targets = windows_BNM[rows_P, items_P][:, None]
    scorers = {}
    if model_cfg.dense_loss_weight > 0:
        scorers["dense"] = (model.dense_scores, model.dense.rows_of)
    if model_cfg.catalog_loss_weight > 0:
        scorers["catalog"] = (model.catalog_scores, model.catalog.rows_of)
    sums = {}
    for name, (scores, rows_of) in scorers.items():
        ce_P = F.cross_entropy(scores(hidden_PMD), rows_of(targets)[:, 0], reduction="none")
        sums_BN = torch.zeros(B, N, dtype=torch.float32, device=windows_BNM.device)
        sums[name] = sums_BN.index_put((rows_P, items_P), ce_P, accumulate=True)
    return sums


def whole_sequence_terms(
    model: MaskPredictor,
    windows_BNM: torch.Tensor,
    lengths_B: torch.Tensor,
    noise: masking.WindowNoise,
    model_cfg: ModelConfig,
    norm: Normalisers,
) -> dict[str, torch.Tensor]:
    """Loss terms of one micro-batch of windows, each divided by its global-batch normaliser.

    Same names and meaning as `objectives.objective_terms`: {"loss", "item", "history"} or
    {"loss", "maskgr"}; summing "loss" over every micro-batch of every process gives the loss
    of the global batch.
    """
    sums = per_item_losses(model, windows_BNM, lengths_B, noise, model_cfg)
    terms: dict[str, torch.Tensor] = {}
    total = windows_BNM.new_zeros((), dtype=torch.float32)
    if "maskgr" in sums:
        terms["maskgr"] = sums["maskgr"].sum() / norm.real_tokens
        total = total + terms["maskgr"]
    if "dense" in sums:
        terms["dense"] = sums["dense"].sum() / (norm.target_tokens / model.num_heads)
        total = total + model_cfg.dense_loss_weight * terms["dense"]
    if "catalog" in sums:
        terms["catalog"] = sums["catalog"].sum() / (norm.target_tokens / model.num_heads)
        total = total + model_cfg.catalog_loss_weight * terms["catalog"]
    if "item" in sums:
        terms["item"] = sums["item"].sum() / norm.target_tokens
        total = total + model_cfg.item_loss_weight * terms["item"]
    if "history" in sums:
        terms["history"] = sums["history"].sum() / norm.real_tokens
        total = total + model_cfg.history_loss_weight * terms["history"]
    terms["loss"] = total
    return terms
