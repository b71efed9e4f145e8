"""The interface every tokenizer implements, and the code statistics reported for all of them.

Legend: N items, D embedding dimension, M heads (positions), K codes per head.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np
import torch


@runtime_checkable
class Tokenizer(Protocol):
    """Maps item embeddings to M-tuples of codes.

    `fit(embeddings [N, D])` trains; `encode(embeddings [N, D]) -> int64 [N, M]` assigns each item
    its nearest codes; `code_distances(embeddings) -> float32 [N, M, K]` is the squared distance
    of each item's head-m input to every code of head m (given the item's codes at earlier heads
    for residual tokenizers), used to move colliding items to their next-nearest codes.
    `reconstruct(embeddings) -> float32 [N, D]` decodes the assigned codes; `state_dict()` holds
    tensors and plain values only (loadable with `torch.load(weights_only=True)`).
    """

    num_heads: int
    codebook_size: int
    history: dict[str, Any]

    def fit(self, embeddings: np.ndarray) -> Tokenizer: ...

    def encode(self, embeddings: np.ndarray) -> np.ndarray: ...

    def code_distances(self, embeddings: np.ndarray) -> np.ndarray: ...

    def reconstruct(self, embeddings: np.ndarray) -> np.ndarray: ...

    def state_dict(self) -> dict[str, Any]: ...


@contextlib.contextmanager
def single_threaded_faiss() -> Iterator[None]:
    """Run FAISS on one thread inside the block, for bit-identical results across runs."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def kmeans(vectors: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """float32 [k, d] FAISS k-means centroids of `vectors` [n, d] (deterministic for a seed)."""
    n, d = vectors.shape
    if n < k:
        raise ValueError(f"k-means needs at least K={k} vectors, got {n}: lower the codebook size")
    model = faiss.Kmeans(
        d,
        k,
        niter=iters,
        seed=seed,
        verbose=False,
        max_points_per_centroid=max(256, n // k + 1),
        min_points_per_centroid=1,
    )
    with single_threaded_faiss():
        model.train(np.ascontiguousarray(vectors, dtype=np.float32))
    return np.array(model.centroids, dtype=np.float32).reshape(k, d)


def squared_distances(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """float32 [n, K] squared L2 distances of `x` [n, d] to every row of `codebook` [K, d]."""
    x = x.astype(np.float32)
    codebook = codebook.astype(np.float32)
    d = (x * x).sum(1, keepdims=True) - 2.0 * x @ codebook.T + (codebook * codebook).sum(1)
    return np.maximum(d, 0.0)


def collision_rate(codes: np.ndarray) -> float:
    """Fraction of items whose M-tuple is shared with at least one other item."""
    if len(codes) == 0:
        return 0.0
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.reshape(-1)] > 1).mean())


def code_statistics(codes: np.ndarray, codebook_size: int) -> dict[str, list[float]]:
    """Per head: fraction of the K codes in use, and perplexity exp(entropy) of code frequencies."""
    usage, perplexity = [], []
    for m in range(codes.shape[1]):
        counts = np.bincount(codes[:, m], minlength=codebook_size).astype(np.float64)
        usage.append(float((counts > 0).mean()))
        p = counts[counts > 0] / counts.sum()
        perplexity.append(float(np.exp(-(p * np.log(p)).sum())))
    return {"codebook_usage": usage, "perplexity": perplexity}


def to_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """Numpy arrays -> torch tensors, recursively, for a weights-only checkpoint."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, dict):
            out[key] = to_tensors(value)
        else:
            out[key] = value
    return out
