"""The baselines of docs/architecture.md §5, run on the same embeddings as our method.

Each is a plain function on (num_lines, dim) L2-normalised vectors returning (num_lines,) labels,
-1 for a line it leaves unassigned (HDBSCAN's noise, or a line with no vector):

- `average_linkage`: agglomerative clustering, average linkage on cosine distance, cut at a
  distance. The prototype cut at 0.7 on voice; `tune_linkage_threshold` picks the cut that
  maximises mean edge F1 over training episodes instead;
- `knn_propagation`: the prototype's workflow: the first lines are labelled by hand
  (`first_lines`), every other line takes the label of its most similar labelled line;
- `spectral_clustering`: what diarization systems of the WeSpeaker / pyannote era do. Affinity =
  cosine similarity, pruned per row to its p most similar lines, symmetrised; the number of
  speakers is the largest eigengap of the graph Laplacian, then k-means on the first
  eigenvectors. p is chosen per episode by the normalised maximum eigengap (NME-SC, Park et al.
  2019), so nothing is tuned by hand;
- `hdbscan`: scikit-learn's HDBSCAN on the unit vectors (Euclidean distance on unit vectors
  orders pairs exactly as cosine distance does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

PROTOTYPE_THRESHOLD = 0.7
"""The prototype's cut: cosine *distance* 0.7 (similarity 0.3)."""
LINKAGE_THRESHOLDS = tuple(np.round(np.arange(0.05, 1.5001, 0.01), 2).tolist())
"""Cuts `tune_linkage_threshold` tries: cosine distance lies in [0, 2]."""
HAND_LABELLED_SHARE = 0.1
"""The prototype's KNN workflow: the first 10% of lines are labelled by hand."""


def cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """(n, n) float64 cosine distance of unit rows, clipped to [0, 2], zero diagonal."""
    vectors = np.asarray(vectors, dtype=np.float64)
    distances = np.clip(1.0 - vectors @ vectors.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    return distances


def _present(vectors: np.ndarray) -> np.ndarray:
    """(n,) bool: rows that hold a vector (zero rows are lines without one)."""
    return np.abs(np.asarray(vectors)).sum(axis=1) > 0


def _scatter(labels: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.full(len(present), -1, dtype=np.int64)
    out[present] = labels
    return out


# --------------------------------------------------------------------------- average linkage


def linkage_tree(vectors: np.ndarray) -> np.ndarray:
    """scipy linkage matrix of average-linkage clustering on cosine distance (rows present)."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    distances = cosine_distances(vectors)
    return linkage(squareform(distances, checks=False), method="average")


def cut_tree(tree: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) int labels 0.. of a linkage tree cut at a cosine distance."""
    from scipy.cluster.hierarchy import fcluster

    return fcluster(tree, t=threshold, criterion="distance").astype(np.int64) - 1


def average_linkage(vectors: np.ndarray, *, threshold: float = PROTOTYPE_THRESHOLD) -> np.ndarray:
    """(n,) labels of average-linkage clustering cut at cosine distance ``threshold``.

    vectors : (n, dim) float32 unit rows; zero rows come back -1.
    """
    present = _present(vectors)
    if present.sum() < 2:
        return _scatter(np.arange(int(present.sum())), present)
    return _scatter(cut_tree(linkage_tree(vectors[present]), threshold), present)


@dataclass(frozen=True)
class ThresholdSweep:
    """Mean edge F1 over episodes for each cut; ``best`` maximises it."""

    thresholds: tuple[float, ...]
    mean_f1: tuple[float, ...]
    best: float


def tune_linkage_threshold(
    episodes: Sequence[tuple[np.ndarray, Sequence[str]]],
    thresholds: Sequence[float] = LINKAGE_THRESHOLDS,
) -> ThresholdSweep:
    """The average-linkage cut with the best mean edge F1 over (vectors, truth) episodes.

    An undefined F1 (no pair predicted and none true) counts as 0, so the sweep cannot win by
    predicting nothing. Ties go to the smaller cut.
    """
    from ml_backend.metrics import edge_scores

    if not episodes:
        raise ValueError("tune_linkage_threshold() needs at least one training episode")
    totals = np.zeros(len(thresholds))
    for vectors, truth in episodes:
        present = _present(vectors)
        tree = linkage_tree(vectors[present])
        kept_truth = [label for label, keep in zip(truth, present, strict=True) if keep]
        for position, threshold in enumerate(thresholds):
            f1 = edge_scores(kept_truth, cut_tree(tree, threshold)).f1
            totals[position] += f1 or 0.0
    mean = totals / len(episodes)
    best = float(thresholds[int(np.argmax(mean))])
    return ThresholdSweep(tuple(float(t) for t in thresholds), tuple(mean.tolist()), best)


# --------------------------------------------------------------------------- KNN workflow


def first_lines(truth: Sequence[str], share: float = HAND_LABELLED_SHARE) -> dict[int, str]:
    """The hand labels of the prototype's workflow: position -> label of the first lines."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be within (0, 1], got {share}")
    count = max(1, math.ceil(share * len(truth))) if len(truth) else 0
    return {position: truth[position] for position in range(count)}


def knn_propagation(vectors: np.ndarray, labelled: Mapping[int, str]) -> list[str | None]:
    """Each line's label: its own when labelled, else that of its most similar labelled line.

    vectors : (n, dim) unit rows. Lines without a vector, and every line when nothing is
    labelled, come back None (unassigned).
    """
    n = len(vectors)
    present = _present(vectors)
    anchors = np.array([p for p in sorted(labelled) if present[p]], dtype=np.int64)
    result: list[str | None] = [labelled.get(p) for p in range(n)]
    if len(anchors) == 0:
        return result
    similarity = np.asarray(vectors, np.float64) @ np.asarray(vectors[anchors], np.float64).T
    nearest = anchors[np.argmax(similarity, axis=1)]
    for position in range(n):
        if result[position] is None and present[position]:
            result[position] = labelled[int(nearest[position])]
    return result


# --------------------------------------------------------------------------- spectral clustering


@dataclass(frozen=True)
class SpectralResult:
    labels: np.ndarray
    """(n,) int labels, -1 for lines without a vector."""
    speakers: int
    """The estimated number of speakers (largest eigengap)."""
    neighbours: int
    """The pruning p chosen: each row kept its p most similar lines."""


def spectral_clustering(
    vectors: np.ndarray,
    *,
    max_speakers: int = 20,
    neighbours: int | None = None,
    seed: int = 0,
) -> SpectralResult:
    """Spectral clustering with the number of speakers from the eigengap (NME-SC).

    vectors : (n, dim) unit rows.
    neighbours : the pruning p; None chooses it per episode by minimising p / (normalised
        maximum eigengap), as NME-SC does.
    """
    present = _present(vectors)
    kept = np.asarray(vectors, np.float64)[present]
    n = len(kept)
    if n < 3:  # no graph to cut: one speaker
        return SpectralResult(_scatter(np.zeros(n, np.int64), present), min(n, 1), 0)
    similarity = kept @ kept.T
    max_k = max(1, min(max_speakers, n - 1))
    if neighbours is not None:
        neighbours = max(1, min(neighbours, n - 1))
    else:
        candidates = _neighbour_candidates(n)
        ratios = []
        for p in candidates:
            eigenvalues = _laplacian_spectrum(_pruned_affinity(similarity, p), max_k)[0]
            gap = np.max(np.diff(eigenvalues[: max_k + 1]))
            ratios.append(p / max(gap / max(eigenvalues[-1], 1e-12), 1e-12))
        neighbours = candidates[int(np.argmin(ratios))]
    eigenvalues, eigenvectors = _laplacian_spectrum(_pruned_affinity(similarity, neighbours), max_k)
    speakers = int(np.argmax(np.diff(eigenvalues[: max_k + 1]))) + 1
    if speakers == 1:
        labels = np.zeros(n, dtype=np.int64)
    else:
        from sklearn.cluster import KMeans

        embedding = eigenvectors[:, :speakers]
        labels = KMeans(n_clusters=speakers, n_init=10, random_state=seed).fit_predict(embedding)
    logger.debug("spectral: p=%d -> %d speakers", neighbours, speakers)
    return SpectralResult(_scatter(labels.astype(np.int64), present), speakers, int(neighbours))


def _neighbour_candidates(n: int) -> list[int]:
    """Pruning sizes to try: roughly geometric from 2 to n/4 (at least up to 2)."""
    top = max(2, min(n - 1, n // 4))
    values = np.unique(np.round(np.geomspace(2, top, num=min(16, top - 1) or 1)).astype(int))
    return [int(v) for v in values if 1 <= v < n] or [1]


def _pruned_affinity(similarity: np.ndarray, neighbours: int) -> np.ndarray:
    """Binary affinity: each row's ``neighbours`` most similar other lines, symmetrised."""
    n = len(similarity)
    scores = similarity.copy()
    np.fill_diagonal(scores, -np.inf)
    top = np.argpartition(-scores, kth=min(neighbours, n - 1) - 1, axis=1)[:, :neighbours]
    affinity = np.zeros_like(similarity)
    np.put_along_axis(affinity, top, 1.0, axis=1)
    return 0.5 * (affinity + affinity.T)


def _laplacian_spectrum(affinity: np.ndarray, max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest max_k + 1 eigenvalues (ascending) and their vectors of L = D - A, plus the
    largest eigenvalue appended last (for NME's normalisation)."""
    from scipy.linalg import eigh

    laplacian = np.diag(affinity.sum(axis=1)) - affinity
    n = len(laplacian)
    upper = min(max_k, n - 1)
    values, vectors = eigh(laplacian, subset_by_index=[0, upper])
    largest = eigh(laplacian, eigvals_only=True, subset_by_index=[n - 1, n - 1])
    return np.concatenate([values, largest]), vectors


# --------------------------------------------------------------------------- HDBSCAN


def hdbscan(vectors: np.ndarray, *, min_cluster_size: int = 5) -> np.ndarray:
    """(n,) labels of scikit-learn's HDBSCAN (defaults otherwise); -1 = noise, unassigned."""
    from sklearn.cluster import HDBSCAN

    present = _present(vectors)
    kept = np.asarray(vectors, np.float64)[present]
    if len(kept) < max(2, min_cluster_size):
        return _scatter(np.full(len(kept), -1, np.int64), present)
    labels = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(kept)
    return _scatter(labels.astype(np.int64), present)
