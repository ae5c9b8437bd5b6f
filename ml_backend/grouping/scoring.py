"""The proposal score: what "0.8" means on each kind of proposal, and the review order.

Annotators sort by the score, lowest first (docs/architecture.md §4). The calibrator
(`calibration.ScoreCalibrator` on `calibration.score_features`) is trained on proposals judged
the way the operation count (docs/architecture.md §5) judges them: a named proposal is right
when the name is the line's speaker; a numbered speaker ("Speaker 7") is right when the line's
speaker is the one most of its cluster's lines have, i.e. when the line is with the right
people. So its output is, for every assigned line, P(the line is grouped with the right
people):

- **named cluster** (it has labelled members): P(the name is right);
- **guessed name** (no labelled member; named after the named cluster it fits best):
  P(the line belongs with its cluster) × P(the guess is right) (the mean merge probability of
  the cluster's lines with the named one);
- **numbered speaker** (`Speaker N`): P(the line belongs with its cluster). A numbered speaker
  still needs a name, but this says whether the line needs *more* than a name: a low score is
  a line the grouping doubts, which "Doubt first" shows before the lines it is sure of;
- **no speaker** (unassigned): `UNASSIGNED_SCORE`, nothing to trust.

The review order is the score's order (lowest first), with one exception chosen on the
annotation loop (`bench/README.md`, "Review order"): under ``review="representative"`` the most
typical line of each cluster that no label names yet (a numbered speaker or a guessed name) is
reviewed first, biggest cluster first, because naming it names the whole cluster at the next
refit; then doubt first. Those lines are the only ones whose shown score is not their
probability: they show ``REPRESENTATIVE_SHIFT`` × their rank, below every other line.
``review="legacy"`` reproduces the score before this module's rewrite (every numbered-speaker
line near 0, guessed clusters at their guess's probability), kept for same-run comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ml_backend.grouping.calibration import ScoreCalibrator, score_features
from ml_backend.grouping.context import LineContext
from ml_backend.grouping.membership import Membership
from ml_backend.grouping.naming import NamedLines

UNASSIGNED_SCORE = 0.01
"""Score of a line no cluster takes (proposed "Unknown")."""
REPRESENTATIVE_SHIFT = 0.001
"""Score step between the representative lines of unnamed clusters (reviewed first)."""
REVIEW_MODES = ("doubt", "representative", "legacy")
"""`GrouperParams.review`: 0 doubt, 1 representative, 2 legacy (see the module docstring)."""
_LEGACY_SHIFT = 0.01
"""``review="legacy"``: how far the review order moved a line of an unnamed cluster."""


def score_lines(
    calibrator: ScoreCalibrator,
    context: LineContext,
    confidence: Mapping[str, np.ndarray],
    fit: Membership,
    named: NamedLines,
    *,
    review: str = "representative",
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, features): (n,) score of each line's proposal in [0, 1], and the
    (n, len(calibration.FEATURES)) float64 inputs of the calibrated part.

    Lines with no speaker get `UNASSIGNED_SCORE`; `naming.proposals_for` gives labelled
    lines 1. ``review`` is one of `REVIEW_MODES`.
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
    scores = proposal_scores(
        calibrator.predict(features),
        final,
        set(named.named),
        named.guessed,
        typicality(named.own, final, final_size),
        review=review,
    )
    return scores, features


def proposal_scores(
    calibrated: np.ndarray,
    final: np.ndarray,
    named: set[int],
    guessed: Mapping[int, tuple[str, float]],
    typical: np.ndarray,
    *,
    review: str = "representative",
) -> np.ndarray:
    """(n,) the score shown for every line (labelled lines are set to 1 by the caller).

    calibrated : (n,) the calibrator's P(the line is grouped with the right people).
    final : (n,) int cluster per line, -1 unassigned. named : clusters with labelled members.
    guessed : cluster -> (name, P) for clusters named after a named cluster.
    typical : (n,) `typicality`, 0 for the most typical line of the biggest cluster.
    """
    if review not in REVIEW_MODES:
        raise ValueError(f"review must be one of {', '.join(REVIEW_MODES)}, not {review!r}")
    calibrated = np.clip(np.nan_to_num(calibrated, nan=0.0), 0.0, 1.0)
    assigned = final >= 0
    unnamed = assigned & ~np.isin(final, list(named))
    guess_p = np.array([guessed.get(int(c), ("", 0.0))[1] for c in final])
    is_guessed = unnamed & np.isin(final, list(guessed))
    if review == "legacy":
        out = np.where(
            unnamed, (1.0 - _LEGACY_SHIFT) * guess_p + _LEGACY_SHIFT * typical, calibrated
        )
        return np.where(assigned, out, UNASSIGNED_SCORE)
    out = calibrated.copy()
    out[is_guessed] = calibrated[is_guessed] * guess_p[is_guessed]
    out[~assigned] = UNASSIGNED_SCORE
    if review == "representative":
        first = representatives(final, unnamed, typical)
        out[first] = REPRESENTATIVE_SHIFT * np.arange(len(first))
    return out


def representatives(final: np.ndarray, chosen: np.ndarray, typical: np.ndarray) -> np.ndarray:
    """Line indices: the most typical line of each cluster among ``chosen`` lines, in review
    order (most typical line of the biggest cluster first).

    final : (n,) int cluster per line; chosen : (n,) bool; typical : (n,) `typicality`.
    """
    best: dict[int, int] = {}
    for i in np.flatnonzero(chosen).tolist():
        c = int(final[i])
        if c not in best or typical[i] < typical[best[c]]:
            best[c] = i
    return np.array(sorted(best.values(), key=lambda i: (typical[i], i)), dtype=np.int64)


def typicality(own: np.ndarray, final: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(n,) in [0, 1): low for a cluster's most typical member (highest ``own``) and for big
    clusters: half the member's rank in its cluster by ``own``, half 1 / (1 + cluster size).

    own : (n,) P(line belongs to the rest of its cluster), NaN for a cluster of one.
    final : (n,) int cluster per line, -1 unassigned. size : (C,) members per cluster.
    """
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
