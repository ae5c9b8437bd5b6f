"""Logistic regression on soft targets, in numpy, with an optional Gaussian prior on the weights.

Every learned piece of the grouping (confidence, merge probability, score calibration) is one of
these: a handful of weights that serialise to JSON, fit in milliseconds, and can be refit from a
few human labels while staying close to the shipped prior (`fit(..., prior=...)` adds
``strength/2 · ||θ - θ_prior||²`` to the summed log loss, so the prior counts like about
``strength`` examples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class LogisticModel:
    """P(y=1 | x) = sigmoid(((x - mean) / scale) · coef + intercept).

    Parameters
    ----------
    l2 : ridge penalty on the standardised weights (towards zero, or towards the prior's).
    feature_names : names of the columns, kept in the JSON for reading and checking.
    """

    def __init__(self, *, l2: float = 1.0, feature_names: Sequence[str] = ()) -> None:
        self.l2 = l2
        self.feature_names = tuple(feature_names)

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        sample_weight: np.ndarray | None = None,
        prior: LogisticModel | None = None,
        strength: float = 0.0,
    ) -> LogisticModel:
        """X : (n, f) features; y : (n,) targets in [0, 1] (soft targets allowed).

        With ``prior``, the standardisation is the prior's and the weights are pulled towards the
        prior's with ``strength`` (summed loss, so more data outweighs the prior).
        """
        X = np.asarray(X, dtype=np.float64)
        y = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X has shape {X.shape} for {len(y)} targets")
        if self.feature_names and X.shape[1] != len(self.feature_names):
            raise ValueError(f"X has {X.shape[1]} columns for {len(self.feature_names)} names")
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
        if prior is not None:
            self.mean_, self.scale_ = prior.mean_.copy(), prior.scale_.copy()
            theta0 = np.concatenate([prior.coef_, [prior.intercept_]])
            pull = float(strength)
        else:
            self.mean_ = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
            scale = X.std(axis=0) if len(X) else np.ones(X.shape[1])
            self.scale_ = np.where(scale > 1e-9, scale, 1.0)
            theta0 = np.zeros(X.shape[1] + 1)
            if len(y):
                rate = float(np.clip(np.average(y, weights=w), 1e-4, 1 - 1e-4))
                theta0[-1] = np.log(rate / (1 - rate))
            pull = 0.0
        Z = np.hstack([(X - self.mean_) / self.scale_, np.ones((len(X), 1))])
        if prior is not None:  # pull every parameter towards the prior's
            penalty, centre = np.full(len(theta0), pull), theta0
        else:  # plain ridge on the weights, none on the intercept
            penalty, centre = np.full(len(theta0), float(self.l2)), np.zeros(len(theta0))
            penalty[-1] = 0.0

        theta = _newton(Z, y, w, penalty, centre, theta0) if len(y) else theta0
        self.coef_ = theta[:-1].copy()
        self.intercept_ = float(theta[-1])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(n,) logits."""
        X = np.asarray(X, dtype=np.float64)
        return ((X - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n,) P(y = 1)."""
        return _sigmoid(self.decision_function(X))

    def raw_weights(self) -> tuple[np.ndarray, float]:
        """Weights on the unstandardised features: logit = X @ w + b."""
        w = self.coef_ / self.scale_
        return w, float(self.intercept_ - np.dot(self.mean_, w))

    def to_json(self) -> dict[str, Any]:
        return {
            "feature_names": list(self.feature_names),
            "l2": self.l2,
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> LogisticModel:
        model = cls(l2=float(values.get("l2", 1.0)), feature_names=values["feature_names"])
        model.mean_ = np.asarray(values["mean"], dtype=np.float64)
        model.scale_ = np.asarray(values["scale"], dtype=np.float64)
        model.coef_ = np.asarray(values["coef"], dtype=np.float64)
        model.intercept_ = float(values["intercept"])
        sizes = {len(model.mean_), len(model.scale_), len(model.coef_)}
        if len(sizes) != 1 or (model.feature_names and sizes != {len(model.feature_names)}):
            raise ValueError("logistic model JSON has weights of mismatched lengths")
        return model


def _newton(
    Z: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    penalty: np.ndarray,
    centre: np.ndarray,
    theta: np.ndarray,
    *,
    iterations: int = 50,
    tolerance: float = 1e-9,
) -> np.ndarray:
    """Minimise sum w·logloss(Z θ, y) + ½ Σ penalty (θ - centre)² by damped Newton steps.

    A few dozen weights: the exact Hessian is tiny, so this converges in a handful of steps,
    deterministically, and faster than a quasi-Newton solver's bookkeeping.
    """

    def objective(theta: np.ndarray) -> float:
        z = Z @ theta
        diff = theta - centre
        return float(np.sum(w * (np.logaddexp(0.0, z) - y * z)) + 0.5 * np.sum(penalty * diff**2))

    value = objective(theta)
    ridge = np.diag(penalty + 1e-9)
    for _ in range(iterations):
        p = _sigmoid(Z @ theta)
        grad = Z.T @ (w * (p - y)) + penalty * (theta - centre)
        hessian = (Z * (w * p * (1 - p))[:, None]).T @ Z + ridge
        try:
            step = np.linalg.solve(hessian, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hessian, grad, rcond=None)[0]
        scale = 1.0
        while scale > 1e-4:
            candidate = theta - scale * step
            new_value = objective(candidate)
            if new_value <= value:
                break
            scale *= 0.5
        else:
            break
        theta, improvement, value = candidate, value - new_value, new_value
        if improvement <= tolerance * max(1.0, abs(value)):
            break
    return theta


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))
