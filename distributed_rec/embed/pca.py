"""Whitened PCA of item embeddings, fitted on the items of the training split (SPEC §3).

Legend: N items, D input dimension, P output dimension.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from distributed_rec.errors import ArtifactError


def training_item_ids(train_split: Path) -> np.ndarray:
    """Sorted distinct item ids occurring in the training split (histories and targets)."""
    files = sorted(train_split.glob("*.parquet")) if train_split.is_dir() else []
    if not files:
        raise ArtifactError(
            f"{train_split} has no Parquet files: run the prepare stage first "
            "(embed.pca_dim > 0 fits the PCA on the training items)"
        )
    table = pads.dataset([str(f) for f in files], format="parquet").to_table(
        columns=["history", "target"]
    )
    history = pc.list_flatten(table["history"]).to_numpy()
    target = table["target"].to_numpy()
    return np.unique(np.concatenate([history, target]).astype(np.int64))


def fit_pca(vectors: np.ndarray, dim: int, whiten: bool) -> dict[str, np.ndarray]:
    """Mean [D], components [P, D] and scale [P] of a PCA fitted on `vectors` [N, D]."""
    n, d = vectors.shape
    if dim > min(n, d):
        raise ValueError(f"embed.pca_dim={dim} exceeds min(#training items={n}, dim={d})")
    x = vectors.astype(np.float64)
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:dim]
    # deterministic sign: the largest-magnitude loading of each component is positive
    signs = np.sign(components[np.arange(dim), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    std = singular[:dim] / np.sqrt(max(n - 1, 1))
    scale = 1.0 / np.maximum(std, 1e-12) if whiten else np.ones(dim)
    return {"mean": mean, "components": components, "scale": scale}


def apply_pca(vectors: np.ndarray, pca: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [N, P] projection of `vectors` [N, D]."""
    projected = (vectors.astype(np.float64) - pca["mean"]) @ pca["components"].T
    return (projected * pca["scale"]).astype(np.float32)
