"""The §5 metrics on hand-computed groupings; the arithmetic is written beside each case."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ml_backend.metrics import (
    bcubed_scores,
    coverage,
    edge_scores,
    is_unassigned,
    operation_count,
    score_grouping,
)

# (id, truth, predicted, edge (P, R, F1), bcubed (P, R, F1), ops (removals, adds, merges, names))
CASES = [
    (
        # cells (a,1)=2 (a,2)=1 (b,2)=2; clusters |1|=2 |2|=3; speakers |a|=3 |b|=2
        # correct = C(2,2)+C(1,2)+C(2,2) = 2; predicted = C(2,2)+C(3,2) = 4
        # true = C(3,2)+C(2,2) = 4 -> P 1/2, R 1/2, F1 1/2
        # BCubed P = (4/2 + 1/3 + 4/3)/5 = 11/15; R = (4/3 + 1/3 + 4/2)/5 = 11/15
        # ops: 1->a, 2->b (2 of 3); removals 1, adds 1, merges 0, names 2
        "one-stray",
        ["a", "a", "a", "b", "b"],
        [1, 1, 2, 2, 2],
        (2 / 4, 2 / 4, 0.5),
        (11 / 15, 11 / 15, 11 / 15),
        (1, 1, 0, 2),
    ),
    (
        # unassigned lines are singletons: cells (a,1)=2 (a,u)=1 (b,u')=1
        # correct = 1; predicted = 1; true = C(3,2) = 3 -> P 1, R 1/3, F1 = (2/3)/(4/3) = 0.5
        # BCubed P = (4/2 + 1 + 1)/4 = 1; R = (4/3 + 1/3 + 1)/4 = 2/3; F1 = (4/3)/(5/3) = 0.8
        # ops: 1->a; removals 0, adds = 0 + 2 unassigned, merges 0, names 1 (b has no cluster)
        "unassigned",
        ["a", "a", "a", "b"],
        [1, 1, None, None],
        (1.0, 1 / 3, 0.5),
        (1.0, 2 / 3, 0.8),
        (0, 2, 0, 1),
    ),
    (
        # one speaker split in three: correct = predicted = C(2,2) = 1; true = C(4,2) = 6
        # P 1, R 1/6, F1 = (2/6)/(7/6) = 2/7
        # BCubed P = (4/2 + 1 + 1)/4 = 1; R = (4/4 + 1/4 + 1/4)/4 = 3/8; F1 = (6/8)/(11/8) = 6/11
        # ops: all three -> a; merges 3 - 1 = 2, names 1
        "split",
        ["a", "a", "a", "a"],
        ["x", "x", "y", "z"],
        (1.0, 1 / 6, 2 / 7),
        (1.0, 3 / 8, 6 / 11),
        (0, 0, 2, 1),
    ),
    (
        # two speakers in one cluster, a tie: the speaker seen first (a) is the majority
        # correct 0, predicted 1, true 0 -> P 0, R undefined, F1 0 (harmonic mean with a 0)
        # BCubed P = (1/2 + 1/2)/2 = 1/2; R = (1 + 1)/2 = 1; F1 = 1/(3/2) = 2/3
        # ops: removals 1 (b), adds 1, merges 0, names 1
        "tie",
        ["a", "b"],
        [5, 5],
        (0.0, None, 0.0),
        (0.5, 1.0, 2 / 3),
        (1, 1, 0, 1),
    ),
    (
        # all unassigned: no predicted pair -> P undefined (not 0); true = 1, correct 0 -> R 0
        # BCubed P = 1; R = (1/2 + 1/2 + 1)/3 = 2/3; F1 = (4/3)/(5/3) = 0.8
        # ops: adds 3, nothing else
        "all-unassigned",
        ["a", "a", "b"],
        [None, None, None],
        (None, 0.0, 0.0),
        (1.0, 2 / 3, 0.8),
        (0, 3, 0, 0),
    ),
    (
        # all one cluster: correct 1, predicted C(3,2) = 3, true 1 -> P 1/3, R 1, F1 0.5
        # BCubed P = (4/3 + 1/3)/3 = 5/9; R = (4/2 + 1)/3 = 1; F1 = (10/9)/(14/9) = 5/7
        # ops: -> a; removals 1, adds 1, names 1
        "one-cluster",
        ["a", "a", "b"],
        [7, 7, 7],
        (1 / 3, 1.0, 0.5),
        (5 / 9, 1.0, 5 / 7),
        (1, 1, 0, 1),
    ),
    (
        # perfect, with cluster names unrelated to speaker names: every score 1, ops = 2 names
        "perfect",
        ["a", "a", "b"],
        ["Speaker 2", "Speaker 2", "Speaker 1"],
        (1.0, 1.0, 1.0),
        (1.0, 1.0, 1.0),
        (0, 0, 0, 2),
    ),
    (
        # every line its own speaker and its own cluster: no pair anywhere -> P and R undefined
        # BCubed P = R = 1; ops: 3 names
        "all-singletons",
        ["a", "b", "c"],
        [1, 2, 3],
        (None, None, None),
        (1.0, 1.0, 1.0),
        (0, 0, 0, 3),
    ),
]


def _close(actual: float | None, expected: float | None) -> bool:
    if expected is None:
        return actual is None
    return actual is not None and actual == pytest.approx(expected)


@pytest.mark.parametrize(
    ("truth", "predicted", "edge", "bcubed", "ops"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_hand_computed(truth, predicted, edge, bcubed, ops):
    e = edge_scores(truth, predicted)
    assert all(map(_close, (e.precision, e.recall, e.f1), edge)), e
    b = bcubed_scores(truth, predicted)
    assert all(map(_close, (b.precision, b.recall, b.f1), bcubed)), b
    o = operation_count(truth, predicted)
    assert (o.removals, o.adds, o.merges, o.names) == ops
    assert o.total == sum(ops)
    assert o.per_100_lines == pytest.approx(100 * sum(ops) / len(truth))


def test_pair_counts_and_summary():
    # case "one-stray" again: 2 correct of 4 predicted, 4 true; 2 clusters over 2 speakers
    scores = score_grouping(["a", "a", "a", "b", "b"], [1, 1, 2, 2, 2])
    assert (scores.edge.correct_pairs, scores.edge.predicted_pairs, scores.edge.true_pairs) == (
        2,
        4,
        4,
    )
    assert (scores.lines, scores.speakers, scores.clusters, scores.assigned) == (5, 2, 2, 5)
    assert scores.coverage == 1.0
    assert scores.operations.total == 4
    assert scores.to_dict()["edge"]["precision"] == 0.5


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        ([1, 1, None, None], 0.5),
        (np.array([3, -1, -1, 3]), 0.5),  # -1: the cluster-id convention for unassigned
        (["Aoi", "", "", ""], 0.25),  # an empty CSV cell is unassigned
        ([float("nan"), 2.0], 0.5),
        ([0, 0], 1.0),  # 0 is a cluster, not "unassigned"
        ([], None),
    ],
)
def test_coverage(predicted, expected):
    assert coverage(predicted) == expected


@pytest.mark.parametrize(
    ("label", "unassigned"),
    [(None, True), ("", True), (-1, True), (np.int64(-1), True), (0, False), ("x", False)],
)
def test_is_unassigned(label, unassigned):
    assert is_unassigned(label) is unassigned


def test_empty_grouping_is_undefined_not_zero():
    scores = score_grouping([], [])
    assert scores.lines == 0
    assert scores.coverage is None
    assert scores.edge.precision is None and scores.edge.recall is None
    assert scores.bcubed.precision is None
    assert scores.operations.total == 0
    assert scores.operations.per_100_lines is None


def test_negative_cluster_ids_are_singletons_not_one_cluster():
    # two -1 lines of the same speaker must not count as a predicted (correct) pair
    scores = edge_scores(["a", "a"], np.array([-1, -1]))
    assert scores.predicted_pairs == 0
    assert scores.precision is None


def test_numpy_and_python_labels_are_one_cluster():
    assert edge_scores(["a", "a"], [np.int64(4), 4]).predicted_pairs == 1


def test_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match="truth has 2 lines but the prediction has 1"):
        edge_scores(["a", "b"], [1])


def test_truth_without_label_is_refused():
    with pytest.raises(ValueError, match="truth line 1 has no label"):
        edge_scores(["a", None], [1, 1])


def _brute_force(truth, predicted):
    """Edge and BCubed by enumerating pairs and lines: the definition, O(n^2)."""
    n = len(truth)
    cluster = [("u", i) if is_unassigned(p) else ("c", p) for i, p in enumerate(predicted)]
    same_true = same_pred = both = 0
    for i, j in itertools.combinations(range(n), 2):
        t, p = truth[i] == truth[j], cluster[i] == cluster[j]
        same_true += t
        same_pred += p
        both += t and p
    precision = sum(
        sum(cluster[j] == cluster[i] and truth[j] == truth[i] for j in range(n))
        / sum(cluster[j] == cluster[i] for j in range(n))
        for i in range(n)
    )
    recall = sum(
        sum(cluster[j] == cluster[i] and truth[j] == truth[i] for j in range(n))
        / sum(truth[j] == truth[i] for j in range(n))
        for i in range(n)
    )
    return both, same_pred, same_true, precision / n, recall / n


@pytest.mark.parametrize("seed", range(5))
def test_contingency_counts_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    truth = list(rng.integers(0, 4, 40))
    predicted = [int(p) if p >= 0 else None for p in rng.integers(-1, 5, 40)]
    both, same_pred, same_true, b_precision, b_recall = _brute_force(truth, predicted)
    scores = score_grouping(truth, predicted)
    assert (
        scores.edge.correct_pairs,
        scores.edge.predicted_pairs,
        scores.edge.true_pairs,
    ) == (both, same_pred, same_true)
    assert scores.bcubed.precision == pytest.approx(b_precision)
    assert scores.bcubed.recall == pytest.approx(b_recall)


def test_twenty_thousand_lines_are_scored_exactly():
    rng = np.random.default_rng(0)
    truth = [f"character {k}" for k in rng.integers(0, 40, 20_000)]
    predicted = rng.integers(-1, 60, 20_000)
    scores = score_grouping(truth, predicted)
    assert scores.lines == 20_000
    # pairs beyond 32-bit range are still exact integers
    assert scores.edge.true_pairs > 2**22
