"""Gated clustering over the kNN graph (docs/architecture.md §4): union-find, cost about n·k.

Candidate edges (`LineContext.edges`) are taken in order of the merge probability they would
have between two lone lines. Each is re-scored with the clusters it would actually join (their
centroids and sizes) and taken only above ``threshold``. Rules:

- a line whose voice confidence is below ``gate`` may join a cluster while it is alone, but it
  never bridges two clusters of two or more lines, and an edge whose two ends are both below
  the gate is never taken;
- human labels are constraints: lines with the same name start merged, and two clusters with
  different names never merge. A labelled line counts as confident.

The edges are decided once each, in order, so `reassign_lines` then moves clustered lines that
fit another cluster better and detaches those that fit none. `GatedClustering` is both steps as
one estimator, the one `SpeakerGrouper` uses.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from ml_backend.grouping.clusters import UNLABELLED, for_context
from ml_backend.grouping.confidence import low_snr
from ml_backend.grouping.context import LineContext
from ml_backend.grouping.membership import membership
from ml_backend.grouping.merge import (
    LINE_FEATURES,
    MergeClassifier,
    line_pair_features,
    singleton_cluster_features,
)
from ml_backend.grouping.params import DEFAULTS, GrouperParams

REFERENCE_CONFIDENCE = 0.7
"""Mean voice confidence of an ordinary episode, where the threshold applies as given."""


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return float(np.log(p / (1 - p)))


def gated_clustering(
    context: LineContext,
    confidence: Mapping[str, np.ndarray],
    merge: MergeClassifier,
    *,
    threshold: float,
    gate: float,
    labels: np.ndarray | None = None,
    floor: float = 0.02,
    weak_joins: bool = True,
    passes: int = 1,
    threshold_slope: float = 0.0,
    noise_slope: float = 0.0,
) -> np.ndarray:
    """(n,) int64 cluster of every line (0-based, in order of first member; lone lines too).

    labels : (n,) int name codes, -1 where unlabelled.
    floor : edges whose lone-line probability is below it are not even tried (speed).
    weak_joins : whether a line below the gate may join a cluster while alone (the design's
        rule); False leaves every weak line to the lone-line attach step of the naming.
    threshold_slope : the threshold rises by this much per unit of voice confidence that the
        edge's episode averages below `REFERENCE_CONFIDENCE`: a noisy episode's similarities
        mean less, so its merges need more evidence (learned per prior, like the threshold).
    noise_slope : the threshold rises by this much per unit of the edge's episode's mean
        `low_snr` (0 when every line is clean, 1 when every line is at 0 dB SNR or below):
        music and noise beds pull unrelated lines together, and an episode full of them can
        still look confident on average (a second, label-free sign of a difficult episode).
    passes : how many times the edge list is walked. An edge refused while its clusters were
        small is asked again once they have grown and their centroids say more.
    """
    lines = context.lines
    n = len(lines)
    labels = np.full(n, UNLABELLED, np.int64) if labels is None else np.asarray(labels, np.int64)
    if n == 0:
        return np.zeros(0, np.int64)
    clusters = for_context(context, labels)
    for code in np.unique(labels[labels != UNLABELLED]):
        members = np.flatnonzero(labels == code).tolist()
        root = clusters.find(members[0])
        for other in members[1:]:
            root = clusters.union(root, clusters.find(other))

    pairs = context.edges
    if len(pairs):
        line_x = line_pair_features(context, confidence, pairs)
        order_logit = merge.decision_function(
            np.hstack([line_x, singleton_cluster_features(context, line_x, pairs)])
        )
        keep = order_logit > _logit(floor)
        key = order_logit
        order = np.flatnonzero(keep)[np.argsort(-key[keep], kind="stable")]
        line_w, cluster_w, bias = merge.split_weights()
        static = (line_x[order] @ line_w + bias).tolist()
        voice_conf_min = line_x[order, 2].tolist()
        image_conf_min = line_x[order, 4].tolist()
        weak = ((confidence["voice"] < gate) & (labels == UNLABELLED)).tolist()
        episode_confidence = line_x[order, LINE_FEATURES.index("episode_confidence")]
        noisy = low_snr(lines.quality.get("snr_db", np.full(n, np.nan)))
        episode_noise = np.bincount(context.episode, weights=noisy) / np.maximum(
            np.bincount(context.episode), 1
        )
        noise = episode_noise[context.episode[pairs[order, 0]]]
        cuts = [
            _logit(
                min(
                    0.995,
                    max(
                        0.005,
                        threshold + threshold_slope * (REFERENCE_CONFIDENCE - c) + noise_slope * x,
                    ),
                )
            )
            for c, x in zip(episode_confidence.tolist(), noise.tolist(), strict=True)
        ]
        weights = [float(w) for w in cluster_w]
        ordered = pairs[order].tolist()
        for e, (i, j) in itertools.chain.from_iterable(
            enumerate(ordered) for _ in range(max(1, passes))
        ):
            a, b = clusters.find(i), clusters.find(j)
            if a == b or not clusters.can_merge(a, b):
                continue
            weak_i, weak_j = weak[i], weak[j]
            if weak_i and weak_j:
                continue
            if (weak_i or weak_j) and (
                not weak_joins or (clusters.size[a] >= 2 and clusters.size[b] >= 2)
            ):
                continue
            features = clusters.features(a, b, voice_conf_min[e], image_conf_min[e])
            logit = static[e] + sum(w * x for w, x in zip(weights, features, strict=True))
            if logit > cuts[e]:
                clusters.union(a, b)
    return clusters.labels()


def reassign_lines(
    context: LineContext,
    confidence: Mapping[str, np.ndarray],
    merge: MergeClassifier,
    clusters: np.ndarray,
    labels: np.ndarray,
    *,
    rounds: int,
    move_margin: float,
    detach: float,
) -> np.ndarray:
    """(n,) int64 clusters after moving lines that fit another cluster better and detaching
    those that fit none (labelled lines stay put).

    The clustering decides each edge once, in order, so a line that joined early on a
    misleading face can sit in the wrong cluster; with every cluster formed, its fit to each
    (the merge probability against the rest of the cluster, `membership`) says where it
    belongs. A line moves when another cluster of two or more fits it better by
    ``move_margin``, and leaves for a cluster of its own when its fit is below ``detach``.
    Up to ``rounds`` rounds; it stops early once nothing changes. Cluster ids are renumbered
    0..C-1 in order of first member.
    """
    free = labels == UNLABELLED
    for _ in range(rounds):
        size = np.bincount(clusters)
        fit = membership(context, confidence, merge, clusters)
        target = fit.other_cluster
        ok = target >= 0
        ok[ok] &= size[target[ok]] >= 2
        clustered = free & (size[clusters] >= 2)
        own = np.nan_to_num(fit.own, nan=0.0)
        move = clustered & ok & (fit.other > own + move_margin)
        leave = clustered & ~move & (own < detach)
        if not (move.any() or leave.any()):
            break
        clusters = clusters.copy()
        clusters[move] = target[move]
        clusters[leave] = clusters.max() + 1 + np.arange(int(leave.sum()))
        clusters = np.unique(clusters, return_inverse=True)[1].reshape(-1)
    return clusters


class GatedClustering:
    """The grouping's clustering as an estimator: `gated_clustering`, then `reassign_lines`.

        clustering = GatedClustering(threshold=0.6, gate=0.3).fit(
            context, confidence=confidence, merge=merge, labels=codes
        )
        clustering.labels_        # (n,) int64 cluster of every line, lone lines included

    The parameters and their defaults are `params.GrouperParams`'s of the same names
    (`from_params` takes them from one).

    labels_ : (n,) int64 cluster of every line (0..C-1; a lone line has its own).
    n_clusters_ : C.
    """

    def __init__(
        self,
        *,
        threshold: float = DEFAULTS.threshold,
        gate: float = DEFAULTS.gate,
        weak_joins: bool = DEFAULTS.weak_joins,
        threshold_slope: float = DEFAULTS.threshold_slope,
        noise_slope: float = DEFAULTS.noise_slope,
        reassign_rounds: int = DEFAULTS.reassign_rounds,
        move_margin: float = DEFAULTS.move_margin,
        detach: float = DEFAULTS.detach,
    ) -> None:
        self.threshold = threshold
        self.gate = gate
        self.weak_joins = weak_joins
        self.threshold_slope = threshold_slope
        self.noise_slope = noise_slope
        self.reassign_rounds = reassign_rounds
        self.move_margin = move_margin
        self.detach = detach

    @classmethod
    def from_params(cls, params: GrouperParams) -> GatedClustering:
        return cls(
            threshold=params.threshold,
            gate=params.gate,
            weak_joins=params.weak_joins,
            threshold_slope=params.threshold_slope,
            noise_slope=params.noise_slope,
            reassign_rounds=params.reassign_rounds,
            move_margin=params.move_margin,
            detach=params.detach,
        )

    def fit(
        self,
        context: LineContext,
        *,
        confidence: Mapping[str, np.ndarray],
        merge: MergeClassifier,
        labels: np.ndarray | None = None,
    ) -> GatedClustering:
        """Cluster the lines of ``context``.

        confidence : "voice" and "image" -> (n,) float64 predicted confidence of each line.
        labels : (n,) int64 name code of each line, -1 unlabelled (constraints).
        """
        n = len(context.lines)
        codes = np.full(n, UNLABELLED, np.int64) if labels is None else np.asarray(labels)
        clusters = gated_clustering(
            context,
            confidence,
            merge,
            threshold=self.threshold,
            gate=self.gate,
            labels=codes,
            weak_joins=self.weak_joins,
            threshold_slope=self.threshold_slope,
            noise_slope=self.noise_slope,
        )
        if n:
            clusters = reassign_lines(
                context,
                confidence,
                merge,
                clusters,
                codes,
                rounds=self.reassign_rounds,
                move_margin=self.move_margin,
                detach=self.detach,
            )
        self.labels_ = clusters
        self.n_clusters_ = int(clusters.max() + 1) if len(clusters) else 0
        return self
