"""End to end: the generated `tiny` episode, imported and embedded for real, grouped with the
shipped priors. Slow (about 30 s for the episode, built once per session)."""

import csv

import numpy as np
import pytest

from ml_backend.episode_lines import load_lines
from ml_backend.grouping import SpeakerGrouper

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tiny_episode):
    lines = load_lines([tiny_episode.imported])
    with tiny_episode.truth.open(encoding="utf-8") as stream:
        character = {int(row["index"]): row["character"] for row in csv.DictReader(stream)}
    truth = [character[int(line_id.rsplit(":", 1)[1])] for line_id in lines.line_ids]
    return lines, truth


def _edge_precision(truth, clusters):
    try:
        from ml_backend.metrics import edge_scores
    except ImportError:  # the metrics module is optional for this test
        edge_scores = None
    if edge_scores is not None:
        scores = edge_scores(truth, clusters)
        return scores.precision, scores.predicted_pairs
    pairs = [(i, j) for i in range(len(truth)) for j in range(i) if clusters[i] >= 0]
    predicted = [(i, j) for i, j in pairs if clusters[i] == clusters[j]]
    right = [(i, j) for i, j in predicted if truth[i] == truth[j]]
    return (len(right) / len(predicted) if predicted else None), len(predicted)


def test_shipped_priors_group_the_tiny_episode_precisely(tiny):
    lines, truth = tiny
    proposals = SpeakerGrouper().propose(lines).proposals
    clusters = [p.cluster for p in proposals]
    precision, predicted_pairs = _edge_precision(truth, clusters)
    assert predicted_pairs > 0, "nothing was grouped"
    assert precision >= 0.95


def test_labels_name_the_tiny_episode(tiny):
    lines, truth = tiny
    grouper = SpeakerGrouper()
    cold = grouper.propose(lines)
    first = cold.proposals
    # label one line of every character, refit, propose again
    labels = {}
    for line_id, name in zip(lines.line_ids, truth, strict=True):
        if name not in labels.values():
            labels[line_id] = name
    grouper.fit(lines, labels)
    again = grouper.propose(lines, labels, cold.speaker_numbers).proposals
    assert len(again) == len(first) == len(lines)
    named = [(p.speaker, t) for p, t in zip(again, truth, strict=True) if p.speaker in set(truth)]
    assert len(named) >= len(labels)
    right = np.mean([speaker == t for speaker, t in named])
    assert right >= 0.8
