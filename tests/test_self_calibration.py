"""The self-calibrating cold start (`ml_backend.grouping.self_calibration`) and its grouper hook."""

from __future__ import annotations

import numpy as np
import pytest

from bench.train_priors import Episode, _identity_calibrator, _priors, edge_scores, fit_models
from ml_backend.grouping import SpeakerGrouper
from ml_backend.grouping.clustering import GatedClustering
from ml_backend.grouping.context import VOICE_KEPT, build_context
from ml_backend.grouping.knn_graph import edges_from_knn, knn
from ml_backend.grouping.params import DEFAULTS, params_for_priors
from ml_backend.grouping.self_calibration import (
    choose_partition,
    community_clustering,
    community_partition,
    edge_weights,
    partition_log_likelihood,
)
from ml_backend.grouping.synthetic import synthetic_lines

OPTIONS = {"threshold": 0.5, "gate": 0.2, "attach": 0.6, "weak_joins": True}


def _episode(seed, n=300, **kwargs):
    lines, truth = synthetic_lines(n, seed=seed, **kwargs)
    codes = np.unique(truth, return_inverse=True)[1].reshape(-1)
    return Episode(f"syn{seed}", lines, truth, build_context(lines), codes)


@pytest.fixture(scope="module")
def priors():
    """Priors trained on two synthetic episodes of one noise level, as train_priors does (noisy
    enough that the replay meets different-speaker edges: at the generator's default noise every
    replayed edge is a positive and the merge model learns nothing but its bias)."""
    train = [_episode(1, noise=2.0), _episode(2, noise=2.0)]
    confidence, merge = fit_models(train)
    return _priors(confidence, merge, _identity_calibrator(), OPTIONS, train[0].lines)


def _planted_graph(sizes, inside=0.9, across=0.1, seed=0):
    """Every pair of lines an edge: weight ``inside`` within a planted group, else ``across``."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    n = len(truth)
    i, j = np.triu_indices(n, k=1)
    keep = rng.random(len(i)) < 0.5
    pairs = np.stack([i[keep], j[keep]], axis=1).astype(np.int64)
    weights = np.where(truth[pairs[:, 0]] == truth[pairs[:, 1]], inside, across)
    return pairs, weights.astype(np.float64), truth


def test_communities_recover_planted_groups_repeatably():
    pairs, weights, truth = _planted_graph([30, 20, 10])
    found = community_partition(pairs, weights, len(truth), seed=3)
    precision, recall, _ = edge_scores(found, truth.astype(str))
    assert precision == 1.0 and recall == 1.0
    assert found[0] == 0  # numbered in order of first member
    np.testing.assert_array_equal(found, community_partition(pairs, weights, len(truth), seed=3))


def test_labels_are_constraints():
    pairs, weights, truth = _planted_graph([30, 20])
    labels = np.full(len(truth), -1)
    labels[[0, 1]] = [0, 1]  # two names inside the first planted group
    labels[[30, 45]] = 2  # one name on two lines of the second
    found = community_partition(pairs, weights, len(truth), labels=labels)
    assert found[0] != found[1]
    assert found[30] == found[45]
    # every unlabelled line of the first group went to one of its two names
    assert set(found[2:30].tolist()) <= {found[0], found[1]}


def test_the_likelihood_prefers_the_true_partition():
    pairs, weights, truth = _planted_graph([25, 25, 10], inside=0.8, across=0.2)
    n = len(truth)
    true_ll = partition_log_likelihood(pairs, weights, truth)
    assert true_ll > partition_log_likelihood(pairs, weights, np.zeros(n, np.int64))
    assert true_ll > partition_log_likelihood(pairs, weights, np.arange(n))
    lumped = np.where(truth == 2, 1, truth)
    candidates = {"lumped": lumped, "true": truth, "split": np.arange(n)}
    assert choose_partition(pairs, weights, candidates) == "true"


def test_edge_weights_are_merge_probabilities_on_voice_neighbours(priors):
    episode = _episode(5, n=120, noise=2.0)
    confidence, merge = SpeakerGrouper(priors=priors)._models()
    pairs, weights = edge_weights(
        episode.context, confidence.predict(episode.context), merge, neighbours=8
    )
    assert pairs.shape[1] == 2 and (pairs[:, 0] < pairs[:, 1]).all()
    assert len(np.unique(pairs[:, 0] * 120 + pairs[:, 1])) == len(pairs)
    assert ((weights > 0) & (weights < 1)).all()
    same = episode.truth[pairs[:, 0]] == episode.truth[pairs[:, 1]]
    assert weights[same].mean() > weights[~same].mean() + 0.3


def test_the_community_graph_reuses_the_contexts_neighbour_search(priors):
    """The context searches `VOICE_KEPT` voice neighbours deep once; its statistics use the
    first k and the community graph the whole list, which is what a search of its own finds."""
    episode = _episode(6, n=150, noise=2.0)
    voice = episode.context.voice
    assert voice.kept.shape == (150, VOICE_KEPT)
    np.testing.assert_array_equal(voice.kept[:, : voice.indices.shape[1]], voice.indices)
    confidence, merge = SpeakerGrouper(priors=priors)._models()
    scores = confidence.predict(episode.context)
    for neighbours in (VOICE_KEPT, VOICE_KEPT + 5):  # from the kept list; a search of its own
        pairs, weights = edge_weights(episode.context, scores, merge, neighbours=neighbours)
        searched = edges_from_knn(knn(episode.lines.voice, neighbours)[0])
        np.testing.assert_array_equal(pairs, searched)
        assert len(weights) == len(pairs)


def test_the_grouper_searches_as_deep_as_its_community_graph_reads(priors):
    """A deeper `community_neighbours` deepens the context's one search, so the community
    graph still finds its list there rather than searching again."""
    episode = _episode(6, n=150, noise=2.0)
    for depth in (VOICE_KEPT, VOICE_KEPT + 5):
        params = DEFAULTS.replace(community_neighbours=depth)
        context = SpeakerGrouper(params, priors=priors)._context(episode.lines)
        assert context.voice.kept.shape == (150, depth)


def test_communities_hold_where_the_learned_threshold_is_out_of_its_depth(priors):
    # an episode twice as noisy as the priors' training episodes, with a balanced cast: the
    # similarity levels move, the learned threshold fails, the communities do not
    episode = _episode(11, n=300, noise=4.0, speakers=5, weights=[1.0] * 5)
    context = episode.context
    grouper = SpeakerGrouper(priors=priors)
    confidence, merge = grouper._models()
    predicted = confidence.predict(context)
    communities = community_clustering(context, predicted, merge)
    gated = (
        GatedClustering.from_params(grouper.params)
        .fit(context, confidence=predicted, merge=merge)
        .labels_
    )
    f1_communities = edge_scores(communities, episode.truth)[2]
    f1_gated = edge_scores(gated, episode.truth)[2]
    assert f1_communities > f1_gated + 0.1
    assert f1_communities > 0.85


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_the_grouper_runs_on_every_skeleton_and_keeps_labels(priors, mode):
    episode = _episode(7, n=200, noise=2.0)
    grouper = SpeakerGrouper(params_for_priors(priors).replace(community=mode), priors=priors)
    cold = grouper.propose(episode.lines)
    assert [p.line_id for p in cold.proposals] == episode.lines.line_ids
    assert cold.skeleton == {0: "gated", 1: "community"}.get(mode, cold.skeleton)
    assert cold.skeleton in ("community", "gated")
    labels = {episode.lines.line_ids[i]: str(episode.truth[i]) for i in range(0, 200, 10)}
    proposals = grouper.fit(episode.lines, labels).propose(episode.lines, labels).proposals
    for p in proposals:
        if p.line_id in labels:
            assert p.speaker == labels[p.line_id] and p.score == 1.0


def test_real_voice_episodes_weigh_as_one_type_in_the_priors_objective():
    from bench.train_priors import episode_type

    assert episode_type("queen-rio") == episode_type("queen-crash") == "real"
    assert episode_type("hard-seed101") == "hard"
    assert episode_type("standard-seed102") == "standard"


def test_the_prior_search_tries_the_skeletons_after_the_thresholds():
    from bench.train_priors import train

    episodes = [_episode(21, n=150, noise=2.0), _episode(22, n=150, noise=4.0, speakers=5)]
    grid = {"threshold": (0.5,), "gate": (0.3,)}
    priors, report = train(episodes, grid=grid, skeletons=({"community": 1}, {"community": 2}))
    assert report["options"]["threshold"] == 0.5
    chosen = params_for_priors(priors)
    assert chosen.community == int(report["options"].get("community", 0))
    assert set(report["episodes"]) == {"syn21", "syn22"}
