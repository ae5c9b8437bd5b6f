"""Names for clusters and lone lines (KNN naming, docs/architecture.md §4), and placeholder ids.

- A cluster takes the name most of its labelled members hold.
- A lone line (a cluster of one, unlabelled) joins the cluster it most probably belongs to,
  named or not, when the merge classifier gives that at least ``attach`` probability; else it
  stays unassigned ("unknown").
- A cluster without a name is a placeholder, "Speaker N", whose number survives re-proposals:
  `Placeholders` matches each new cluster to the old one it shares most members with.

Membership is measured with the merge classifier itself, between the line and the rest of a
cluster (its sums minus the line), so it needs no threshold of its own on raw similarity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_backend.grouping.clusters import UNLABELLED
from ml_backend.grouping.context import LineContext
from ml_backend.grouping.knn_graph import ABSENT
from ml_backend.grouping.merge import FEATURES, MergeClassifier, line_pair_features

PLACEHOLDER_PREFIX = "Speaker "


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


def cluster_names(clusters: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[int, str]:
    """cluster -> the majority name of its labelled members (ties: the name seen first)."""
    out: dict[int, str] = {}
    labelled = np.flatnonzero(labels != UNLABELLED)
    votes: dict[int, Counter[int]] = {}
    for i in labelled.tolist():
        votes.setdefault(int(clusters[i]), Counter())[int(labels[i])] += 1
    for cluster, counter in votes.items():
        out[cluster] = names[counter.most_common(1)[0][0]]
    return out


class Placeholders:
    """Stable numbers for clusters across re-proposals: "Speaker N".

    Each call to `assign` matches the new clusters to the previous call's by shared members
    (greatest overlap first); a cluster that matches none gets the next unused number. Numbers
    are never reused, so an annotator's "Speaker 7" stays Speaker 7 or disappears.
    """

    def __init__(self) -> None:
        self.members: dict[int, set[str]] = {}
        self.next_number = 1

    def assign(self, clusters: Sequence[Sequence[str]]) -> list[int]:
        """One number per cluster (given as member line ids), in the order given."""
        overlaps = []
        index: dict[str, int] = {}
        for number, members in self.members.items():
            for line_id in members:
                index[line_id] = number
        for position, members in enumerate(clusters):
            counts = Counter(index[m] for m in members if m in index)
            overlaps += [(-count, position, number) for number, count in counts.items()]
        overlaps.sort()
        numbers: list[int | None] = [None] * len(clusters)
        taken: set[int] = set()
        for _, position, number in overlaps:
            if numbers[position] is None and number not in taken:
                numbers[position] = number
                taken.add(number)
        for position in range(len(clusters)):
            if numbers[position] is None:
                numbers[position] = self.next_number
                self.next_number += 1
        self.members = {
            int(number): set(members)
            for number, members in zip(numbers, clusters, strict=True)
            if number is not None
        }
        return [int(number) for number in numbers if number is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "next_number": self.next_number,
            "members": {str(number): sorted(ids) for number, ids in self.members.items()},
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Placeholders:
        placeholders = cls()
        placeholders.next_number = int(values.get("next_number", 1))
        placeholders.members = {
            int(number): set(ids) for number, ids in values.get("members", {}).items()
        }
        if placeholders.members:
            placeholders.next_number = max(placeholders.next_number, max(placeholders.members) + 1)
        return placeholders
