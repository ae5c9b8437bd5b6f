import csv
import json

import numpy as np
import pytest

from ml_backend.grouping.calibration import FEATURES, ScoreCalibrator, reliability


def test_calibrator_is_reliable_on_data_it_did_not_see():
    rng = np.random.default_rng(0)

    def draw(n):
        X = rng.normal(size=(n, len(FEATURES)))
        p = 1 / (1 + np.exp(-(1.5 * X[:, 0] - X[:, 2] + 0.5)))
        return X, (rng.random(n) < p).astype(float)

    calibrator = ScoreCalibrator().fit(*draw(4000))
    X, right = draw(4000)
    for mean_score, share_right, count in reliability(calibrator.predict(X), right):
        if count >= 200:  # within three standard errors of the bin's share
            error = 3 * np.sqrt(mean_score * (1 - mean_score) / count)
            assert abs(mean_score - share_right) < error + 0.01


def test_reliability_bins():
    scores = np.array([0.05, 0.15, 0.85, 0.95, 0.9])
    right = np.array([0, 0, 1, 1, 0])
    bins = reliability(scores, right, bins=2)
    assert bins[0] == pytest.approx((0.1, 0.0, 2))
    assert bins[1][2] == 3 and bins[1][1] == pytest.approx(2 / 3)


def _held_out_episode():
    """An evaluation episode of the benchmark cache (never seen by the priors), if built."""
    from bench.episode_cache import CACHE

    folder = CACHE / "standard-seed1"
    if not (folder / "ready.json").is_file():
        pytest.skip("benchmark episode standard-seed1 is not built (python -m bench.episode_cache)")
    return folder, folder / json.loads((folder / "ready.json").read_text())["episode_dir"]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="known weakness: on standard episodes scores near 0.75 are right ~95% of the time "
    "(a line that also fits a second cluster of the same speaker looks doubtful); the "
    "calibrator pools standard and hard training episodes",
)
def test_scores_of_the_shipped_priors_are_calibrated_on_a_held_out_episode():
    from bench.train_priors import proposal_right
    from ml_backend.episode_lines import load_lines
    from ml_backend.grouping import SpeakerGrouper

    folder, imported = _held_out_episode()
    lines = load_lines([imported])
    with (folder / "truth.csv").open(encoding="utf-8") as stream:
        character = {int(row["index"]): row["character"] for row in csv.DictReader(stream)}
    truth = np.array([character[int(i.rsplit(":", 1)[1])] for i in lines.line_ids])
    rng = np.random.default_rng(0)
    labelled = rng.choice(len(truth), size=len(truth) // 10, replace=False)
    labels = {lines.line_ids[i]: str(truth[i]) for i in labelled}
    proposals = SpeakerGrouper().propose(lines, labels).proposals
    right = proposal_right(proposals, truth)
    keep = np.array([p.speaker is not None and p.line_id not in labels for p in proposals])
    scores = np.array([p.score for p in proposals])[keep]
    bins = reliability(scores, right[keep], bins=5)
    total = sum(count for *_, count in bins)
    expected_error = sum(abs(s - r) * c for s, r, c in bins) / total
    assert expected_error < 0.1, bins
    for mean_score, share_right, count in bins:
        if 0.7 <= mean_score <= 0.9 and count >= 20:
            tolerance = max(0.15, 2.5 * np.sqrt(mean_score * (1 - mean_score) / count))
            assert abs(mean_score - share_right) < tolerance, bins
