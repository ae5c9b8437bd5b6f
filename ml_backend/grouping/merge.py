"""P(same speaker) for a candidate edge between two clusters (docs/architecture.md §4).

Inputs: the two lines' voice and image similarity, their voice and image confidences, the
voice similarity measured against the two lines' own neighbourhood level (a dense speaker's
0.8 is not a sparse one's), whether the lines are adjacent cues (dialogue alternates), and the
two clusters the edge would join: their centroid similarities and sizes. For two lone lines the
cluster inputs equal the line inputs, so one model orders the edges and decides the merges.

Training pairs come from replaying agglomerative clustering on labelled lines, most similar
edge first: an edge inside one label is a positive and is merged, an edge across labels is a
negative and is not, so the negatives are the hard decisions the clustering will meet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ml_backend.grouping.clusters import CLUSTER_FEATURES, for_context
from ml_backend.grouping.confidence import low_snr
from ml_backend.grouping.context import LineContext
from ml_backend.grouping.knn_graph import edges_from_knn, knn, row_dot, unique_pairs
from ml_backend.grouping.linear import LogisticModel

LINE_FEATURES = (
    "voice_sim",
    "image_sim",
    "voice_conf_min",
    "voice_conf_max",
    "image_conf_min",
    "image_conf_max",
    "voice_sim_rel",
    "adjacent",
    "low_snr_max",
    "low_snr_both",
    "agreement",
    "episode_confidence",
)
FEATURES = LINE_FEATURES + CLUSTER_FEATURES


def line_pair_features(
    context: LineContext, confidence: Mapping[str, np.ndarray], pairs: np.ndarray
) -> np.ndarray:
    """(m, len(LINE_FEATURES)) float64 for line pairs (m, 2)."""
    lines = context.lines
    i, j = pairs[:, 0], pairs[:, 1]
    voice = row_dot(lines.voice, lines.voice, pairs).astype(np.float64)
    image = (
        row_dot(lines.image, lines.image, pairs).astype(np.float64)
        if lines.image is not None
        else np.zeros(len(pairs))
    )
    cv, ci = confidence["voice"], confidence["image"]
    level = np.nan_to_num(context.voice.stats["s10"], nan=1.0)
    voice_rel = voice - 0.5 * (level[i] + level[j])
    image_rel = np.zeros(len(pairs))
    if context.image is not None:
        image_level = np.nan_to_num(context.image.stats["s10"], nan=1.0)
        image_rel = image - 0.5 * (image_level[i] + image_level[j])
    # how hard the episode is: in a noisy episode the same similarity means less
    episode_mean = np.bincount(context.episode, weights=cv) / np.maximum(
        np.bincount(context.episode), 1
    )
    noisy = low_snr(lines.quality.get("snr_db", np.full(len(lines), np.nan)))
    adjacent = (context.episode[i] == context.episode[j]) & (
        np.abs(context.position[i] - context.position[j]) == 1
    )
    return np.stack(
        [
            voice,
            image,
            np.minimum(cv[i], cv[j]),
            np.maximum(cv[i], cv[j]),
            np.minimum(ci[i], ci[j]),
            np.maximum(ci[i], ci[j]),
            voice_rel,
            adjacent.astype(np.float64),
            np.maximum(noisy[i], noisy[j]),
            noisy[i] * noisy[j],
            # voice and face agree: either alone is fooled by noise beds and shared voices
            np.minimum(voice_rel, image_rel),
            np.minimum(episode_mean[context.episode[i]], episode_mean[context.episode[j]]),
        ],
        axis=1,
    )


def singleton_cluster_features(
    context: LineContext, line_features: np.ndarray, pairs: np.ndarray
) -> np.ndarray:
    """`CLUSTER_FEATURES` of edges between two lone lines (what `ClusterSet.features` gives)."""
    m = len(pairs)
    i, j = pairs[:, 0], pairs[:, 1]
    voice_level = np.nan_to_num(context.voice.stats["s10"], nan=0.0)
    voice_gap = line_features[:, 0] - 0.5 * (voice_level[i] + voice_level[j])
    image_gap = np.zeros(m)
    if context.image is not None:
        image_level = np.nan_to_num(context.image.stats["s10"], nan=0.0)
        image_gap = line_features[:, 1] - 0.5 * (image_level[i] + image_level[j])
    return np.stack(
        [
            line_features[:, 0],
            voice_gap,
            line_features[:, 1] if context.image is not None else np.zeros(m),
            image_gap,
            voice_gap * line_features[:, 2],
            image_gap * line_features[:, 4],
            np.minimum(voice_gap, image_gap),
            line_features[:, LINE_FEATURES.index("adjacent")],
            np.zeros(m),
            np.zeros(m),
        ],
        axis=1,
    )


class MergeClassifier:
    """Logistic P(same speaker) over `FEATURES`."""

    def __init__(self, *, l2: float = 1.0) -> None:
        self.l2 = l2

    def fit(
        self,
        X: np.ndarray,
        same: np.ndarray,
        *,
        prior: MergeClassifier | None = None,
        strength: float = 0.0,
    ) -> MergeClassifier:
        model = LogisticModel(l2=self.l2, feature_names=FEATURES)
        self.model_ = model.fit(
            X, same, prior=prior.model_ if prior is not None else None, strength=strength
        )
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(m,) P(same speaker)."""
        return self.model_.predict_proba(X)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.model_.decision_function(X)

    def split_weights(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(line weights, cluster weights, bias) on raw features: logit = Xl·wl + Xc·wc + b."""
        w, b = self.model_.raw_weights()
        return w[: len(LINE_FEATURES)], w[len(LINE_FEATURES) :], b

    def to_json(self) -> dict[str, Any]:
        return {"l2": self.l2, "model": self.model_.to_json()}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> MergeClassifier:
        model = cls(l2=float(values["l2"]))
        model.model_ = LogisticModel.from_json(values["model"])
        if model.model_.feature_names != FEATURES:
            raise ValueError(f"merge model features {model.model_.feature_names} != {FEATURES}")
        return model


def replay_pairs(
    context: LineContext,
    confidence: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    k: int = 10,
    order_by: MergeClassifier | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs from agglomerative replay over the labelled lines (``labels`` >= 0).

    Candidate edges are the labelled lines' kNN graph among themselves (voice, plus image), taken
    by voice similarity, highest first, or, with ``order_by``, in the order that classifier
    would take them (the clustering's order: replaying it shows the model the hard negatives
    its own order meets, such as a line whose face matches the listener on screen).
    Returns (X (m, len(FEATURES)), same (m,) float64).
    """
    lines = context.lines
    labelled = np.flatnonzero((labels >= 0) & context.voice.present)
    if len(labelled) < 2:
        return np.zeros((0, len(FEATURES))), np.zeros(0)
    graphs = [knn(lines.voice[labelled], k)[0]]
    if lines.image is not None:
        graphs.append(knn(lines.image[labelled], max(1, k // 2))[0])
    local = unique_pairs(np.concatenate([edges_from_knn(g) for g in graphs]), len(labelled))
    pairs = labelled[local]
    line_x = line_pair_features(context, confidence, pairs)
    key = line_x[:, 0]
    if order_by is not None:
        key = order_by.decision_function(
            np.hstack([line_x, singleton_cluster_features(context, line_x, pairs)])
        )
    order = np.argsort(-key, kind="stable")
    pairs, line_x = pairs[order], line_x[order]
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]

    clusters = for_context(context)
    rows, outcome = [], []
    for e, (i, j) in enumerate(pairs.tolist()):
        a, b = clusters.find(i), clusters.find(j)
        if a == b:
            continue
        cluster_x = clusters.features(a, b, line_x[e, 2], line_x[e, 4])
        rows.append(np.concatenate([line_x[e], cluster_x]))
        outcome.append(float(same[e]))
        if same[e]:
            clusters.union(a, b)
    return np.array(rows, dtype=np.float64).reshape(-1, len(FEATURES)), np.array(outcome)
