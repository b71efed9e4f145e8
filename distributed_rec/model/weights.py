"""The best mask-predictor weights (DIR/train/best/model.pt): saved by training, loaded for
decoding (evaluation, benchmarks). Plain state dict of tensors, loaded with
`torch.load(weights_only=True)`."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import JobConfig
from distributed_rec.embed.stage import read_embeddings
from distributed_rec.errors import ArtifactError
from distributed_rec.model.dense import DenseItems
from distributed_rec.model.transformer import MaskPredictor
from distributed_rec.semantic_ids.id_table import SemanticIdTable


def read_dense_items(paths: RunPaths, table: SemanticIdTable) -> DenseItems:
    """The table's codes and, row for row, the embed stage's text embeddings of its items."""
    if not paths.item_embeddings.exists():
        raise ArtifactError(
            f"{paths.item_embeddings} is missing: the dense head (model.dense_loss_weight > 0) "
            "needs the embed stage's item embeddings"
        )
    item_ids, vectors = read_embeddings(paths.item_embeddings)
    row = np.full(int(max(item_ids.max(), table.item_ids.max())) + 1, -1, dtype=np.int64)
    row[item_ids] = np.arange(len(item_ids))
    rows = row[table.item_ids]
    if (rows < 0).any():
        missing = int(table.item_ids[rows < 0][0])
        raise ArtifactError(f"{paths.item_embeddings} has no embedding for item {missing}")
    return DenseItems(codes_IM=table.codes, text_IE=vectors[rows])


def dense_items_for(config: JobConfig, table: SemanticIdTable) -> DenseItems | None:
    """`read_dense_items` of the run when the model has a dense head, else None."""
    if config.model.dense_loss_weight == 0:
        return None
    return read_dense_items(RunPaths.of(config.run_dir), table)


def save_best_model(model: torch.nn.Module, path: Path) -> None:
    """Write the state dict (CPU tensors) through a temporary file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    tmp.replace(path)


def load_best_model(config: JobConfig, device: str = "cpu") -> MaskPredictor:
    """The trained mask predictor in eval mode, shaped by `config` and the semantic-ID table."""
    paths = RunPaths.of(config.run_dir)
    table = SemanticIdTable.read(paths.semantic_ids)
    path = paths.best_model
    if not path.exists():
        raise ArtifactError(f"{path} is missing: run the train stage first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise ArtifactError(
            f"{path} is damaged or not a weights-only state dict ({type(err).__name__}); "
            "re-run the train stage"
        ) from None
    if not isinstance(state, dict):
        raise ArtifactError(f"{path} does not hold a state dict; re-run the train stage")
    from distributed_rec.model import build_mask_predictor

    model = build_mask_predictor(
        config.model,
        table.num_heads,
        table.codebook_size,
        config.data.max_history + 1,
        dense_items_for(config, table),
        table.codes,
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ArtifactError(
            f"{path} does not match the configured model (model.*, data.max_history, semantic "
            f"IDs M={table.num_heads} K={table.codebook_size}): {first}"
        ) from None
    return model.to(device).eval()
