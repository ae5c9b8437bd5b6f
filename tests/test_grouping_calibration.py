import csv

import numpy as np
import pytest

from ml_backend.grouping.calibration import FEATURES, ScoreCalibrator, reliability
from tests.episode_fixtures import GeneratedEpisode, generated_and_imported


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


@pytest.fixture(scope="module")
def held_out_episode(tmp_path_factory: pytest.TempPathFactory) -> GeneratedEpisode:
    """``standard`` seed 1, an evaluation episode the shipped priors never saw
    (`bench.episode_cache.EVALUATION`), built here rather than read from the benchmark cache;
    generating, importing and embedding its 330 lines takes about 90 s on 2 cores."""
    return generated_and_imported("standard", 1, tmp_path_factory.mktemp("standard-seed1"))


@pytest.mark.slow
def test_scores_of_the_shipped_priors_are_calibrated_on_a_held_out_episode(
    held_out_episode: GeneratedEpisode,
) -> None:
    """Ten per cent of the lines labelled at random; the others' scores must mean what they
    say: expected calibration error under 0.1, and each 0.7-0.9 bin of 20 lines or more
    within 0.15 (or 2.5 standard errors) of the share of its lines that is right."""
    from bench.train_priors import proposal_right
    from ml_backend.episode_lines import load_lines
    from ml_backend.grouping import SpeakerGrouper

    lines = load_lines([held_out_episode.imported])
    with held_out_episode.truth.open(encoding="utf-8") as stream:
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
