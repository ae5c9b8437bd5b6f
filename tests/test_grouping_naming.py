import json

import numpy as np

from ml_backend.grouping.naming import Placeholders, cluster_names


def test_placeholders_are_stable_across_reproposals():
    placeholders = Placeholders()
    first = placeholders.assign([["a", "b", "c"], ["d", "e"]])
    assert first == [1, 2]
    # clusters come back in another order, one member moved, a new cluster appears
    second = placeholders.assign([["f"], ["d", "e", "c"], ["a", "b"]])
    assert second == [3, 2, 1]


def test_placeholder_numbers_are_never_reused():
    placeholders = Placeholders()
    placeholders.assign([["a"], ["b"]])
    placeholders.assign([["a"]])  # "Speaker 2" disappears
    assert placeholders.assign([["a"], ["z"]]) == [1, 3]


def test_a_split_cluster_keeps_its_number_on_the_larger_part():
    placeholders = Placeholders()
    placeholders.assign([["a", "b", "c", "d"]])
    assert placeholders.assign([["a"], ["b", "c", "d"]]) == [2, 1]


def test_placeholders_json_round_trip():
    placeholders = Placeholders()
    placeholders.assign([["a", "b"], ["c"]])
    copy = Placeholders.from_json(json.loads(json.dumps(placeholders.to_json())))
    assert copy.assign([["c"], ["a", "b"]]) == [2, 1]
    assert copy.assign([["x"], ["c"], ["a", "b"]]) == [3, 2, 1]


def test_cluster_names_take_the_majority_of_labelled_members():
    clusters = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([0, 0, 1, -1, 1, -1])
    assert cluster_names(clusters, labels, ["Aoi", "Yui"]) == {0: "Aoi", 1: "Yui"}
