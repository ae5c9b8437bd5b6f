"""The annotation loop's metrics (bench/loop_metrics.py) on a hand-played loop, and the
simulated loop with annotator mistakes (bench/bench_loop.py) on the generated `tiny` episode."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_loop import LoopEpisode, simulate_direct
from bench.loop_metrics import LoopTracker, lowest_share_precision

TRUTH = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C"}


def _played() -> LoopTracker:
    tracker = LoopTracker(TRUTH)
    tracker.observe(
        {
            "a1": ("Speaker 1", 0.9),
            "a2": ("Speaker 1", 0.8),
            "b1": ("Speaker 1", 0.95),  # with A's lines: wrong, scored high
            "b2": ("Speaker 2", 0.7),
            "c1": (None, 0.01),
        }
    )
    tracker.answered("a1", "Speaker 1", "A")
    tracker.observe(
        {"a2": ("A", 0.9), "b1": ("A", 0.92), "b2": ("A", 0.6), "c1": ("Speaker 3", 0.5)}
    )
    tracker.answered("b2", "A", "B")  # a new speaker shown under a known name
    tracker.observe({"a2": ("A", 0.9), "b1": ("B", 0.7), "c1": ("Speaker 3", 0.5)})
    tracker.answered("c1", "Speaker 3", "A")  # an annotator mistake
    tracker.observe({"a2": ("B", 0.5), "b1": ("A", 0.91)})
    return tracker


def test_churn_counts_right_to_wrong_flips_of_unreviewed_lines():
    churn = _played().summary()["churn"]
    assert (churn["right_to_wrong"], churn["wrong_to_right"]) == (3, 2)
    assert churn["right_to_wrong_per_100"] == 60.0


def test_calibration_counts_wrong_proposals_scored_high():
    calibration = _played().summary()["calibration"]
    assert (calibration["wrong"], calibration["wrong_scored_high"]) == (6, 3)
    assert calibration["lines_ever_wrong_high"] == 1
    assert sum(row["n"] for row in calibration["reliability"]) == calibration["proposals"] == 14


def test_new_speakers_first_line_placeholder_or_known_name():
    new = _played().summary()["new_speakers"]
    assert new["first_line"] == {"placeholder": 2, "known name": 1}
    assert new["first_line_placeholder_share"] == pytest.approx(0.667)


def test_blast_radius_of_a_wrong_answer():
    blast = _played().summary()["blast"]
    assert blast["wrong_answers"] == 1
    assert blast["wrong_answer_changed"] == [2] and blast["wrong_answer_broke"] == [2]


def test_lowest_share_precision():
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.95, 0.3, 0.85, 0.7, 0.6, 0.99])
    wrong = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=bool)
    assert lowest_share_precision(scores, wrong, 0.1) == 1.0
    assert lowest_share_precision(scores, wrong, 0.3) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def tiny(tiny_episode) -> LoopEpisode:
    return LoopEpisode.from_folder("tiny-seed1", tiny_episode.imported, tiny_episode.truth)


def test_loop_with_wrong_answers_keeps_them_and_still_ends_with_every_proposal_right(tiny):
    right = simulate_direct(tiny, track=True)
    mistaken = simulate_direct(tiny, wrong_answers=0.3, seed=3, track=True)
    assert right.mistakes == right.wrong_labels == 0
    assert mistaken.mistakes >= 1 and mistaken.wrong_labels == mistaken.mistakes
    assert mistaken.final_wrong == 0
    blast = mistaken.metrics["blast"]
    assert len(blast["wrong_answer_changed"]) <= mistaken.mistakes
    assert right.metrics["new_speakers"]["speakers"] >= 2
