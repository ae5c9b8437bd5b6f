import json

import numpy as np

from ml_backend.grouping.naming import cluster_names
from ml_backend.grouping.speaker_numbers import SpeakerNumbers


def test_numbers_are_stable_across_reproposals():
    numbers = SpeakerNumbers()
    first = numbers.assign([["a", "b", "c"], ["d", "e"]])
    assert first == [1, 2]
    # clusters come back in another order, one member moved, a new cluster appears
    second = numbers.assign([["f"], ["d", "e", "c"], ["a", "b"]])
    assert second == [3, 2, 1]


def test_speaker_numbers_are_never_reused():
    numbers = SpeakerNumbers()
    numbers.assign([["a"], ["b"]])
    numbers.assign([["a"]])  # "Speaker 2" disappears
    assert numbers.assign([["a"], ["z"]]) == [1, 3]


def test_a_split_cluster_keeps_its_number_on_the_larger_part():
    numbers = SpeakerNumbers()
    numbers.assign([["a", "b", "c", "d"]])
    assert numbers.assign([["a"], ["b", "c", "d"]]) == [2, 1]


def test_numbers_json_round_trip():
    numbers = SpeakerNumbers()
    numbers.assign([["a", "b"], ["c"]])
    copy = SpeakerNumbers.from_json(json.loads(json.dumps(numbers.to_json())))
    assert copy.assign([["c"], ["a", "b"]]) == [2, 1]
    assert copy.assign([["x"], ["c"], ["a", "b"]]) == [3, 2, 1]


def test_cluster_names_take_the_majority_of_labelled_members():
    clusters = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([0, 0, 1, -1, 1, -1])
    assert cluster_names(clusters, labels, ["Aoi", "Yui"]) == {0: "Aoi", 1: "Yui"}
