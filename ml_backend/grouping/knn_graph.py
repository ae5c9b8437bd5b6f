"""k-nearest-neighbour lists by blockwise matrix products: O(n·k) memory, never an n×n matrix.

A season of 20,000 lines would need 1.6 GB for one dense float32 similarity matrix; a block of
``block`` rows at a time needs ``block · n`` floats and keeps only each row's top k.
"""

from __future__ import annotations

import numpy as np

ABSENT = -1
"""Neighbour index of an empty slot (fewer than k other lines with a vector)."""


def knn(vectors: np.ndarray, k: int, *, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k most similar other rows by dot product (cosine for unit rows).

    vectors : (n, d) float32; a zero row has no vector: it gets no neighbours and is nobody's.
    Returns (indices (n, k) int64, similarities (n, k) float32), most similar first; empty slots
    hold index `ABSENT` and similarity -inf.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    indices = np.full((n, k), ABSENT, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    present = np.flatnonzero(np.abs(vectors).sum(axis=1) > 0)
    m = len(present)
    if m < 2 or k < 1:
        return indices, sims
    base = vectors[present]
    take = min(k, m - 1)
    for start in range(0, m, block):
        rows = present[start : start + block]
        block_sims = base[start : start + block] @ base.T
        block_sims[np.arange(len(rows)), np.arange(start, start + len(rows))] = -np.inf
        top = np.argpartition(-block_sims, take - 1, axis=1)[:, :take]
        top_sims = np.take_along_axis(block_sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        indices[rows, :take] = present[np.take_along_axis(top, order, axis=1)]
        sims[rows, :take] = np.take_along_axis(top_sims, order, axis=1)
    return indices, sims


def edges_from_knn(indices: np.ndarray) -> np.ndarray:
    """The undirected edges of a kNN graph: (m, 2) int64 pairs with i < j, each once, sorted."""
    n, k = indices.shape
    source = np.repeat(np.arange(n, dtype=np.int64), k)
    target = indices.reshape(-1)
    keep = target != ABSENT
    pairs = np.stack([source[keep], target[keep]], axis=1)
    pairs.sort(axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return unique_pairs(pairs, n)


def unique_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    """Rows of (m, 2) int pairs (each i < j < n) once each, sorted; cheaper than axis=0 unique."""
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    codes = np.unique(pairs[:, 0].astype(np.int64) * n + pairs[:, 1])
    return np.stack([codes // n, codes % n], axis=1)


def row_dot(a: np.ndarray, b: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(m,) float32 dot products of rows ``a[pairs[:, 0]]`` and ``b[pairs[:, 1]]``, in chunks."""
    out = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), 65536):
        chunk = pairs[start : start + 65536]
        out[start : start + len(chunk)] = np.einsum("ij,ij->i", a[chunk[:, 0]], b[chunk[:, 1]])
    return out
