import itertools

import numpy as np
import pytest

from ml_backend.grouping.confidence_target import confidence_from_lists, confidence_targets


def _brute_force(correct, k, q):
    """Sum over every keep/drop subset of the list: P(subset) * vote of its first k kept."""
    total = 0.0
    for keep in itertools.product((False, True), repeat=len(correct)):
        chosen = [c for c, kept in zip(correct, keep, strict=True) if kept][:k]
        if not chosen:
            continue  # no evidence: never counted as right
        p = np.prod([q if kept else 1 - q for kept in keep])
        right = sum(chosen)
        vote = 1.0 if 2 * right > len(chosen) else 0.5 if 2 * right == len(chosen) else 0.0
        total += p * vote
    return total


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 10])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("q", [0.1, 0.35, 0.9])
def test_dp_matches_brute_force(length, k, q):
    rng = np.random.default_rng(length * 100 + k)
    for _ in range(3):
        correct = rng.random(length) < 0.6
        got = confidence_from_lists(correct[None], k=k, q=q)[0]
        assert got == pytest.approx(_brute_force(list(correct), k, q), abs=1e-12)


def test_rows_are_independent_and_padding_is_ignored():
    correct = np.array([[True, False, True, True], [False, True, False, False]])
    valid = np.array([[True, True, True, False], [True, True, True, True]])
    both = confidence_from_lists(correct, valid, k=3, q=0.3)
    first = confidence_from_lists(correct[:1, :3], k=3, q=0.3)[0]
    assert both[0] == pytest.approx(first)
    assert both[1] == pytest.approx(_brute_force([False, True, False, False], 3, 0.3))


def test_no_neighbour_is_nan_and_no_keep_is_not_counted():
    out = confidence_from_lists(np.zeros((1, 3), bool), np.zeros((1, 3), bool))
    assert np.isnan(out[0])
    # all right neighbours: the target is P(at least one kept), not 1 (the prototype's floor)
    out = confidence_from_lists(np.ones((1, 4), bool), k=3, q=0.1)[0]
    assert out == pytest.approx(1 - 0.9**4)


def test_targets_from_vectors_order_neighbours_by_similarity():
    # line 0's nearest neighbour has its label, the far ones do not
    vectors = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.1, 0.99]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array(["a", "a", "b", "b"])
    out = confidence_targets(vectors, labels, k=1, q=0.5, length=3)
    # k=1: the first kept neighbour decides; nearest kept with p 0.5, then 0.25 (wrong), ...
    assert out[0] == pytest.approx(0.5)
    assert out[2] == pytest.approx(0.5)


def test_targets_nan_for_missing_vectors_and_lonely_lines():
    vectors = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], np.float32)
    out = confidence_targets(vectors, np.array([1, 1, 2]))
    assert np.isnan(out[1])
    assert np.isfinite(out[[0, 2]]).all()
    assert np.isnan(confidence_targets(vectors[:1], np.array([1]))[0])
