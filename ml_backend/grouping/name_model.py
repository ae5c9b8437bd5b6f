"""Which known name each unlabelled line most probably has, learned from the labels themselves.

The clustering decides from the embeddings alone which lines belong together, and names follow
clusters. Once annotators have named a few dozen lines, those labels are better evidence than
any cluster: a noisy line may sit far from every cluster yet still be closest to the labelled
lines of one character, and conversations take turns, so who was labelled in the lines around
it says who is likely to speak. `NameModel` is a conditional logit over the names already given
plus one "none of them" option:

    P(name j | line i) ∝ exp(w · f(i, j)),   P(none | i) ∝ exp(b · g(i))

``f`` is the line's evidence for name j (voice and image similarity to j's labelled lines,
overall and within the scene around it; how often j was labelled close by, and on the line just
before or after; how often j has been labelled at all); ``g`` is the evidence that the line's
speaker has no label yet (how far it is from every labelled line). Both are computed by the
pure functions of `name_evidence`; this module is the estimator. The weights are fitted on
the labelled lines themselves, each one scored with itself left out, so a line whose name
nobody else holds teaches the "none" option. That fit takes milliseconds and is pulled towards
prior weights trained on the benchmark's training episodes, so a handful of labels cannot push
it far.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize

from ml_backend.grouping.clusters import UNLABELLED
from ml_backend.grouping.context import LineContext
from ml_backend.grouping.name_evidence import (
    NAME_FEATURES,
    NONE_FEATURES,
    evidence,
    with_context,
)


class NameModel:
    """Conditional logit over the known names plus "none"; weights in ``coef_`` (fitted).

    Parameters
    ----------
    l2 : ridge penalty on the weights (towards zero, or towards the prior's weights).
    """

    def __init__(self, *, l2: float = 1.0) -> None:
        self.l2 = l2
        self.refine_: NameModel | None = None

    # ------------------------------------------------------------------ fit / predict

    def fit(
        self,
        context: LineContext,
        codes: np.ndarray,
        *,
        prior: NameModel | None = None,
        strength: float = 0.0,
    ) -> NameModel:
        """Fit on the labelled lines of one call (each scored with itself left out).

        Two stages when the prior has them (or without a prior): the second sees, around each
        line, the first stage's probabilities for the unlabelled lines as well as the labels.
        """
        everyone = np.arange(len(codes))
        F_all, G_all, valid_all = evidence(context, codes, everyone)
        rows = np.flatnonzero(codes != UNLABELLED)
        F, G, valid = F_all[rows], G_all[rows], valid_all[rows]
        own = codes[rows]
        target = np.where(valid[np.arange(len(rows)), own], own + 1, 0)  # 0 = none
        self.fit_features([(F, G, valid, target)], prior=prior, strength=strength)
        self.refine_ = None
        if prior is None or prior.refine_ is not None:
            soft = self.proba_from(F_all, G_all, valid_all)[:, 1:]
            second = with_context(context, codes, rows, F, G, valid, soft)
            self.refine_ = NameModel(l2=self.l2).fit_features(
                [(*second, target)],
                prior=None if prior is None else prior.refine_,
                strength=strength,
            )
        return self

    @classmethod
    def fit_prior(
        cls,
        subsets: Sequence[tuple[LineContext, np.ndarray, np.ndarray]],
        *,
        l2: float = 1.0,
    ) -> NameModel:
        """Prior weights, both stages, from (context, codes, truth) label subsets of episodes
        whose every speaker is known (see `examples` for ``truth``)."""
        first = [cls.examples(context, codes, truth) for context, codes, truth in subsets]
        model = cls(l2=l2).fit_features(first)
        second = []
        for (context, codes, _), (F, G, valid, target) in zip(subsets, first, strict=True):
            soft = model.proba_from(F, G, valid)[:, 1:]
            everyone = np.arange(len(codes))
            second.append((*with_context(context, codes, everyone, F, G, valid, soft), target))
        model.refine_ = cls(l2=l2).fit_features(second)
        return model

    def fit_features(
        self,
        groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
        *,
        prior: NameModel | None = None,
        strength: float = 0.0,
    ) -> NameModel:
        """Fit on precomputed (F, G, valid, target) groups; target 0 = none, j + 1 = name j.

        Several groups (episodes, label subsets) are pooled; their name counts may differ."""
        size = len(NAME_FEATURES) + len(NONE_FEATURES)
        if prior is not None:
            self.scale_, self.none_scale_ = prior.scale_.copy(), prior.none_scale_.copy()
            theta0 = np.concatenate([prior.coef_ * prior.scale_, prior.none_ * prior.none_scale_])
        else:
            self.scale_, self.none_scale_ = _scales(groups)
            theta0 = np.zeros(size)
        groups = [
            (F / self.scale_, G / self.none_scale_, valid, target) for F, G, valid, target in groups
        ]
        pull = float(strength) if prior is not None else 0.0
        l2 = self.l2

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[: len(NAME_FEATURES)], theta[len(NAME_FEATURES) :]
            total, grad = 0.0, np.zeros_like(theta)
            for F, G, valid, target in groups:
                if not len(target):
                    continue
                logits = np.concatenate([(G @ b)[:, None], np.where(valid, F @ w, -np.inf)], axis=1)
                top = logits.max(axis=1, keepdims=True)
                p = np.exp(logits - top)
                z = p.sum(axis=1, keepdims=True)
                p /= z
                picked = logits[np.arange(len(target)), target]
                total -= float((picked - top[:, 0] - np.log(z[:, 0])).sum())
                err = p.copy()
                err[np.arange(len(target)), target] -= 1.0
                grad[: len(NAME_FEATURES)] += np.einsum("rj,rjf->f", err[:, 1:], F)
                grad[len(NAME_FEATURES) :] += err[:, 0] @ G
            gap = theta - theta0  # theta0 is 0 without a prior, where pull is 0 too
            total += 0.5 * (l2 + pull) * float(gap @ gap)
            grad += (l2 + pull) * gap
            return total, grad

        result = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 200})
        # weights are kept on the raw features, so that predicting needs no scaling step
        self.coef_ = result.x[: len(NAME_FEATURES)] / self.scale_
        self.none_ = result.x[len(NAME_FEATURES) :] / self.none_scale_
        return self

    @classmethod
    def examples(
        cls,
        context: LineContext,
        codes: np.ndarray,
        truth: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One `fit_features` group for every line, from known truth: (F, G, valid, target).

        truth : (n,) int code of every line's speaker in ``codes``' numbering where that
        speaker is labelled, else -1 (so its target is "none"). Unlabelled lines are what a
        proposal faces; only truth can say whom they belong to, so this is for training the
        prior on benchmark episodes.
        """
        F, G, valid = evidence(context, codes)
        rows = np.arange(len(truth))
        known = (truth >= 0) & valid[rows, np.maximum(truth, 0)]
        return F, G, valid, np.where(known, truth + 1, 0)

    def predict_proba(
        self,
        context: LineContext,
        codes: np.ndarray,
        rows: np.ndarray | None = None,
        *,
        sure: float = 1.0,
    ) -> np.ndarray:
        """(r, 1 + J): P(none), then P(name j) for j = 0..J-1 (the codes' order).

        sure : where below 1, unlabelled rows whose best name reaches this P count as labelled
            with it in a second pass over the other rows. With few labels a character's lines
            are mostly far from its labelled ones, and the lines the model is sure of bring its
            evidence closer (self-training, without refitting the weights). The sure rows keep
            their first-pass probabilities.
        """
        rows = np.arange(len(codes)) if rows is None else np.asarray(rows, dtype=np.int64)
        p = self._proba(context, codes, rows)
        if sure >= 1.0 or p.shape[1] < 2 or not len(rows):
            return p
        best = p[:, 1:].argmax(axis=1)
        confident = (p[np.arange(len(rows)), 1 + best] >= sure) & (codes[rows] == UNLABELLED)
        if not confident.any() or confident.all():
            return p
        widened = codes.copy()
        widened[rows[confident]] = best[confident]
        p[~confident] = self._proba(context, widened, rows[~confident])
        return p

    def _proba(self, context: LineContext, codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.refine_ is None:
            return self.proba_from(*evidence(context, codes, rows))
        F, G, valid = evidence(context, codes)
        soft = self.proba_from(F, G, valid)[:, 1:]
        second = with_context(context, codes, rows, F[rows], G[rows], valid[rows], soft)
        return self.refine_.proba_from(*second)

    def proba_from(self, F: np.ndarray, G: np.ndarray, valid: np.ndarray) -> np.ndarray:
        logits = np.concatenate(
            [(G @ self.none_)[:, None], np.where(valid, F @ self.coef_, -np.inf)], axis=1
        )
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    # ------------------------------------------------------------------ files

    def to_json(self) -> dict[str, Any]:
        return {
            "l2": self.l2,
            "name_features": list(NAME_FEATURES),
            "none_features": list(NONE_FEATURES),
            "coef": [float(v) for v in self.coef_],
            "none": [float(v) for v in self.none_],
            "scale": [float(v) for v in self.scale_],
            "none_scale": [float(v) for v in self.none_scale_],
            "refine": None if self.refine_ is None else self.refine_.to_json(),
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> NameModel:
        if (
            tuple(values.get("name_features", ())) != NAME_FEATURES
            or tuple(values.get("none_features", ())) != NONE_FEATURES
        ):
            raise ValueError("name model features differ from this version's")
        model = cls(l2=float(values.get("l2", 1.0)))
        model.coef_ = np.asarray(values["coef"], dtype=np.float64)
        model.none_ = np.asarray(values["none"], dtype=np.float64)
        model.scale_ = np.asarray(values["scale"], dtype=np.float64)
        model.none_scale_ = np.asarray(values["none_scale"], dtype=np.float64)
        refine = values.get("refine")
        model.refine_ = None if refine is None else cls.from_json(refine)
        return model


def _scales(
    groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """How much each feature varies where it matters, so one ridge penalty fits all of them.

    A name feature only matters relative to the same line's other names (a softmax ignores
    what all of them share), so its scale is the spread around each line's mean over its
    names; a none feature's is its plain spread over lines (the bias keeps scale 1).
    """
    deviations, nones = [], []
    for F, G, valid, _ in groups:
        if F.size:
            count = np.maximum(valid.sum(axis=1, keepdims=True), 1)
            mean = np.where(valid[..., None], F, 0.0).sum(axis=1, keepdims=True) / count[..., None]
            deviations.append((F - mean)[valid])
        nones.append(G)
    spread = np.vstack(deviations).std(axis=0) if deviations else np.ones(len(NAME_FEATURES))
    none_spread = np.vstack(nones).std(axis=0) if nones else np.ones(len(NONE_FEATURES))
    none_spread[0] = 1.0
    return np.where(spread > 1e-9, spread, 1.0), np.where(none_spread > 1e-9, none_spread, 1.0)
