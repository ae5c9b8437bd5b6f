"""The score of every proposal: what annotators sort by, lowest first (docs/architecture.md §4).

- A line of a cluster with labelled members: the calibrated P(its name is right)
  (`calibration.ScoreCalibrator` on `calibration.score_features`).
- A line of a cluster without labelled members: P(the name guessed from the nearest named
  cluster is right), 0 for a numbered speaker, which is never the right name, plus at most
  `REVIEW_SHIFT` that is lowest for the cluster's most typical member and for big clusters,
  so that each unnamed cluster is named through its most typical line first (and the refit
  then names the rest of it).
- A line with no speaker: `REVIEW_SHIFT`, after every numbered speaker's first line.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ml_backend.grouping.calibration import ScoreCalibrator, score_features
from ml_backend.grouping.context import LineContext
from ml_backend.grouping.membership import Membership
from ml_backend.grouping.naming import NamedLines

REVIEW_SHIFT = 0.01
"""How far (in score) the review order may move a line of an unnamed cluster: below every
guess of that cluster, and numbered speakers below unassigned lines."""


def score_lines(
    calibrator: ScoreCalibrator,
    context: LineContext,
    confidence: Mapping[str, np.ndarray],
    fit: Membership,
    named: NamedLines,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, features): (n,) score of each line's proposal in [0, 1], and the
    (n, len(calibration.FEATURES)) float64 inputs of the calibrated part.

    Lines with no speaker get a meaningless value here; `naming.proposals_for` gives them
    `REVIEW_SHIFT`, and labelled lines 1.
    """
    final, attached = named.final, named.attached
    final_size = named.final_size
    features = score_features(
        named.own,
        np.where(attached, 0.0, fit.other),
        np.where(final >= 0, final_size[np.maximum(final, 0)], 1),
        confidence["voice"],
        confidence["image"],
        attached,
        np.array([int(c) in named.named for c in final]),
        episode_mean(confidence["voice"], context.episode),
    )
    scores = calibrator.predict(features)
    # A cluster without labelled members is right only if its guessed name is (a numbered
    # speaker never is): its lines share the guess's probability, shifted by at most
    # REVIEW_SHIFT so that its most typical member (and the biggest such cluster's) is reviewed
    # first, and naming that one line names the whole cluster.
    typical = typicality(named.own, final, final_size)
    unnamed = (final >= 0) & ~np.isin(final, list(named.named))
    guess_p = np.array([named.guessed.get(int(c), ("", 0.0))[1] for c in final])
    scores = np.where(unnamed, (1.0 - REVIEW_SHIFT) * guess_p + REVIEW_SHIFT * typical, scores)
    return scores, features


def typicality(own: np.ndarray, final: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(n,) in [0, 1): low for a cluster's most typical member (highest ``own``) and for big
    clusters: half the member's rank in its cluster by ``own``, half 1 / cluster size."""
    n = len(final)
    out = np.zeros(n)
    fit = np.nan_to_num(own, nan=1.0)
    order = np.lexsort((np.arange(n), -fit, final))
    rank = np.zeros(n)
    previous, position = None, 0
    for i in order.tolist():
        position = position + 1 if final[i] == previous else 0
        previous = final[i]
        rank[i] = position
    assigned = final >= 0
    members = np.maximum(size[np.maximum(final, 0)], 1).astype(np.float64)
    out[assigned] = 0.5 * rank[assigned] / members[assigned] + 0.5 / (1.0 + members[assigned])
    return out


def episode_mean(values: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """(n,) the mean of ``values`` over each line's episode."""
    totals = np.bincount(episode, weights=values)
    counts = np.maximum(np.bincount(episode), 1)
    return (totals / counts)[episode]
