"""Collaborative item vectors from the training split: a factorisation of item co-occurrence.

Two items co-occur when they are at most `window` positions apart in one user's training
sequence (the train windows of prepare: the valid and test targets are never in them). The
counts, symmetric and weighted 1 / distance, become positive pointwise mutual information
(PPMI, with the context distribution smoothed by 0.75 as in word2vec), and a truncated SVD of
that sparse matrix gives each item the vector U_d * sqrt(S_d). Items with similar co-occurrence
profiles -- bought after the same things -- get nearby vectors, whatever their text says.

Items that never occur in the training windows get the zero vector (counted by the caller).

Legend: N items, W windows, P co-occurring pairs, d output dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Sequences:
    """Item sequences stored flat: sequence w is `items[offsets[w]:offsets[w + 1]]` (item rows
    0..N-1 of the semantic-ID table, not raw ids)."""

    offsets: np.ndarray
    items: np.ndarray


def cooccurrence(sequences: Sequences, num_items: int, window: int) -> sp.csr_matrix:
    """float64 [N, N] symmetric counts: each pair of a sequence at distance 1..`window` adds
    1 / distance to both (i, j) and (j, i); the diagonal holds nothing."""
    if window < 1:
        raise ValueError(f"co-occurrence window {window} must be >= 1")
    lengths = np.diff(sequences.offsets)
    sequence_of = np.repeat(np.arange(len(lengths)), lengths)
    rows, cols, weights = [], [], []
    for distance in range(1, window + 1):
        left = np.arange(len(sequences.items) - distance)
        same = sequence_of[left] == sequence_of[left + distance]
        left = left[same]
        a, b = sequences.items[left], sequences.items[left + distance]
        distinct = a != b
        a, b = a[distinct], b[distinct]
        rows += [a, b]
        cols += [b, a]
        weights.append(np.full(2 * len(a), 1.0 / distance))
    matrix = sp.coo_matrix(
        (
            np.concatenate(weights) if weights else np.zeros(0),
            (np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)),
        ),
        shape=(num_items, num_items),
    )
    return matrix.tocsr()  # duplicate entries are summed


def ppmi(counts: sp.csr_matrix, smoothing: float = 0.75) -> sp.csr_matrix:
    """max(0, log(p(i, j) / (p(i) p_s(j)))) on the non-zero entries of symmetric `counts`, with
    the context marginal smoothed: p_s(j) proportional to count(j) ** smoothing."""
    counts = counts.tocoo()
    total = counts.sum()
    if total <= 0:
        return sp.csr_matrix(counts.shape)
    row_sums = np.asarray(counts.sum(axis=1)).ravel()
    smoothed = row_sums**smoothing
    p_context = smoothed / smoothed.sum()
    p_item = row_sums / total
    pmi = np.log(counts.data / total) - np.log(p_item[counts.row]) - np.log(p_context[counts.col])
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape)


def truncated_svd(
    matrix: sp.csr_matrix, dim: int, seed: int, power_iters: int = 4, oversample: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(U [N, dim], S [dim]) of a randomized SVD (Halko et al. 2011) of `matrix` [N, N']: a seeded
    Gaussian sketch, `power_iters` rounds of QR-stabilised power iteration, an exact SVD of the
    small projected matrix. Signs are fixed (largest loading of each column positive)."""
    n = matrix.shape[0]
    width = min(dim + oversample, min(matrix.shape))
    rng = np.random.default_rng(seed)
    basis = matrix @ rng.standard_normal((matrix.shape[1], width))
    basis, _ = np.linalg.qr(basis)
    for _ in range(power_iters):
        basis, _ = np.linalg.qr(matrix.T @ basis)
        basis, _ = np.linalg.qr(matrix @ basis)
    small = (matrix.T @ basis).T  # [width, N']
    u_small, singular, _ = np.linalg.svd(small, full_matrices=False)
    u = (basis @ u_small)[:, :dim]
    singular = singular[:dim]
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    signs[signs == 0] = 1.0
    if u.shape[1] < dim:  # fewer directions than asked (tiny catalogues): pad with zeros
        u = np.pad(u, ((0, 0), (0, dim - u.shape[1])))
        singular = np.pad(singular, (0, dim - len(singular)))
        signs = np.pad(signs, (0, dim - len(signs)), constant_values=1.0)
    assert u.shape == (n, dim)
    return u * signs, singular


def collaborative_vectors(
    sequences: Sequences, num_items: int, dim: int, window: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [N, dim] vectors U_d * sqrt(S_d) of the PPMI co-occurrence matrix, bool [N]
    whether the item occurs in `sequences` at all; the vector is 0 where it does not)."""
    if dim < 1:
        raise ValueError(f"collaborative dimension {dim} must be >= 1")
    seen = np.zeros(num_items, dtype=bool)
    seen[sequences.items] = True
    u, singular = truncated_svd(ppmi(cooccurrence(sequences, num_items, window)), dim, seed)
    vectors = (u * np.sqrt(singular)).astype(np.float32)
    vectors[~seen] = 0.0
    return vectors, seen


def fuse_features(
    text_ND: np.ndarray | None, collaborative_NC: np.ndarray | None, collaborative_share: float
) -> np.ndarray:
    """float32 [N, D + C]: each block centred and scaled to total variance 1, then weighted so the
    collaborative block carries `collaborative_share` of the total (text the rest). A missing
    block is left out (its share must then be 0 or 1 accordingly)."""
    blocks, shares = [], []
    if text_ND is not None:
        blocks.append(text_ND)
        shares.append(1.0 - collaborative_share)
    if collaborative_NC is not None:
        blocks.append(collaborative_NC)
        shares.append(collaborative_share if text_ND is not None else 1.0)
    if not blocks:
        raise ValueError("no item features to tokenize")
    fused = []
    for block, share in zip(blocks, shares, strict=True):
        x = block.astype(np.float64)
        x = x - x.mean(axis=0)
        total = float(x.var(axis=0).sum())
        fused.append(x * np.sqrt(share / total) if total > 0 else x)
    return np.concatenate(fused, axis=1).astype(np.float32)
