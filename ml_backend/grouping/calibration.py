"""The proposal score: a calibrated probability that the proposed speaker is right (§4).

Raw evidence of a proposal is how well the line fits its cluster against the best other one
(`naming.Membership`), how big the cluster is, the line's confidences, and whether the line was
attached afterwards as a lone line. A logistic model maps it to P(right), fit on simulated
proposals of training episodes (`bench.train_priors`); logistic regression on held-out data is
Platt scaling, which is what makes "0.8" mean "right 8 times in 10".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ml_backend.grouping.linear import LogisticModel

FEATURES = (
    "own_logit",
    "other_logit",
    "margin",
    "log_size",
    "voice_conf",
    "image_conf",
    "attached",
    "named",
    "episode_confidence",
    "own_logit_x_episode",
    "margin_x_episode",
)
_CLIP = 12.0


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.nan_to_num(p, nan=0.0), 1e-6, 1 - 1e-6)
    return np.clip(np.log(p / (1 - p)), -_CLIP, _CLIP)


def score_features(
    own: np.ndarray,
    other: np.ndarray,
    size: np.ndarray,
    voice_conf: np.ndarray,
    image_conf: np.ndarray,
    attached: np.ndarray,
    named: np.ndarray,
    episode_confidence: np.ndarray,
) -> np.ndarray:
    """(n, len(FEATURES)) float64; ``own`` is the P of the proposed cluster for attached lines.

    episode_confidence : (n,) mean voice confidence of each line's episode: the same evidence is
    worth less in a noisy episode, and the calibration must know which kind it is looking at.
    """
    own_logit, other_logit = _logit(own), _logit(other)
    return np.stack(
        [
            own_logit,
            other_logit,
            own_logit - other_logit,
            np.log(np.maximum(size, 1)),
            voice_conf,
            image_conf,
            attached.astype(np.float64),
            named.astype(np.float64),
            episode_confidence,
            own_logit * episode_confidence,
            (own_logit - other_logit) * episode_confidence,
        ],
        axis=1,
    )


class ScoreCalibrator:
    """Logistic P(proposal right) from `score_features`."""

    def __init__(self, *, l2: float = 1.0) -> None:
        self.l2 = l2

    def fit(self, X: np.ndarray, right: np.ndarray) -> ScoreCalibrator:
        self.model_ = LogisticModel(l2=self.l2, feature_names=FEATURES).fit(X, right)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n,) calibrated P(right)."""
        return self.model_.predict_proba(X)

    def to_json(self) -> dict[str, Any]:
        return {"l2": self.l2, "model": self.model_.to_json()}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> ScoreCalibrator:
        calibrator = cls(l2=float(values["l2"]))
        calibrator.model_ = LogisticModel.from_json(values["model"])
        return calibrator


def reliability_bins(
    scores: np.ndarray, right: np.ndarray, bins: int = 10
) -> list[tuple[float, float, float, float, int]]:
    """(bin low, bin high, mean score, share right, count) per equal-width score bin with any
    proposals, lowest bin first."""
    scores, right = np.asarray(scores, float), np.asarray(right, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(
                (
                    float(edges[b]),
                    float(edges[b + 1]),
                    float(scores[mask].mean()),
                    float(right[mask].mean()),
                    int(mask.sum()),
                )
            )
    return out


def reliability(
    scores: np.ndarray, right: np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """(mean score, share right, count) per equal-width score bin with any proposals."""
    return [
        (mean, share, count) for _, _, mean, share, count in reliability_bins(scores, right, bins)
    ]
