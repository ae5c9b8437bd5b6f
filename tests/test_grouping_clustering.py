import numpy as np
import pytest

from ml_backend.grouping.clustering import GatedClustering, gated_clustering
from ml_backend.grouping.context import build_context
from ml_backend.grouping.linear import LogisticModel
from ml_backend.grouping.lines import EpisodeLines
from ml_backend.grouping.merge import FEATURES, MergeClassifier


def _lines(voice):
    voice = np.asarray(voice, np.float32)
    voice /= np.linalg.norm(voice, axis=1, keepdims=True)
    n = len(voice)
    return EpisodeLines(
        line_ids=[f"e:{i + 1}" for i in range(n)],
        episodes=["e"] * n,
        starts=np.arange(n) * 10.0,
        ends=np.arange(n) * 10.0 + 2,
        texts=[""] * n,
        voice=voice,
        image=None,
        quality={"duration": np.full(n, 2.0, np.float32)},
        voice_model="v",
        image_model=None,
    )


def single_linkage(cut):
    """A merge model that only looks at the edge's line similarity: P > 0.5 iff sim > cut."""
    model = LogisticModel(feature_names=FEATURES)
    model.mean_, model.scale_ = np.zeros(len(FEATURES)), np.ones(len(FEATURES))
    model.coef_ = np.zeros(len(FEATURES))
    model.coef_[FEATURES.index("voice_sim")] = 50.0
    model.intercept_ = -50.0 * cut
    merge = MergeClassifier()
    merge.model_ = model
    return merge


def _angles(degrees):
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1)


# two tight pairs (A at 0°, 10°; B at 60°, 70°) and a bridge line W at 35°
CHAIN = _angles([0, 10, 60, 70, 35])


def _confidence(values):
    values = np.asarray(values, float)
    return {"voice": values, "image": np.zeros_like(values)}


def test_without_gate_the_bridge_chains_everything():
    context = build_context(_lines(CHAIN), k=4)
    merge = single_linkage(np.cos(np.radians(30)))
    labels = gated_clustering(context, _confidence([1, 1, 1, 1, 1]), merge, threshold=0.5, gate=0.0)
    assert len(set(labels.tolist())) == 1


def test_weak_line_joins_while_alone_but_never_bridges():
    context = build_context(_lines(CHAIN), k=4)
    merge = single_linkage(np.cos(np.radians(30)))
    labels = gated_clustering(
        context, _confidence([1, 1, 1, 1, 0.1]), merge, threshold=0.5, gate=0.5
    )
    assert labels[0] == labels[1] and labels[2] == labels[3]
    assert labels[0] != labels[2]
    assert labels[4] in (labels[0], labels[2])  # it did join one side


def test_weak_line_left_for_attach_when_weak_joins_is_off():
    context = build_context(_lines(CHAIN), k=4)
    merge = single_linkage(np.cos(np.radians(30)))
    labels = gated_clustering(
        context,
        _confidence([1, 1, 1, 1, 0.1]),
        merge,
        threshold=0.5,
        gate=0.5,
        weak_joins=False,
    )
    assert labels[4] not in (labels[0], labels[2])


def test_two_weak_ends_are_never_joined():
    context = build_context(_lines(_angles([0, 5])), k=1)
    labels = gated_clustering(
        context, _confidence([0.1, 0.2]), single_linkage(0.5), threshold=0.5, gate=0.5
    )
    assert labels[0] != labels[1]


def test_same_name_starts_merged_and_different_names_never_merge():
    context = build_context(_lines(_angles([0, 2, 4, 90])), k=3)
    names = np.array([0, 1, -1, 0])  # lines 0 and 3 are far apart but share a name
    labels = gated_clustering(
        context,
        _confidence([1, 1, 1, 1]),
        single_linkage(0.9),
        threshold=0.5,
        gate=0.0,
        labels=names,
    )
    assert labels[0] == labels[3]
    assert labels[0] != labels[1]
    assert labels[2] in (labels[0], labels[1])


@pytest.mark.parametrize("threshold, expected", [(0.01, 1), (0.99, 5)])
def test_threshold_decides(threshold, expected):
    context = build_context(_lines(_angles([0, 20, 40, 60, 80])), k=4)
    model = single_linkage(np.cos(np.radians(20)))  # 20° apart sits exactly at P = 0.5
    estimator = GatedClustering(threshold=threshold, gate=0.0).fit(
        context, confidence=_confidence(np.ones(5)), merge=model
    )
    assert estimator.n_clusters_ == expected


@pytest.mark.parametrize("snr_db, expected", [(60.0, 1), (0.0, 5)])
def test_noise_slope_raises_the_threshold_of_a_noisy_episode(snr_db, expected):
    # every pair 20° apart would merge at P = 0.5 (threshold 0.3); a noisy episode adds 0.6
    lines = _lines(_angles([0, 20, 40, 60, 80]))
    lines.quality["snr_db"] = np.full(5, snr_db, np.float32)
    model = single_linkage(np.cos(np.radians(20)) - 0.01)
    labels = gated_clustering(
        build_context(lines, k=4),
        _confidence(np.ones(5)),
        model,
        threshold=0.3,
        gate=0.0,
        noise_slope=0.6,
    )
    assert len(set(labels.tolist())) == expected
