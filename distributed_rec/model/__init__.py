"""The mask predictor (SPEC §5), its masking schedules and objectives (SPEC §6)."""

from __future__ import annotations

import numpy as np

from distributed_rec.config import ModelConfig
from distributed_rec.model.catalog import ItemCodes
from distributed_rec.model.dense import DenseItems, DenseRetrieval
from distributed_rec.model.transformer import MaskPredictor

__all__ = ["DenseItems", "MaskPredictor", "build_mask_predictor", "count_parameters"]


def build_mask_predictor(
    model_cfg: ModelConfig,
    num_heads: int,
    codebook_size: int,
    max_items: int,
    dense_items: DenseItems | None = None,
    item_codes: np.ndarray | None = None,
) -> MaskPredictor:
    """A freshly initialised mask predictor; `max_items` = data.max_history + 1 (the target).

    With model.dense_loss_weight > 0 it has the dense head over `dense_items` (required then);
    with model.catalog_loss_weight > 0 the catalogue of `item_codes` [I, M] (the semantic-ID
    table's codes, required then).
    """
    catalog = None
    if model_cfg.catalog_loss_weight > 0:
        if item_codes is None:
            raise ValueError("model.catalog_loss_weight > 0 needs the items' codes")
        catalog = ItemCodes(item_codes, codebook_size)
    dense = None
    if model_cfg.dense_loss_weight > 0:
        if dense_items is None:
            raise ValueError("model.dense_loss_weight > 0 needs the items' codes and embeddings")
        dense = DenseRetrieval(
            dense_items,
            codebook_size,
            model_cfg.d_model,
            temperature=model_cfg.dense_temperature,
            learned_keys=model_cfg.dense_learned_keys,
            text_input=model_cfg.dense_text_input,
        )
    return MaskPredictor(
        num_heads=num_heads,
        codebook_size=codebook_size,
        max_items=max_items,
        d_model=model_cfg.d_model,
        num_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_attention_heads,
        ffn_dim=model_cfg.ffn_dim,
        dropout=model_cfg.dropout,
        attention=model_cfg.attention,
        dense=dense,
        catalog=catalog,
    )


def count_parameters(model: MaskPredictor) -> int:
    return sum(p.numel() for p in model.parameters())
