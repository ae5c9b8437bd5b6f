import json

import numpy as np
import pytest

from ml_backend.grouping.linear import LogisticModel


def _data(seed=0, n=400):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    p = 1 / (1 + np.exp(-(2 * X[:, 0] - X[:, 1])))
    return X, (rng.random(n) < p).astype(float)


def test_fit_returns_self_and_learns_the_signs():
    X, y = _data()
    model = LogisticModel(feature_names=("a", "b", "c"))
    assert model.fit(X, y) is model
    assert model.coef_[0] > 0.5 and model.coef_[1] < -0.2 and abs(model.coef_[2]) < 0.3


def test_deterministic_and_json_round_trip():
    X, y = _data()
    a = LogisticModel().fit(X, y)
    b = LogisticModel().fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    c = LogisticModel.from_json(json.loads(json.dumps(a.to_json())))
    np.testing.assert_allclose(c.predict_proba(X), a.predict_proba(X))


def test_prior_strength_pulls_towards_the_prior():
    X, y = _data()
    prior = LogisticModel().fit(X, y)
    flipped = 1 - y[:20]
    weak = LogisticModel().fit(X[:20], flipped, prior=prior, strength=1.0)
    strong = LogisticModel().fit(X[:20], flipped, prior=prior, strength=1e4)
    assert np.allclose(strong.coef_, prior.coef_, atol=0.02)
    assert np.abs(weak.coef_ - prior.coef_).sum() > np.abs(strong.coef_ - prior.coef_).sum()


def test_raw_weights_reproduce_the_logits():
    X, y = _data()
    model = LogisticModel().fit(X, y)
    w, b = model.raw_weights()
    np.testing.assert_allclose(X @ w + b, model.decision_function(X))


def test_mismatched_json_is_refused():
    X, y = _data()
    values = LogisticModel().fit(X, y).to_json()
    values["coef"] = values["coef"][:2]
    with pytest.raises(ValueError, match="mismatched"):
        LogisticModel.from_json(values)
