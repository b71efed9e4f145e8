"""Tokenizers without a neural network: residual k-means and OPQ + product quantisation (FAISS).

Legend: N items, D embedding dimension, M heads, K codes per head, d_s = D'/M sub-vector size.
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from distributed_rec.config import TokenizerConfig
from distributed_rec.semantic_ids.base import (
    kmeans,
    single_threaded_faiss,
    squared_distances,
    to_tensors,
)


class ResidualKMeansTokenizer:
    """RQ-KMeans: head m is k-means over the residuals left by heads 0..m-1."""

    def __init__(self, config: TokenizerConfig) -> None:
        self.config = config
        self.num_heads = config.num_heads
        self.codebook_size = config.codebook_size
        self.codebooks: np.ndarray | None = None  # float32 [M, K, D]
        self.history: dict[str, Any] = {"epochs": 0}

    def fit(self, embeddings: np.ndarray) -> ResidualKMeansTokenizer:
        residual = embeddings.astype(np.float32)
        books = []
        for m in range(self.num_heads):
            book = kmeans(
                residual, self.codebook_size, self.config.kmeans_iters, self.config.seed + m
            )
            codes = squared_distances(residual, book).argmin(1)
            residual = residual - book[codes]
            books.append(book)
        self.codebooks = np.stack(books)
        return self

    def _walk(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """codes int64 [N, M] and distances float32 [N, M, K] along the residual path."""
        assert self.codebooks is not None, "fit the tokenizer first"
        residual = embeddings.astype(np.float32)
        codes, dists = [], []
        for book in self.codebooks:
            d = squared_distances(residual, book)
            c = d.argmin(1)
            residual = residual - book[c]
            codes.append(c)
            dists.append(d)
        return np.stack(codes, 1).astype(np.int64), np.stack(dists, 1)

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        return self._walk(embeddings)[0]

    def code_distances(self, embeddings: np.ndarray) -> np.ndarray:
        return self._walk(embeddings)[1]

    def reconstruct(self, embeddings: np.ndarray) -> np.ndarray:
        assert self.codebooks is not None, "fit the tokenizer first"
        codes = self.encode(embeddings)
        return sum(self.codebooks[m][codes[:, m]] for m in range(self.num_heads))

    def state_dict(self) -> dict[str, Any]:
        return to_tensors({"method": "rqkmeans", "codebooks": self.codebooks})


class OPQTokenizer:
    """OPQ rotation then product quantisation: head m quantises the m-th rotated sub-vector."""

    def __init__(self, config: TokenizerConfig) -> None:
        nbits = int(math.log2(config.codebook_size))
        if 2**nbits != config.codebook_size:
            raise ValueError(
                f"tokenize.codebook_size={config.codebook_size}: the opq tokenizer (FAISS product "
                "quantiser) needs a power of two"
            )
        self.config = config
        self.nbits = nbits
        self.num_heads = config.num_heads
        self.codebook_size = config.codebook_size
        self.rotation: np.ndarray | None = None  # float32 [D', D]
        self.centroids: np.ndarray | None = None  # float32 [M, K, d_s]
        self.history: dict[str, Any] = {"epochs": 0}

    def fit(self, embeddings: np.ndarray) -> OPQTokenizer:
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        n, d = x.shape
        m = self.num_heads
        if n < self.codebook_size:
            raise ValueError(f"opq needs at least K={self.codebook_size} items, got {n}")
        d_out = math.ceil(d / m) * m
        opq = faiss.OPQMatrix(d, m, d_out)
        opq.pq = faiss.ProductQuantizer(d_out, m, self.nbits)
        opq.pq.cp.seed = self.config.seed
        opq.niter = self.config.kmeans_iters
        opq.max_train_points = n
        pq = faiss.ProductQuantizer(d_out, m, self.nbits)
        pq.cp.seed = self.config.seed
        pq.cp.niter = self.config.kmeans_iters
        pq.cp.max_points_per_centroid = max(256, n // self.codebook_size + 1)
        pq.cp.min_points_per_centroid = 1
        opq.pq.cp.min_points_per_centroid = 1
        with single_threaded_faiss():
            opq.train(x)
            rotated = opq.apply(x)
            pq.train(rotated)
        self.rotation = faiss.vector_to_array(opq.A).reshape(d_out, d).astype(np.float32)
        self.centroids = faiss.vector_to_array(pq.centroids).reshape(
            m, self.codebook_size, d_out // m
        )
        return self

    def _subvectors(self, embeddings: np.ndarray) -> np.ndarray:
        assert self.rotation is not None, "fit the tokenizer first"
        rotated = embeddings.astype(np.float32) @ self.rotation.T
        return rotated.reshape(len(embeddings), self.num_heads, -1)

    def code_distances(self, embeddings: np.ndarray) -> np.ndarray:
        assert self.centroids is not None, "fit the tokenizer first"
        sub = self._subvectors(embeddings)
        return np.stack(
            [squared_distances(sub[:, m], self.centroids[m]) for m in range(self.num_heads)], 1
        )

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        return self.code_distances(embeddings).argmin(2).astype(np.int64)

    def reconstruct(self, embeddings: np.ndarray) -> np.ndarray:
        assert self.centroids is not None and self.rotation is not None
        codes = self.encode(embeddings)
        rotated = np.concatenate(
            [self.centroids[m][codes[:, m]] for m in range(self.num_heads)], axis=1
        )
        return rotated @ self.rotation  # the rotation is orthonormal: its transpose inverts it

    def state_dict(self) -> dict[str, Any]:
        return to_tensors({"method": "opq", "rotation": self.rotation, "centroids": self.centroids})
