"""The segmentation benchmark's scores, on spans whose right answer is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_segmentation import errors_per_100, score


def spans(*pairs: tuple[float, float]) -> np.ndarray:
    return np.array(pairs, dtype=np.float64).reshape(-1, 2)


def test_a_perfect_segmentation_has_no_errors():
    truth = spans((1, 3), (4, 6), (8, 9))
    result = score(truth, truth.copy())
    assert result["matched"] == 3
    assert result["start_error_p90_s"] == 0 and result["end_error_p90_s"] == 0
    assert result["missed_speech_s"] == 0 and result["false_speech_s"] == 0
    assert errors_per_100(result) == 0


def test_split_merged_lost_and_spurious_are_counted_per_100_true_lines():
    truth = spans((0, 4), (5, 6), (6.05, 7), (10, 11))
    found = spans(
        (0, 1.9),  # line 1, first half
        (2.1, 4),  # line 1, second half: line 1 is split
        (5, 7),  # lines 2 and 3 in one segment: merged
        (20, 21),  # no speech there: spurious
    )  # line 4 (10-11 s) is lost
    result = score(truth, found)
    assert result["split_per_100"] == 25.0
    assert result["merged_per_100"] == 25.0
    assert result["lost_per_100"] == 25.0
    assert result["spurious_segments_per_100"] == 25.0
    assert errors_per_100(result) == 25 + 2 * 25 + 25 + 25
    # Missed: 0.2 s inside line 1 and all of line 4; false: the gap 6-6.05 s and 20-21 s.
    assert result["missed_speech_s"] == pytest.approx(1.2, abs=0.01)
    assert result["false_speech_s"] == pytest.approx(1.05, abs=0.01)
    assert result["true_speech_s"] == pytest.approx(6.95, abs=0.01)


def test_padding_into_a_neighbour_is_not_a_merge_and_errors_are_absolute():
    truth = spans((1, 3), (3.4, 5))
    found = spans((0.9, 3.5), (3.5, 5.2))  # the first reaches 0.1 s into the second line
    result = score(truth, found)
    assert result["merged_per_100"] == 0 and result["split_per_100"] == 0
    assert result["start_error_median_s"] == pytest.approx(0.1, abs=1e-3)
    assert result["end_error_median_s"] == pytest.approx(0.35, abs=1e-3)
