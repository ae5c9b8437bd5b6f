"""SpeakerGrouper: the whole proposal, from lines (and any human labels) to one speaker per line.

    grouper = SpeakerGrouper()                      # packaged cold-start priors
    proposals = grouper.propose(lines)              # before any label
    grouper.fit(lines, labels)                      # refit from the annotators' labels
    proposals = grouper.propose(lines, labels, placeholders)

Steps of `propose`: kNN neighbourhoods (`context`) → voice and image confidence → gated
clustering with the labels as constraints → lone lines attached by merge probability → names
(majority of labelled members, else the name of the named cluster it fits best, else a
stable placeholder) → score (see `SpeakerGrouper.propose`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.grouping.calibration import score_features
from ml_backend.grouping.clustering import gated_clustering
from ml_backend.grouping.clusters import UNLABELLED
from ml_backend.grouping.confidence import ConfidenceModel
from ml_backend.grouping.context import LineContext, build_context
from ml_backend.grouping.lines import EpisodeLines
from ml_backend.grouping.merge import MergeClassifier, replay_pairs
from ml_backend.grouping.name_model import NameModel
from ml_backend.grouping.naming import PLACEHOLDER_PREFIX, Placeholders, cluster_names, membership
from ml_backend.grouping.priors import Priors, load_priors
from ml_backend.grouping.proposal import Proposal
from ml_backend.grouping.scoring import REVIEW_MODES, UNASSIGNED_SCORE, proposal_scores, typicality
from ml_backend.grouping.stability import count_moves, hold_previous
from speaker_grouping.atomic import atomic_write_json

logger = logging.getLogger(__name__)

DEFAULT_OPTIONS: dict[str, float] = {
    "threshold": 0.5,  # merge two clusters above this P(same speaker)
    "gate": 0.3,  # voice confidence below which a line may only join while alone
    "attach": 0.5,  # a lone line joins its best cluster above this P
    "weak_joins": 1.0,  # 1: a line below the gate may join while alone; 0: only by attach
    "threshold_slope": 0.0,  # threshold + slope × (0.7 - the episode's mean voice confidence)
    "noise_slope": 0.0,  # threshold + slope × the episode's mean low-SNR share (0 clean .. 1)
    "detach": 0.0,  # a clustered line that fits its cluster below this P is left unassigned
    "move_margin": 0.1,  # a clustered line moves to a cluster that fits it better by this much
    "refine": 2.0,  # how many rounds of moving and detaching lines after the clustering
    "strength": 3000.0,  # how many replay pairs the priors count for when refitting (few labels
    # must not pull the models away from them: at 30 the 5%-label fit made grouping worse)
    "min_labels": 2.0,  # fewer labelled lines than this: keep the priors as they are
    # KNN naming. In the annotation loop a placeholder or "unknown" always costs a correction
    # and a wrong name costs no more, so weak evidence for a name is worth proposing; but a
    # whole cluster named on weak evidence lumps speakers together (at 0, 5% random labels cut
    # the name grouping's edge precision on standard training episodes from 0.98 to 0.83):
    "name_attach": 0.0,  # a lone line joins a NAMED cluster above this P (0: any evidence)
    "name_guess": 0.3,  # a cluster without labels takes a named cluster's name above this mean P
    # The name model (`name_model.NameModel`), learned from the labels, overrides a named
    # cluster's proposal for a line when its own P is higher by this margin:
    "name_override": 0.0,
    "name_none_margin": -1.0,  # a placeholder cluster takes the known name its members most
    # probably have unless their mean P(none) exceeds that name's mean P by more than this (-1:
    # never, placeholders stay; the backend uses 0.2, see ml_backend.config.ANNOTATION_OPTIONS)
    "name_strength": 30.0,  # how many labelled lines the name model's prior weights count for
    "name_min_labels": 2.0,  # fewer labelled lines than this: no name model
    "name_sure": 0.7,  # lines the name model names at this P or above count as labelled for a
    # second look at the rest (1: off). Chosen with the annotation loop on the training episodes:
    # 18.8 / 4.7 corrections per 100 lines on hard / standard, against 20.4 / 4.85 without it
    "review": 1.0,  # score and review order (`scoring.REVIEW_MODES`): 0 doubt first, 1 each
    # placeholder cluster's most typical line first, 2 the score before `scoring` (legacy)
    # Bounded blast radius (`stability.hold_previous`), given the previous proposals: a line
    # shown a known name at score >= hold keeps it unless the refit's new proposal scores >= switch
    "hold": 0.7,
    "switch": 0.95,
}
"""Hyper-parameters; the priors file overrides these, constructor options override both."""
SAVE_NAME = "grouper.json"
_ALTERNATIVES = 3


class SpeakerGrouper:
    """Propose a speaker for every line; refit from human labels.

    Fitted attributes (after `fit`): confidence_, merge_, names_ (None until there are
    enough labels), n_labels_.
    """

    def __init__(
        self, *, priors: Path | str | Priors | None = None, seed: int = 0, **options: float
    ) -> None:
        unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown grouper option(s) {', '.join(unknown)}; "
                f"known: {', '.join(DEFAULT_OPTIONS)}"
            )
        self.priors = priors
        self.seed = seed
        self.options = dict(options)
        self._priors: Priors | None = priors if isinstance(priors, Priors) else None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ state

    @property
    def prior_models(self) -> Priors:
        if self._priors is None:
            self._priors = load_priors(self.priors)
        return self._priors

    def option(self, name: str) -> float:
        if name in self.options:
            return float(self.options[name])
        return float(self.prior_models.options.get(name, DEFAULT_OPTIONS[name]))

    def _models(self) -> tuple[ConfidenceModel, MergeClassifier]:
        confidence = getattr(self, "confidence_", None) or self.prior_models.confidence
        merge = getattr(self, "merge_", None) or self.prior_models.merge
        return confidence, merge

    def _check_models(self, lines: EpisodeLines) -> None:
        priors = self.prior_models
        for kind, have, want in (
            ("voice", lines.voice_model, priors.voice_model),
            ("image", lines.image_model, priors.image_model),
        ):
            if have != want and kind not in self._warned:
                self._warned.add(kind)
                logger.warning(
                    "the %s features come from %r but the grouping priors were trained for %r: "
                    "thresholds may not fit; label some lines so that fit() can adapt, or "
                    "retrain the priors (python -m bench.train_priors)",
                    kind,
                    have,
                    want,
                )

    # ------------------------------------------------------------------ fit

    def fit(self, lines: EpisodeLines, labels: Mapping[str, str]) -> SpeakerGrouper:
        """Refit the confidence and merge models from human labels (line id -> name).

        The priors act as a Gaussian prior on the weights (`option("strength")` examples' worth),
        so a few labels move the models a little and many labels move them a lot.
        """
        self._check_models(lines)
        context = build_context(lines)
        codes, _ = _label_codes(lines, labels)
        priors = self.prior_models
        self.n_labels_ = int((codes != UNLABELLED).sum())
        strength = self.option("strength")
        self.names_ = self._fit_names(context, codes)
        if self.n_labels_ < self.option("min_labels"):
            self.confidence_, self.merge_ = priors.confidence, priors.merge
            return self
        self.confidence_ = ConfidenceModel(
            k=priors.confidence.k, q=priors.confidence.q, length=priors.confidence.length
        ).fit(context, codes, prior=priors.confidence, strength=strength)
        confidence = self.confidence_.predict(context)
        # replay by similarity and in the prior model's own edge order (as the priors were made)
        first = replay_pairs(context, confidence, codes)
        second = replay_pairs(context, confidence, codes, order_by=priors.merge)
        X, same = np.vstack([first[0], second[0]]), np.concatenate([first[1], second[1]])
        if len(same) and 0 < same.sum() < len(same):
            self.merge_ = MergeClassifier(l2=priors.merge.l2).fit(
                X, same, prior=priors.merge, strength=strength
            )
        else:
            self.merge_ = priors.merge
        return self

    def _fit_names(self, context: LineContext, codes: np.ndarray) -> NameModel | None:
        if self.n_labels_ < max(self.option("name_min_labels"), 1):
            return None
        prior = self.prior_models.names
        model = NameModel(l2=prior.l2 if prior is not None else 1.0)
        return model.fit(context, codes, prior=prior, strength=self.option("name_strength"))

    # ------------------------------------------------------------------ propose

    def propose(
        self,
        lines: EpisodeLines,
        labels: Mapping[str, str] | None = None,
        placeholders: Placeholders | None = None,
        *,
        previous: Mapping[str, Proposal | tuple[str | None, float]] | None = None,
    ) -> list[Proposal]:
        """One proposal per line, in order. Labelled lines come back with their label, score 1.

        ``previous`` (line id -> the proposal, or (speaker, score), shown before this call)
        bounds what a refit may rename (`ml_backend.grouping.stability`); ``last_moves_``
        then says what changed.

        Score, in [0, 1], is what annotators sort by (lowest first): the calibrated P(the line
        is grouped with the right people), see `ml_backend.grouping.scoring` for what that is
        for a named, a guessed, a placeholder and an unassigned line, and for the review order.
        """
        self.last_moves_ = None
        if len(lines) == 0:
            return []
        self._check_models(lines)
        placeholders = Placeholders() if placeholders is None else placeholders
        context = build_context(lines)
        confidence_model, merge = self._models()
        confidence = confidence_model.predict(context)
        codes, names = _label_codes(lines, labels or {})
        clusters = gated_clustering(
            context,
            confidence,
            merge,
            threshold=self.option("threshold"),
            gate=self.option("gate"),
            labels=codes,
            weak_joins=self.option("weak_joins") >= 0.5,
            threshold_slope=self.option("threshold_slope"),
            noise_slope=self.option("noise_slope"),
        )
        proposals = self._name_and_score(
            context, confidence, merge, clusters, codes, names, placeholders
        )
        proposals = self._names_from_labels(context, codes, names, proposals)
        if previous:
            proposals = self._bounded(proposals, previous, labels or {}, names)
        return proposals

    def _bounded(
        self,
        proposals: list[Proposal],
        previous: Mapping[str, Proposal | tuple[str | None, float]],
        labels: Mapping[str, str],
        names: list[str],
    ) -> list[Proposal]:
        shown = {
            k: (v.speaker, v.score) if isinstance(v, Proposal) else (v[0], float(v[1]))
            for k, v in previous.items()
        }
        proposals, held = hold_previous(
            proposals,
            shown,
            labels,
            names,
            hold=self.option("hold"),
            switch=self.option("switch"),
        )
        self.last_moves_ = count_moves(
            shown, {p.line_id: (p.speaker, p.score) for p in proposals}, labels, names, held=held
        )
        return proposals

    def _names_from_labels(
        self,
        context: LineContext,
        codes: np.ndarray,
        names: list[str],
        proposals: list[Proposal],
    ) -> list[Proposal]:
        """Let the name model overrule the clusters' proposal where it is surer.

        A cluster's name is only as good as the cluster; with enough labels the labelled lines
        themselves (and who speaks around a line) say more about a noisy line than the cluster
        it happened to join. A placeholder cluster (and a line with no speaker) takes the model's
        best known name, judged on its members' mean probabilities, unless "none of the known
        names" is likelier by more than ``name_none_margin``.
        """
        model = getattr(self, "names_", None)
        if model is None or not names:
            return proposals
        rows = np.flatnonzero(codes == UNLABELLED)
        if not len(rows):
            return proposals
        p = model.predict_proba(context, codes, rows, sure=self.option("name_sure"))
        margin, none_margin = self.option("name_override"), self.option("name_none_margin")
        known = set(names)
        # a placeholder cluster is judged as a whole: its members' mean probabilities
        cluster_of = np.array(
            [
                proposals[i].cluster
                if proposals[i].speaker is not None and proposals[i].speaker not in known
                else -1
                for i in rows.tolist()
            ]
        )
        pooled = p.copy()
        for cluster in np.unique(cluster_of[cluster_of >= 0]).tolist():
            members = cluster_of == cluster
            pooled[members] = p[members].mean(axis=0)
        out = list(proposals)
        for a, i in enumerate(rows.tolist()):
            best = int(np.argmax(pooled[a, 1:]))
            p_best, p_none = float(p[a, 1 + best]), float(pooled[a, 0])
            old = proposals[i]
            if old.speaker in known:
                if old.speaker == names[best] or p_best <= old.score + margin:
                    continue
            elif float(pooled[a, 1 + best]) <= p_none - none_margin:
                continue
            alternatives = tuple(
                (names[j], round(float(p[a, 1 + j]), 4))
                for j in np.argsort(-p[a, 1:]).tolist()
                if j != best and p[a, 1 + j] > 0.0
            )[:_ALTERNATIVES]
            out[i] = Proposal(old.line_id, names[best], old.cluster, p_best, alternatives)
        return out

    def _name_and_score(
        self,
        context: LineContext,
        confidence: Mapping[str, np.ndarray],
        merge: MergeClassifier,
        clusters: np.ndarray,
        codes: np.ndarray,
        names: list[str],
        placeholders: Placeholders,
    ) -> list[Proposal]:
        lines = context.lines
        n = len(lines)
        clusters = self._refine(context, confidence, merge, clusters, codes)
        fit = membership(context, confidence, merge, clusters)
        size = np.bincount(clusters, minlength=int(clusters.max()) + 1)
        named_cluster = cluster_names(clusters, codes, names)
        eligible = size >= 2
        eligible[list(named_cluster)] = True
        lone = (size[clusters] == 1) & (codes == UNLABELLED)
        final = np.where(lone, -1, clusters)
        own = fit.own.copy()
        attached = np.zeros(n, dtype=bool)
        attach = self.option("attach")
        name_attach = self.option("name_attach")
        for i in np.flatnonzero(lone).tolist():
            for target, p in zip(fit.candidates[i], fit.probabilities[i], strict=True):
                cut = name_attach if int(target) in named_cluster else attach
                if target >= 0 and eligible[target] and p >= cut:
                    final[i], own[i], attached[i] = target, p, True
                    break
        # numbers for every assigned cluster, stable across calls
        assigned = [int(c) for c in np.unique(final[final >= 0])]
        members = {c: [] for c in assigned}
        for i in np.flatnonzero(final >= 0).tolist():
            members[int(final[i])].append(lines.line_ids[i])
        numbers = dict(
            zip(assigned, placeholders.assign([members[c] for c in assigned]), strict=True)
        )
        guessed = _guess_names(fit, final, named_cluster, self.option("name_guess"))
        speaker_of = {c: f"{PLACEHOLDER_PREFIX}{numbers[c]}" for c in assigned}
        speaker_of.update({c: name for c, (name, _) in guessed.items()})
        speaker_of.update(named_cluster)
        final_size = np.bincount(final[final >= 0], minlength=len(size))
        features = score_features(
            own,
            np.where(attached, 0.0, fit.other),
            np.where(final >= 0, final_size[np.maximum(final, 0)], 1),
            confidence["voice"],
            confidence["image"],
            attached,
            np.array([int(c) in named_cluster for c in final]),
            _episode_mean(confidence["voice"], context.episode),
        )
        calibrated = self.prior_models.calibrator.predict(features)
        scores = proposal_scores(
            calibrated,
            final,
            set(named_cluster),
            guessed,
            typicality(own, final, final_size),
            review=REVIEW_MODES[int(self.option("review"))],
        )
        # kept for the prior training and diagnostics: what the score was computed from
        self.last_score_features_ = features
        self.last_clusters_ = final
        proposals = []
        for i, line_id in enumerate(lines.line_ids):
            alternatives = self._alternatives(fit, i, final[i], eligible, speaker_of, named_cluster)
            if codes[i] != UNLABELLED:
                speaker, cluster, score = names[codes[i]], int(numbers[final[i]]), 1.0
            elif final[i] < 0:
                speaker, cluster, score = None, -1, UNASSIGNED_SCORE
            else:
                speaker, cluster = speaker_of[final[i]], int(numbers[final[i]])
                score = float(scores[i])
            rest = 1.0 - score
            alternatives = tuple((name, round(p * rest, 4)) for name, p in alternatives)
            proposals.append(Proposal(line_id, speaker, cluster, float(score), alternatives))
        return proposals

    def _refine(
        self,
        context: LineContext,
        confidence: Mapping[str, np.ndarray],
        merge: MergeClassifier,
        clusters: np.ndarray,
        codes: np.ndarray,
    ) -> np.ndarray:
        """Move clustered lines that fit another cluster better; detach those that fit none.

        The clustering decides each edge once, in order, so a line that joined early on a
        misleading face can sit in the wrong cluster; with every cluster formed, its fit to
        each (the merge probability against the rest of the cluster) says where it belongs.
        """
        margin, detach = self.option("move_margin"), self.option("detach")
        free = codes == UNLABELLED
        for _ in range(int(self.option("refine"))):
            size = np.bincount(clusters)
            fit = membership(context, confidence, merge, clusters)
            target = fit.other_cluster
            ok = target >= 0
            ok[ok] &= size[target[ok]] >= 2
            clustered = free & (size[clusters] >= 2)
            own = np.nan_to_num(fit.own, nan=0.0)
            move = clustered & ok & (fit.other > own + margin)
            leave = clustered & ~move & (own < detach)
            if not (move.any() or leave.any()):
                break
            clusters = clusters.copy()
            clusters[move] = target[move]
            clusters[leave] = clusters.max() + 1 + np.arange(int(leave.sum()))
            clusters = np.unique(clusters, return_inverse=True)[1].reshape(-1)
        return clusters

    @staticmethod
    def _alternatives(
        fit: Any,
        i: int,
        own_cluster: int,
        eligible: np.ndarray,
        speaker_of: Mapping[int, str],
        named: Mapping[int, str],
    ) -> list[tuple[str, float]]:
        out = []
        for target, p in zip(fit.candidates[i], fit.probabilities[i], strict=True):
            if target < 0 or target == own_cluster or not eligible[target]:
                continue
            name = speaker_of.get(int(target), named.get(int(target)))
            if name is not None and all(name != seen for seen, _ in out):
                out.append((name, float(p)))
            if len(out) == _ALTERNATIVES:
                break
        return out

    # ------------------------------------------------------------------ files

    def save(self, folder: Path | str) -> None:
        """Write ``grouper.json`` (priors included, so the folder stands alone). No pickle."""
        state: dict[str, Any] = {
            "format": "speaker-grouping-grouper",
            "version": 1,
            "seed": self.seed,
            "options": self.options,
            "priors": self.prior_models.to_json(),
        }
        if hasattr(self, "confidence_"):
            state["fitted"] = {
                "confidence": self.confidence_.to_json(),
                "merge": self.merge_.to_json(),
                "n_labels": self.n_labels_,
            }
            names = getattr(self, "names_", None)
            if names is not None:
                state["fitted"]["names"] = names.to_json()
        atomic_write_json(Path(folder) / SAVE_NAME, state)

    @classmethod
    def load(cls, folder: Path | str) -> SpeakerGrouper:
        path = Path(folder) / SAVE_NAME
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("format") != "speaker-grouping-grouper":
            raise ValueError(f"{path}: not a saved speaker grouper")
        grouper = cls(seed=int(state.get("seed", 0)), **state.get("options", {}))
        grouper._priors = Priors.from_json(state["priors"])
        fitted = state.get("fitted")
        if fitted:
            grouper.confidence_ = ConfidenceModel.from_json(fitted["confidence"])
            grouper.merge_ = MergeClassifier.from_json(fitted["merge"])
            grouper.n_labels_ = int(fitted["n_labels"])
            grouper.names_ = NameModel.from_json(fitted["names"]) if "names" in fitted else None
        return grouper


def _guess_names(
    fit: Any, final: np.ndarray, named: Mapping[int, str], minimum: float
) -> dict[int, tuple[str, float]]:
    """cluster -> (name, P) for clusters without labelled members that fit a named one.

    P is the mean over the cluster's members of their merge probability with the named
    cluster (0 for a member that has no neighbour there); the best name is kept at ``minimum``
    or above.
    """
    totals: dict[int, dict[str, float]] = {}
    counts = np.bincount(final[final >= 0], minlength=1) if (final >= 0).any() else np.zeros(1)
    for i in np.flatnonzero(final >= 0).tolist():
        c = int(final[i])
        if c in named:
            continue
        votes = totals.setdefault(c, {})
        for target, p in zip(fit.candidates[i], fit.probabilities[i], strict=True):
            name = named.get(int(target))
            if name is not None:
                votes[name] = votes.get(name, 0.0) + float(p)
    out = {}
    for c, votes in totals.items():
        if votes:
            name, total = min(votes.items(), key=lambda kv: (-kv[1], kv[0]))
            p = total / counts[c]
            if p >= minimum:
                out[c] = (name, float(min(p, 1.0)))
    return out


def _episode_mean(values: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """(n,) the mean of ``values`` over each line's episode."""
    totals = np.bincount(episode, weights=values)
    counts = np.maximum(np.bincount(episode), 1)
    return (totals / counts)[episode]


def _label_codes(lines: EpisodeLines, labels: Mapping[str, str]) -> tuple[np.ndarray, list[str]]:
    """(n,) int codes of the lines' labels (-1 unlabelled), and the names by code (sorted)."""
    present = {line_id: str(name) for line_id, name in labels.items() if line_id in lines._index}
    names = sorted(set(present.values()))
    code = {name: c for c, name in enumerate(names)}
    out = np.full(len(lines), UNLABELLED, dtype=np.int64)
    for line_id, name in present.items():
        out[lines.index_of(line_id)] = code[name]
    return out, names
