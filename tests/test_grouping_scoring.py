"""The proposal score (ml_backend/grouping/scoring.py) and the bounded blast radius
(ml_backend/grouping/stability.py), on hand-built proposals."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.grouping.params import GrouperParams
from ml_backend.grouping.proposal import Proposal
from ml_backend.grouping.scoring import (
    REPRESENTATIVE_SHIFT,
    UNASSIGNED_SCORE,
    proposal_scores,
    representatives,
    typicality,
)
from ml_backend.grouping.stability import LARGE_MOVE, count_moves, hold_previous

# lines 0-2 named cluster 0, lines 3-5 placeholder cluster 1, 6-7 cluster 2 guessed, 8 unassigned
FINAL = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1])
CALIBRATED = np.array([0.9, 0.8, 0.7, 0.95, 0.6, 0.2, 0.9, 0.5, 0.3])
OWN = np.array([0.9, 0.8, 0.7, 0.95, 0.6, 0.2, 0.9, 0.5, np.nan])
SIZE = np.array([3, 3, 2])


def _scores(review: str) -> np.ndarray:
    typical = typicality(OWN, FINAL, SIZE)
    return proposal_scores(CALIBRATED, FINAL, {0}, {2: ("Yui", 0.5)}, typical, review=review)


def test_doubt_scores_placeholder_lines_by_how_well_they_fit_their_cluster():
    scores = _scores("doubt")
    assert scores[:3].tolist() == CALIBRATED[:3].tolist()  # named: as calibrated
    assert scores[3:6].tolist() == CALIBRATED[3:6].tolist()  # placeholder: membership
    assert scores[6:8].tolist() == pytest.approx([0.45, 0.25])  # guessed: membership x guess
    assert scores[8] == UNASSIGNED_SCORE


def test_representative_review_puts_each_unnamed_clusters_most_typical_line_first():
    scores = _scores("representative")
    assert scores[3] == 0.0  # the most typical line of the biggest cluster without a label
    assert scores[6] == REPRESENTATIVE_SHIFT  # then the guessed cluster's
    assert scores[4:6].tolist() == CALIBRATED[4:6].tolist()
    assert scores[7] == pytest.approx(0.25)
    assert np.argsort(scores)[:2].tolist() == [3, 6]


def test_legacy_scores_every_placeholder_line_near_zero():
    scores = _scores("legacy")
    assert (scores[3:6] < 0.01).all()
    assert scores[:3].tolist() == CALIBRATED[:3].tolist()


def test_unknown_review_mode_is_refused():
    with pytest.raises(ValueError, match="review must be one of"):
        _scores("random")
    with pytest.raises(
        ValueError, match=r"review must be 0\.\.2 \(doubt, representative, legacy\)"
    ):
        GrouperParams(review=3)
    assert GrouperParams.from_json({"review": 0.0}).review == 0


def test_representatives_biggest_cluster_first():
    final = np.array([0, 0, 1, 1, 1, 2])
    own = np.array([0.5, 0.9, 0.4, 0.8, 0.6, np.nan])
    typical = typicality(own, final, np.bincount(final))
    first = representatives(final, np.ones(6, bool), typical)
    assert first.tolist() == [3, 1, 5]
    assert REPRESENTATIVE_SHIFT * len(first) < UNASSIGNED_SCORE


def _p(line: str, speaker: str | None, score: float) -> Proposal:
    return Proposal(line, speaker, 0, score)


def test_a_refit_may_not_rename_a_line_held_at_high_confidence_on_weak_evidence():
    previous = {"a": ("Yui", 0.95), "b": ("Yui", 0.95), "c": ("Yui", 0.4), "d": ("Mio", 0.99)}
    new = [_p("a", "Mio", 0.6), _p("b", "Mio", 0.97), _p("c", "Mio", 0.6), _p("d", "Mio", 0.99)]
    out, held = hold_previous(new, previous, (), {"Yui", "Mio"}, hold=0.7, switch=0.95)
    assert held == 1
    assert out[0].speaker == "Yui" and out[0].score == pytest.approx(0.4)  # 1 - 0.6: doubted
    assert out[0].alternatives[0] == ("Mio", 0.6)
    assert out[1].speaker == "Mio"  # strong new evidence wins
    assert out[2].speaker == "Mio"  # was not held with confidence
    assert out[3] is new[3]


def test_labelled_lines_and_names_nobody_holds_any_more_are_not_held():
    previous = {"a": ("Yui", 0.95), "b": ("Ritsu", 0.95)}
    new = [_p("a", "Mio", 0.5), _p("b", "Mio", 0.5)]
    out, held = hold_previous(new, previous, {"a"}, {"Yui", "Mio"}, hold=0.7, switch=0.95)
    assert held == 0 and [p.speaker for p in out] == ["Mio", "Mio"]


def test_moves_count_changed_unlabelled_lines_and_renamings():
    previous = {"a": ("Yui", 0.9), "b": ("Speaker 3", 0.8), "c": ("Mio", 0.9), "d": ("Mio", 0.9)}
    current = {"a": ("Mio", 0.6), "b": ("Mio", 0.7), "c": ("Mio", 0.9), "d": ("Yui", 1.0)}
    moves = count_moves(previous, current, {"d"}, {"Yui", "Mio"})
    assert (moves.moved, moves.from_named, moves.large) == (2, 1, False)
    many = {str(k): ("Yui", 0.9) for k in range(LARGE_MOVE + 1)}
    assert count_moves(many, {k: ("Mio", 0.9) for k in many}, (), {"Yui"}).large
