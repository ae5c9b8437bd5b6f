"""The grouper as an estimator: one frozen parameter dataclass, explicit priors overrides, a
pure `propose`, and the clustering as its own estimator."""

import dataclasses
import json
import logging

import numpy as np
import pytest

from bench.train_priors import Episode, _identity_calibrator, _priors, fit_models
from ml_backend.grouping import GrouperParams, SpeakerGrouper, SpeakerNumbers
from ml_backend.grouping.clustering import GatedClustering, gated_clustering, reassign_lines
from ml_backend.grouping.context import build_context
from ml_backend.grouping.params import DEFAULTS, ParamsOverride, params_for_priors
from ml_backend.grouping.priors import PACKAGED, Priors, PriorsError, load_priors
from ml_backend.grouping.synthetic import synthetic_lines


def _episode(seed, n=300, **kwargs):
    lines, truth = synthetic_lines(n, seed=seed, **kwargs)
    codes = np.unique(truth, return_inverse=True)[1].reshape(-1)
    return Episode(f"syn{seed}", lines, truth, build_context(lines), codes)


@pytest.fixture(scope="module")
def trained():
    """(confidence, merge, lines) fitted on two synthetic episodes, as bench.train_priors does."""
    train = [_episode(1), _episode(2, noise=0.9)]
    confidence, merge = fit_models(train)
    return confidence, merge, train[0].lines


@pytest.fixture(scope="module")
def episode():
    return _episode(7, n=300)


def test_params_are_frozen_and_typed():
    params = GrouperParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.threshold = 0.9  # type: ignore[misc]
    assert GrouperParams.from_json({"reassign_rounds": 3.0}).reassign_rounds == 3
    assert GrouperParams.from_json({"weak_joins": 0.0}).weak_joins is False
    with pytest.raises(ValueError, match=r"reassign_rounds must be int, got 2\.5"):
        GrouperParams(reassign_rounds=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must be a number"):
        GrouperParams(threshold=float("nan"))
    with pytest.raises(ValueError, match=r"unknown grouper parameter.*thresold"):
        params.replace(thresold=0.5)


def test_the_packaged_priors_hold_weights_only():
    values = json.loads(PACKAGED.read_text(encoding="utf-8"))
    assert "options" not in values and "params_override" not in values
    priors = load_priors()
    assert priors.params_override is None
    assert params_for_priors(priors) == DEFAULTS


def test_an_override_in_a_priors_file_is_applied_and_logged(trained, tmp_path, caplog):
    confidence, merge, lines = trained
    path = tmp_path / "mine.json"
    _priors(confidence, merge, _identity_calibrator(), {"threshold": 0.45}, lines).save(path)
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["params_override"] == {"version": 2, "values": {"threshold": 0.45}}
    with caplog.at_level(logging.WARNING, logger="ml_backend.grouping.params"):
        grouper = SpeakerGrouper(priors=path)
    assert grouper.params == DEFAULTS.replace(threshold=0.45)
    assert f"threshold {DEFAULTS.threshold} -> 0.45" in caplog.text and str(path) in caplog.text
    # explicit parameters are used as given
    assert SpeakerGrouper(GrouperParams(), priors=path).params == DEFAULTS


def test_an_override_for_another_parameters_version_is_refused(trained, tmp_path):
    confidence, merge, lines = trained
    values = _priors(confidence, merge, _identity_calibrator(), None, lines).to_json()
    values["params_override"] = {"version": 99, "values": {"threshold": 0.45}}
    path = tmp_path / "future.json"
    path.write_text(json.dumps(values), encoding="utf-8")
    with pytest.raises(PriorsError, match=r"future\.json: .*override is for version 99"):
        load_priors(path)


def test_format_1_priors_read_their_options_as_a_version_1_override(trained):
    confidence, merge, lines = trained
    values = _priors(confidence, merge, _identity_calibrator(), None, lines).to_json()
    values["version"] = 1
    values["options"] = {"threshold": 0.3, "refine": 1.0, "attach": 0.6}
    priors = Priors.from_json(values)
    assert params_for_priors(priors) == DEFAULTS.replace(
        threshold=0.3, reassign_rounds=1, attach=0.6
    )


def test_propose_is_pure(trained, episode):
    confidence, merge, lines = trained
    priors = _priors(confidence, merge, _identity_calibrator(), None, lines)
    grouper = SpeakerGrouper(priors=priors)
    before = dict(vars(grouper))
    numbers = SpeakerNumbers()
    first = grouper.propose(episode.lines, speaker_numbers=numbers)
    assert vars(grouper).keys() == before.keys()
    assert numbers.to_json() == SpeakerNumbers().to_json()  # the caller's, untouched
    assert first.speaker_numbers is not numbers and first.speaker_numbers.members
    assert first.clusters.shape == (len(episode.lines),)
    assert first.score_features.shape[0] == len(episode.lines)
    numbered = {p.cluster for p in first.proposals if p.cluster >= 0}
    assert numbered == set(first.speaker_numbers.members)
    # the same call twice gives the same answer
    assert grouper.propose(episode.lines, speaker_numbers=numbers).proposals == first.proposals


def test_gated_clustering_is_the_clustering_then_the_reassignment(trained):
    confidence_model, merge, _ = trained
    context = _episode(9, n=300, noise=2.0).context
    confidence = confidence_model.predict(context)
    params = DEFAULTS.replace(threshold=0.5, detach=0.6)
    clustering = GatedClustering.from_params(params).fit(
        context, confidence=confidence, merge=merge
    )
    raw = gated_clustering(context, confidence, merge, threshold=0.5, gate=params.gate)
    assert np.array_equal(
        clustering.labels_,
        reassign_lines(
            context,
            confidence,
            merge,
            raw,
            np.full(len(raw), -1),
            rounds=params.reassign_rounds,
            move_margin=params.move_margin,
            detach=0.6,
        ),
    )
    assert clustering.n_clusters_ == clustering.labels_.max() + 1


def test_override_changes_lists_only_differences():
    override = ParamsOverride.from_json({"version": 2, "values": {"gate": 0.3, "attach": 0.5}})
    assert override.changes() == {"attach": 0.5}
    with pytest.raises(ValueError, match="unknown overridden grouper parameter"):
        ParamsOverride.from_json({"version": 2, "values": {"refine": 2}})


def test_a_grouper_saved_before_the_parameters_dataclass_still_loads(trained, episode, tmp_path):
    """A model folder written by format 1 (the backend's state survives an upgrade): its
    constructor options go on top of its priors' options, as they did."""
    confidence, merge, lines = trained
    priors = _priors(confidence, merge, _identity_calibrator(), None, lines)
    SpeakerGrouper(priors=priors).save(tmp_path)
    state = json.loads((tmp_path / "grouper.json").read_text(encoding="utf-8"))
    state["version"] = 1
    state["options"] = {"name_none_margin": 0.2, "refine": 1.0}
    del state["params"], state["params_version"]
    state["priors"]["version"] = 1
    state["priors"]["options"] = {"threshold": 0.4, "weak_joins": 1.0}
    (tmp_path / "grouper.json").write_text(json.dumps(state), encoding="utf-8")
    loaded = SpeakerGrouper.load(tmp_path)
    assert loaded.params == DEFAULTS.replace(threshold=0.4, name_none_margin=0.2, reassign_rounds=1)
    assert len(loaded.propose(episode.lines).proposals) == len(episode.lines)
