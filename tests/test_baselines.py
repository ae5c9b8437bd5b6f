"""The §5 baselines on synthetic clusters whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from bench.baselines import (
    average_linkage,
    cosine_distances,
    first_lines,
    hdbscan,
    knn_propagation,
    spectral_clustering,
    tune_linkage_threshold,
)
from ml_backend.metrics import edge_scores


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # small matrices: BLAS threads only contend on a busy machine (100x slower eigh seen)
    import scipy.linalg  # noqa: F401 - threadpoolctl limits only BLAS libraries already loaded
    import sklearn.cluster  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _blobs(sizes, *, dim=32, spread=0.15, seed=0):
    """Unit vectors around len(sizes) random centres; returns (vectors, truth labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows, truth = [], []
    for k, size in enumerate(sizes):
        points = centres[k] + spread * rng.normal(size=(size, dim)) / np.sqrt(dim)
        rows.append(points)
        truth += [f"s{k}"] * size
    vectors = np.concatenate(rows)
    order = rng.permutation(len(truth))  # interleave speakers like dialogue does
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True))[order]
    return vectors.astype(np.float32), [truth[i] for i in order]


AXES = np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2]]
"""Five lines on three orthogonal axes: cosine distance 0 within an axis, 1 across."""


def test_cosine_distances_of_axes():
    d = cosine_distances(AXES)
    assert d[0, 1] == 0 and d[0, 2] == pytest.approx(1) and d[4, 4] == 0


@pytest.mark.parametrize(
    ("threshold", "clusters"),
    [
        (0.5, [0, 0, 1, 1, 2]),  # within 0, across 1: a cut between gives the three axes
        (1.5, [0, 0, 0, 0, 0]),  # every average distance (at most 1) is under the cut
    ],
)
def test_average_linkage_at_a_known_cut(threshold, clusters):
    labels = average_linkage(AXES, threshold=threshold)
    assert edge_scores(clusters, labels).f1 in (1.0, None)
    assert len(set(labels.tolist())) == len(set(clusters))


def test_prototype_cut_on_blobs_is_perfect():
    vectors, truth = _blobs([20, 15, 10])
    assert edge_scores(truth, average_linkage(vectors)).f1 == 1.0


def test_lines_without_vectors_are_unassigned():
    vectors = AXES.copy()
    vectors[2] = 0
    labels = average_linkage(vectors, threshold=0.5)
    assert labels[2] == -1 and labels[3] >= 0
    assert spectral_clustering(vectors).labels[2] == -1
    assert knn_propagation(vectors, {0: "a"})[2] is None


def test_tuned_threshold_separates_training_blobs():
    episodes = [_blobs([20, 15, 10], seed=seed) for seed in range(3)]
    sweep = tune_linkage_threshold(episodes, thresholds=(0.005, 0.5, 1.4))
    # members sit ~0.02 apart in cosine distance, random centres ~1: 0.005 splits the blobs,
    # 1.4 joins them all, 0.5 is right
    assert sweep.best == 0.5
    assert sweep.mean_f1[1] == 1.0
    assert sweep.mean_f1[0] < 1.0 and sweep.mean_f1[2] < 1.0


def test_tuning_needs_episodes():
    with pytest.raises(ValueError, match="at least one training episode"):
        tune_linkage_threshold([])


@pytest.mark.parametrize(("count", "share", "expected"), [(25, 0.1, 3), (10, 0.1, 1), (4, 1.0, 4)])
def test_first_lines(count, share, expected):
    # ceil(0.1 * 25) = 3: the first three lines are labelled by hand
    truth = [f"c{i % 3}" for i in range(count)]
    labels = first_lines(truth, share)
    assert sorted(labels) == list(range(expected))


def test_knn_propagation_takes_the_nearest_labelled_line():
    labels = knn_propagation(AXES, {0: "a", 2: "b", 4: "c"})
    assert labels == ["a", "a", "b", "b", "c"]
    assert knn_propagation(AXES, {}) == [None] * 5


@pytest.mark.parametrize(("sizes", "seed"), [([30, 25, 20, 15], 0), ([40, 12], 1), ([25] * 6, 2)])
def test_spectral_finds_the_number_of_speakers(sizes, seed):
    vectors, truth = _blobs(sizes, seed=seed)
    result = spectral_clustering(vectors)
    assert result.speakers == len(sizes)
    assert edge_scores(truth, result.labels).f1 == 1.0


def test_spectral_with_fixed_pruning():
    vectors, _ = _blobs([30, 25, 20], seed=3)
    result = spectral_clustering(vectors, neighbours=8)
    assert (result.speakers, result.neighbours) == (3, 8)


def test_spectral_degenerate_inputs_return_early():
    assert spectral_clustering(AXES[:2]).labels.tolist() == [0, 0]
    assert spectral_clustering(np.zeros((0, 3), np.float32)).labels.tolist() == []


def test_hdbscan_finds_blobs():
    vectors, truth = _blobs([30, 25, 20], seed=4)
    labels = hdbscan(vectors)
    assigned = labels >= 0
    assert assigned.mean() > 0.8
    assert (
        edge_scores([t for t, a in zip(truth, assigned, strict=True) if a], labels[assigned]).f1
        == 1.0
    )


# --------------------------------------------------------------------------- the quality harness


def _fake_episode(folder, episode_id, vectors, truth):
    """An episode as bench.episode_cache leaves it: truth.csv, tasks.json, features.npz."""
    import json

    from ml_backend.features.store import FeatureStore, ModelInfo

    imported = folder / "import" / episode_id
    imported.mkdir(parents=True)
    rows = ["index,start,end,speaker,character,condition"]
    tasks = []
    for index, character in enumerate(truth, start=1):
        rows.append(f"{index},{index}.0,{index}.5,voice_{character},{character},clean")
        data = {"line_id": f"{episode_id}:{index}", "episode": episode_id, "index": index}
        tasks.append({"data": {**data, "start": float(index), "end": index + 0.5, "text": "hi"}})
    (folder / "truth.csv").write_text("\n".join(rows) + "\n")
    (imported / "tasks.json").write_text(json.dumps(tasks))
    store = FeatureStore()
    ids = [task["data"]["line_id"] for task in tasks]
    store.add(ids, voice=vectors, voice_model=ModelInfo("fake", "1", vectors.shape[1]))
    store.save(imported / "features.npz")
    (folder / "ready.json").write_text(json.dumps({"episode_dir": f"import/{episode_id}"}))


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory):
    """standard-seed1 and -seed101 (one episode each) and season-seed1 (two episodes)."""
    import json

    cache = tmp_path_factory.mktemp("cache")
    for name, seed in (("standard-seed1", 10), ("standard-seed101", 11)):
        vectors, truth = _blobs([20, 15, 10], seed=seed)
        _fake_episode(cache / name, f"ep-{name}", vectors, truth)
    # a season shares its cast: the same centres (seed 12) in both episodes
    vectors, truth = _blobs([24, 16, 12], seed=12)
    for part, (lo, hi) in enumerate(((0, 26), (26, 52)), start=1):
        _fake_episode(
            cache / "season-seed1" / f"ep{part:02d}", f"s{part}", vectors[lo:hi], truth[lo:hi]
        )
    (cache / "season-seed1" / "ready.json").write_text(json.dumps({"episodes": ["ep01", "ep02"]}))
    return cache


def test_load_set_joins_a_season_into_one_grouping(fake_cache):
    from bench.bench_quality import built, load_set

    data = load_set("season-seed1", "season", built("season", 1, cache=fake_cache))
    assert (
        len(data.truth) == 52 and data.lines.episodes[0] == "s1" and data.lines.episodes[-1] == "s2"
    )
    assert data.truth[:3] == [data.truth[i] for i in range(3)]
    assert built("hard", 7, cache=fake_cache) is None  # not built, and not built by asking


def test_quality_benchmark_end_to_end(fake_cache, tmp_path, capsys):
    import json

    from bench.bench_quality import main

    argv = [
        "--episodes",
        "standard-seed1",
        "season-seed1",
        "hard-seed9",
        "--train",
        "standard-seed101",
    ]
    code = main([*argv, "--out", str(tmp_path), "--cache", str(fake_cache), "--no-ours"])
    assert code == 0
    out = capsys.readouterr().out
    assert "mean per preset" in out and "linkage-tuned" in out
    report = json.loads((tmp_path / "quality.json").read_text())
    assert [row["name"] for row in report["sets"]] == ["standard-seed1", "season-seed1"]
    season = report["sets"][1]
    assert (season["lines"], season["episodes"], season["speakers"]) == (52, 2, 3)
    # well-separated blobs: the tuned cut and spectral clustering are perfect
    for method in ("linkage-tuned", "spectral"):
        assert season["methods"][method]["edge"]["f1"] == 1.0
    assert season["methods"]["knn-10%"]["labels_used"] == 6  # ceil(0.1 * 52)
    assert set(report["means"]) == {"standard", "season"}
    assert (tmp_path / "quality_pr.png").read_bytes()[:4] == b"\x89PNG"


def test_quality_benchmark_with_nothing_built(tmp_path, capsys):
    from bench.bench_quality import main

    assert main(["--episodes", "hard-seed1", "--cache", str(tmp_path), "--out", str(tmp_path)]) == 1
    assert "nothing to evaluate" in capsys.readouterr().err


def test_quality_benchmark_runs_ours_and_its_sweep(fake_cache, tmp_path, monkeypatch):
    import json
    from types import SimpleNamespace

    import bench.bench_quality as quality

    calls = []

    class StubGrouper:
        """Stands in for SpeakerGrouper: average linkage, labelled lines keep their label."""

        def __init__(self, threshold=0.5):
            self.threshold = threshold

        def fit(self, lines, labels):
            calls.append(("fit", len(labels)))
            return self

        def propose(self, lines, labels=None):
            calls.append((self.threshold, len(labels or {})))
            clusters = average_linkage(lines.voice, threshold=self.threshold)
            proposals = [
                SimpleNamespace(speaker=(labels or {}).get(line_id, f"Speaker {c}"))
                for line_id, c in zip(lines.line_ids, clusters, strict=True)
            ]
            return SimpleNamespace(proposals=proposals)

    monkeypatch.setattr(
        quality, "our_grouper", lambda *, seed=0, changes=None: StubGrouper(**(changes or {}))
    )
    argv = ["--episodes", "season-seed1", "--train", "--cache", str(fake_cache)]
    assert quality.main([*argv, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "quality.json").read_text())
    methods = report["sets"][0]["methods"]
    assert methods["ours"]["edge"]["f1"] == 1.0
    assert methods["ours+5%"]["labels_used"] == 3  # ceil(0.05 * 52)
    assert "linkage-tuned" not in methods  # nothing to tune on
    assert len(report["curves"]["ours"]["season"]["precision"]) == len(quality.OUR_THRESHOLDS)
    assert ("fit", 3) in calls and (0.5, 3) in calls
