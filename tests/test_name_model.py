"""NameModel: evidence with each labelled line left out, the fit, "none", and its JSON."""

import json

import numpy as np
import pytest

from ml_backend.grouping.clusters import UNLABELLED
from ml_backend.grouping.context import build_context
from ml_backend.grouping.name_evidence import LOCAL_WINDOW, NAME_FEATURES, centred, evidence
from ml_backend.grouping.name_model import NameModel
from ml_backend.grouping.synthetic import synthetic_lines


def _codes_for(truth: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, list[str]]:
    names = sorted(set(truth[chosen].tolist()))
    codes = np.full(len(truth), UNLABELLED, dtype=np.int64)
    codes[chosen] = [names.index(t) for t in truth[chosen]]
    return codes, names


@pytest.fixture(scope="module")
def episode():
    lines, truth = synthetic_lines(240, speakers=6, noise=1.2, seed=3)
    return lines, truth, build_context(lines)


def test_evidence_matches_brute_force_and_leaves_the_line_out(episode):
    lines, truth, context = episode
    chosen = np.arange(0, 240, 3)
    codes, _ = _codes_for(truth, chosen)
    rows = np.array([0, 1, 2, 3, 119])
    F, G, valid = evidence(context, codes, rows)
    voice = centred(lines.voice, context.episode).astype(np.float64)
    for a, i in enumerate(rows.tolist()):
        for j in range(int(codes.max()) + 1):
            others = [k for k in np.flatnonzero(codes == j).tolist() if k != i]
            assert valid[a, j] == bool(others)
            if not others:
                continue
            sims = np.sort(voice[others] @ voice[i])[::-1]
            centroid = voice[others].sum(axis=0)
            near = [k for k in others if abs(k - i) <= LOCAL_WINDOW]
            expected = {
                "voice_best": sims[0],
                "voice_top3": sims[:3].mean(),
                "voice_centroid": centroid @ voice[i] / np.linalg.norm(centroid),
                "voice_local": max((voice[k] @ voice[i] for k in near), default=0.0),
                "near_12": np.log1p(len(near)),
                "previous": float(i - 1 in others),
                "following": float(i + 1 in others),
                "log_count": np.log1p(len(others)),
            }
            for name, value in expected.items():
                got = F[a, j, NAME_FEATURES.index(name)]
                assert got == pytest.approx(value, abs=1e-5), (i, j, name)
    # a labelled line never counts itself: its best voice match is below 1
    labelled_row = np.flatnonzero(rows == 0)[0]
    assert F[labelled_row, codes[0], NAME_FEATURES.index("voice_best")] < 0.999
    assert (G[:, 0] == 1.0).all()


def _prior() -> NameModel:
    """Trained as bench.train_priors does: every line of other episodes against random labels,
    its true name as the target, or "none" while nobody with its name is labelled."""
    subsets = []
    for seed in (11, 12):
        lines, truth = synthetic_lines(240, speakers=6, noise=1.2, seed=seed)
        context = build_context(lines)
        for share in (0.05, 0.2):
            rng = np.random.default_rng(seed)
            chosen = rng.choice(len(truth), size=round(share * len(truth)), replace=False)
            codes, names = _codes_for(truth, chosen)
            recoded = np.array([names.index(t) if t in names else -1 for t in truth])
            subsets.append((context, codes, recoded))
    return NameModel.fit_prior(subsets)


def test_centred_removes_each_episodes_mean():
    lines, _ = synthetic_lines(60, episodes=2, seed=4)
    episode = np.repeat([0, 1], 30)
    out = centred(lines.voice, episode)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    raw = lines.voice[:30] - lines.voice[:30].mean(axis=0)
    assert np.allclose(out[:30], raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_soft_context_counts_probabilities_of_unlabelled_neighbours(episode):
    _, truth, context = episode
    codes = np.full(len(truth), UNLABELLED, dtype=np.int64)
    codes[[10, 30]], codes[[20, 40]] = 0, 1
    soft = np.zeros((len(truth), 2))
    soft[5, 0] = 0.5  # unlabelled line 5, right before line 6
    soft[10, 1] = 0.9  # ignored: line 10 is labelled, so it counts fully for its own name
    F, _, _ = evidence(context, codes, np.array([6, 7, 11]), soft=soft)
    following = NAME_FEATURES.index("following")
    previous = NAME_FEATURES.index("previous")
    near_3 = NAME_FEATURES.index("near_3")
    assert F[0, 0, previous] == 0.5
    assert F[1, 0, near_3] == pytest.approx(np.log1p(1.5))  # line 5 (0.5) and line 10 (1)
    assert F[2, 0, previous] == 1.0 and F[2, 1, previous] == 0.0
    assert F[0, 0, following] == 0.0


def test_fit_names_lines_and_says_none_for_an_unlabelled_speaker(episode):
    _, truth, context = episode
    rng = np.random.default_rng(0)
    hidden = truth == "S5"  # nobody labels this speaker
    pool = np.flatnonzero(~hidden)
    chosen = np.sort(rng.choice(pool, size=60, replace=False))
    codes, names = _codes_for(truth, chosen)
    # the labels alone never show "none" (every labelled name has other labelled lines), so the
    # prior has to teach it
    model = NameModel().fit(context, codes, prior=_prior(), strength=50.0)
    rows = np.flatnonzero(codes == UNLABELLED)
    p = model.predict_proba(context, codes, rows)
    assert p.shape == (len(rows), 1 + len(names))
    assert np.allclose(p.sum(axis=1), 1.0)
    best = p.argmax(axis=1)
    known = ~hidden[rows]
    predicted = np.array(["<none>", *names])[best]
    accuracy = np.mean(predicted[known] == truth[rows][known])
    assert accuracy >= 0.8
    # lines of the speaker nobody labelled are mostly "none", known speakers' rarely
    assert np.mean(best[~known] == 0) >= 0.6
    assert np.mean(best[known] == 0) <= 0.2


def test_prior_pulls_the_fit(episode):
    _, truth, context = episode
    chosen = np.arange(0, 240, 2)
    codes, _ = _codes_for(truth, chosen)
    prior = NameModel().fit(context, codes)
    few, _ = _codes_for(truth, np.array([0, 1, 2, 3]))
    free = NameModel().fit(context, few)
    pulled = NameModel().fit(context, few, prior=prior, strength=1e4)
    assert np.abs(pulled.coef_ - prior.coef_).max() < 0.05
    assert np.abs(free.coef_ - prior.coef_).max() > np.abs(pulled.coef_ - prior.coef_).max()


def test_json_round_trip_and_refuses_other_features(episode):
    _, truth, context = episode
    codes, _ = _codes_for(truth, np.arange(0, 240, 4))
    model = NameModel().fit(context, codes)
    again = NameModel.from_json(json.loads(json.dumps(model.to_json())))
    assert np.allclose(
        again.predict_proba(context, codes), model.predict_proba(context, codes), atol=1e-12
    )
    broken = model.to_json()
    broken["name_features"] = broken["name_features"][:-1]
    with pytest.raises(ValueError, match="features differ"):
        NameModel.from_json(broken)


def test_no_labels_gives_no_names(episode):
    _, _, context = episode
    codes = np.full(len(context.lines), UNLABELLED, dtype=np.int64)
    F, _, valid = evidence(context, codes)
    assert F.shape[1] == 0 and valid.shape == (len(codes), 0)


def test_sure_lines_count_as_labels_for_a_second_look_at_the_rest(episode):
    _, truth, context = episode
    chosen = np.arange(0, 240, 12)  # few labels: 20 of 240
    codes, _ = _codes_for(truth, chosen)
    model = NameModel().fit(context, codes, prior=_prior(), strength=50.0)
    rows = np.flatnonzero(codes == UNLABELLED)
    plain = model.predict_proba(context, codes, rows)
    np.testing.assert_array_equal(model.predict_proba(context, codes, rows, sure=1.0), plain)
    widened = model.predict_proba(context, codes, rows, sure=0.7)
    best = plain[:, 1:].argmax(axis=1)
    sure = plain[np.arange(len(rows)), 1 + best] >= 0.7
    assert 0 < sure.sum() < len(rows)
    # the sure rows keep their probabilities; the others are what the model says once the
    # sure rows are labelled with their best name
    np.testing.assert_array_equal(widened[sure], plain[sure])
    expanded = codes.copy()
    expanded[rows[sure]] = best[sure]
    np.testing.assert_allclose(
        widened[~sure], model.predict_proba(context, expanded, rows[~sure]), atol=1e-12
    )
    assert not np.allclose(widened[~sure], plain[~sure])
    # with every row sure there is nothing left for a second look
    np.testing.assert_array_equal(model.predict_proba(context, codes, rows, sure=0.0), plain)
