"""Gated clustering over the kNN graph (docs/architecture.md §4): union-find, cost about n·k.

Candidate edges (`LineContext.edges`) are taken in order of the merge probability they would
have between two lone lines. Each is re-scored with the clusters it would actually join (their
centroids and sizes) and taken only above ``threshold``. Rules:

- a line whose voice confidence is below ``gate`` may join a cluster while it is alone, but it
  never bridges two clusters of two or more lines, and an edge whose two ends are both below
  the gate is never taken;
- human labels are constraints: lines with the same name start merged, and two clusters with
  different names never merge. A labelled line counts as confident.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from ml_backend.grouping.clusters import UNLABELLED, for_context
from ml_backend.grouping.confidence import low_snr
from ml_backend.grouping.context import LineContext
from ml_backend.grouping.merge import (
    LINE_FEATURES,
    MergeClassifier,
    line_pair_features,
    singleton_cluster_features,
)

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
    start: np.ndarray | None = None,
    edges: np.ndarray | None = None,
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
    start : (n,) int clusters to begin from (lines with one value start merged; unlike labels,
        two start clusters may still merge). None: every line alone.
    edges : (m, 2) candidate edges to walk instead of ``context.edges``.
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
    if start is not None:
        start = np.asarray(start)
        for value in np.unique(start).tolist():
            members = np.flatnonzero(start == value).tolist()
            root = clusters.find(members[0])
            for other in members[1:]:
                b = clusters.find(other)
                if b != root and clusters.can_merge(root, b):
                    root = clusters.union(root, b)

    pairs = context.edges if edges is None else np.asarray(edges, np.int64).reshape(-1, 2)
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


class GatedClustering:
    """Estimator wrapper: ``GatedClustering(threshold=0.6, gate=0.3).fit(context, ...)``.

    labels_ : (n,) int64 cluster of every line.
    """

    def __init__(self, *, threshold: float = 0.5, gate: float = 0.3) -> None:
        self.threshold = threshold
        self.gate = gate

    def fit(
        self,
        context: LineContext,
        *,
        confidence: Mapping[str, np.ndarray],
        merge: MergeClassifier,
        labels: np.ndarray | None = None,
    ) -> GatedClustering:
        self.labels_ = gated_clustering(
            context, confidence, merge, threshold=self.threshold, gate=self.gate, labels=labels
        )
        self.n_clusters_ = int(self.labels_.max() + 1) if len(self.labels_) else 0
        return self
