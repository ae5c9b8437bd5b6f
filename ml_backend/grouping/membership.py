"""How well each line fits each cluster near it, measured with the merge classifier itself.

Between the line and the rest of a cluster (its sums minus the line), so it needs no threshold
of its own on raw similarity. Used after the clustering to move lines that fit another cluster
better (`clustering.reassign_lines`), to attach lone lines and guess names (`naming`), and as
inputs of the score (`scoring`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ml_backend.grouping.context import LineContext
from ml_backend.grouping.knn_graph import ABSENT
from ml_backend.grouping.merge import FEATURES, MergeClassifier, line_pair_features


@dataclass(frozen=True)
class Membership:
    """How well each line fits its own cluster and the best other one.

    own : (n,) P(line belongs to the rest of its cluster); NaN for a cluster of one.
    other : (n,) the best P over the other clusters among its neighbours' (0 if none).
    other_cluster : (n,) int64 that cluster, -1 if none.
    candidates, probabilities : (n, c) the other clusters tried and their P, best first.
    """

    own: np.ndarray
    other: np.ndarray
    other_cluster: np.ndarray
    candidates: np.ndarray
    probabilities: np.ndarray


def membership(
    context: LineContext,
    confidence: Mapping[str, np.ndarray],
    merge: MergeClassifier,
    clusters: np.ndarray,
    *,
    block: int = 4096,
) -> Membership:
    """Merge probability of each line with its own cluster (minus itself) and its neighbours'.

    clusters : (n,) int64 cluster of every line (0..C-1; lone lines have their own).
    """
    lines = context.lines
    n = len(lines)
    n_clusters = int(clusters.max()) + 1 if n else 0
    size = np.bincount(clusters, minlength=n_clusters).astype(np.float64)
    sums = {"voice": _sums(lines.voice, clusters, n_clusters)}
    levels = {"voice": np.nan_to_num(context.voice.stats["s10"], nan=0.0)}
    if lines.image is not None:
        sums["image"] = _sums(lines.image, clusters, n_clusters)
        levels["image"] = np.nan_to_num(context.image.stats["s10"], nan=0.0)
    squared = {kind: np.einsum("ij,ij->i", s, s) for kind, s in sums.items()}
    # the line's own cluster first, then its neighbours' clusters
    neighbours = context.voice.indices
    candidate = np.where(
        neighbours != ABSENT, clusters[np.where(neighbours >= 0, neighbours, 0)], -1
    )
    candidate = np.hstack([clusters[:, None], candidate])
    # keep each cluster once per row (first occurrence)
    for col in range(1, candidate.shape[1]):
        repeated = (candidate[:, col : col + 1] == candidate[:, :col]).any(axis=1)
        candidate[repeated, col] = -1
    logits = np.full(candidate.shape, -np.inf)
    nearest = np.where(neighbours[:, 0] != ABSENT, neighbours[:, 0], np.arange(n))
    previous, following = context.cue_neighbours()
    cue_cluster = np.stack(
        [
            np.where(previous >= 0, clusters[np.maximum(previous, 0)], -1),
            np.where(following >= 0, clusters[np.maximum(following, 0)], -1),
        ],
        axis=1,
    )
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        for col in range(candidate.shape[1]):
            target = candidate[rows, col]
            ok = target >= 0
            r, t = rows[ok], target[ok]
            own = col == 0
            other_size = size[t] - own
            ok2 = other_size > 0
            r, t, other_size = r[ok2], t[ok2], other_size[ok2]
            if not len(r):
                continue
            ends = _nearest_member(neighbours, clusters, r, t, nearest, own)
            features = _line_to_cluster(
                context, confidence, sums, squared, levels, r, t, other_size, own, ends
            )
            adjacent = (cue_cluster[r] == t[:, None]).sum(axis=1)
            features[:, FEATURES.index("adjacent_share")] = adjacent.astype(np.float64)
            logits[r, col] = merge.decision_function(features)
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    own_p = np.where(np.isfinite(logits[:, 0]), probabilities[:, 0], np.nan)
    others = probabilities[:, 1:]
    other_candidates = candidate[:, 1:]
    order = np.argsort(-others, axis=1, kind="stable")
    others = np.take_along_axis(others, order, axis=1)
    other_candidates = np.take_along_axis(other_candidates, order, axis=1)
    other_candidates = np.where(others > 0, other_candidates, -1)
    return Membership(
        own=own_p,
        other=others[:, 0] if others.shape[1] else np.zeros(n),
        other_cluster=other_candidates[:, 0] if others.shape[1] else np.full(n, -1),
        candidates=other_candidates,
        probabilities=others,
    )


def _nearest_member(
    neighbours: np.ndarray,
    clusters: np.ndarray,
    rows: np.ndarray,
    targets: np.ndarray,
    nearest: np.ndarray,
    own: bool,
) -> np.ndarray:
    """Each row's most similar kNN neighbour inside its target cluster (else its nearest line)."""
    listed = neighbours[rows]
    member = (listed != ABSENT) & (clusters[np.where(listed >= 0, listed, 0)] == targets[:, None])
    first = member.argmax(axis=1)
    found = member[np.arange(len(rows)), first]
    return np.where(found, listed[np.arange(len(rows)), first], nearest[rows])


def _sums(vectors: np.ndarray, clusters: np.ndarray, n_clusters: int) -> np.ndarray:
    out = np.zeros((n_clusters, vectors.shape[1]), np.float64)
    np.add.at(out, clusters, vectors.astype(np.float64))
    return out


def _line_to_cluster(
    context: LineContext,
    confidence: Mapping[str, np.ndarray],
    sums: Mapping[str, np.ndarray],
    squared: Mapping[str, np.ndarray],
    levels: Mapping[str, np.ndarray],
    rows: np.ndarray,
    targets: np.ndarray,
    other_size: np.ndarray,
    own: bool,
    ends: np.ndarray,
) -> np.ndarray:
    """Merge inputs of line ``rows`` against clusters ``targets`` (minus the line when own).

    The edge's other end is the line's nearest neighbour inside the cluster (``ends``)."""
    lines = context.lines
    pairs = np.stack([rows, ends], axis=1)
    line_x = line_pair_features(context, confidence, pairs)
    cluster_x = []
    for kind in ("voice", "image"):
        if kind not in sums:
            cluster_x += [np.zeros(len(rows)), np.zeros(len(rows))]
            continue
        vectors = getattr(lines, kind)[rows].astype(np.float64)
        total = sums[kind][targets] - (vectors if own else 0.0)
        total_sq = squared[kind][targets]
        if own:  # |S - v|² = |S|² - 2 S·v + |v|²
            total_sq = total_sq - 2 * np.einsum("ij,ij->i", sums[kind][targets], vectors) + 1.0
        between = np.einsum("ij,ij->i", total, vectors) / other_size
        within_other = np.where(
            other_size > 1,
            (total_sq - other_size) / np.maximum(other_size * (other_size - 1), 1),
            levels[kind][ends],
        )
        gap = between - 0.5 * (within_other + levels[kind][rows])
        cluster_x += [between, gap]
    voice_between, voice_gap, image_between, image_gap = cluster_x
    line_x[:, 0], line_x[:, 1] = voice_between, image_between
    zeros = np.zeros(len(rows))
    return np.hstack(
        [
            line_x,
            np.stack(
                [
                    voice_between,
                    voice_gap,
                    image_between,
                    image_gap,
                    voice_gap * line_x[:, 2],
                    image_gap * line_x[:, 4],
                    np.minimum(voice_gap, image_gap) if "image" in sums else voice_gap,
                    zeros,
                    zeros,
                    np.log(np.maximum(other_size, 1)),
                ],
                axis=1,
            ),
        ]
    )
