"""SpeakerGrouper: the whole proposal, from lines (and any human labels) to one speaker per line.

    grouper = SpeakerGrouper()                          # packaged priors, default parameters
    grouping = grouper.propose(lines)                   # before any label
    grouper.fit(lines, labels)                          # refit from the annotators' labels
    grouping = grouper.propose(lines, labels, grouping.speaker_numbers)
    grouping.proposals                                  # one `Proposal` per line
    grouping = grouper.propose(lines, labels, numbers, previous=grouping.proposals)
    grouping.moves                                      # what the refit changed (`stability`)

An estimator in scikit-learn's shape: the constructor stores the hyper-parameters (one frozen
`params.GrouperParams`) and the cold-start priors, `fit` learns from labels and returns self
(learned state ends in ``_``), and `propose` is pure: it changes neither the grouper nor its
arguments, and returns the `proposal.Grouping` (proposals, the updated speaker numbers, and
diagnostics).

Steps of `propose`, one module each: the voice vectors' recording-condition directions taken
out (`nuisance`, when the priors have them) → kNN neighbourhoods (`context`) → voice and image
confidence (`confidence`) → gated clustering with the labels as constraints, then lines
moved to the cluster they fit best (`clustering.GatedClustering`), or the merge graph's
communities where the priors ask for them (`self_calibration.SelfCalibratingClustering`)
→ lone lines attached and clusters named (`naming`) → numbers for the unnamed ones
(`speaker_numbers`) → score and review order (`scoring`) → the name model's second opinion
(`naming.names_from_model`) → given the proposals shown before, the bounded blast radius
(`stability`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foundation.atomic import atomic_write_json
from ml_backend.grouping.clusters import UNLABELLED
from ml_backend.grouping.confidence import ConfidenceModel
from ml_backend.grouping.context import LineContext, build_context
from ml_backend.grouping.lines import EpisodeLines
from ml_backend.grouping.membership import membership
from ml_backend.grouping.merge import MergeClassifier, replay_pairs
from ml_backend.grouping.name_model import NameModel
from ml_backend.grouping.naming import (
    name_lines,
    names_from_model,
    number_clusters,
    proposals_for,
    speaker_names,
)
from ml_backend.grouping.params import (
    PARAMS_VERSION,
    GrouperParams,
    ParamsOverride,
    params_for_priors,
)
from ml_backend.grouping.priors import Priors, load_priors
from ml_backend.grouping.proposal import Grouping, Moves, Proposal
from ml_backend.grouping.scoring import REVIEW_MODES, UNASSIGNED_SCORE, score_lines
from ml_backend.grouping.self_calibration import SelfCalibratingClustering
from ml_backend.grouping.speaker_numbers import SpeakerNumbers
from ml_backend.grouping.stability import count_moves, hold_previous

logger = logging.getLogger(__name__)

SAVE_NAME = "grouper.json"
SAVE_FORMAT = "speaker-grouping-grouper"
SAVE_VERSION = 2
"""1 stored the constructor's ``options`` dict; 2 stores every parameter (``params``)."""


class SpeakerGrouper:
    """Propose a speaker for every line; refit from human labels.

    params : the hyper-parameters, used as given. None: the `GrouperParams` defaults with the
        priors file's explicit override, if it has one (logged; `params.params_for_priors`).
    priors : a `Priors`, a priors file (or a folder holding ``default.json``), or None for the
        packaged ones. Read here, once.
    seed : kept for the saved state; the grouping itself is deterministic.

    Fitted attributes (after `fit`): confidence_, merge_, names_ (None until there are
    enough labels), n_labels_. Before `fit`, `propose` uses the priors' models.
    """

    def __init__(
        self,
        params: GrouperParams | Mapping[str, Any] | None = None,
        *,
        priors: Path | str | Priors | None = None,
        seed: int = 0,
    ) -> None:
        self.priors = priors if isinstance(priors, Priors) else load_priors(priors)
        if params is None:
            self.params = params_for_priors(self.priors)
        else:
            self.params = GrouperParams.from_json(params)
            if self.priors.params_override is not None:
                logger.info(
                    "grouper parameters given explicitly: the override in %s is not used",
                    self.priors.source or "the priors",
                )
        self.seed = seed
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ state

    def _models(self) -> tuple[ConfidenceModel, MergeClassifier]:
        confidence = getattr(self, "confidence_", None) or self.priors.confidence
        merge = getattr(self, "merge_", None) or self.priors.merge
        return confidence, merge

    def _check_models(self, lines: EpisodeLines) -> None:
        for kind, have, want in (
            ("voice", lines.voice_model, self.priors.voice_model),
            ("image", lines.image_model, self.priors.image_model),
        ):
            if have != want and kind not in self._warned:
                self._warned.add(kind)  # a log-once flag, not model state
                logger.warning(
                    "the %s features come from %r but the grouping priors were trained for %r: "
                    "thresholds may not fit; label some lines so that fit() can adapt, or "
                    "retrain the priors (python -m bench.train_priors)",
                    kind,
                    have,
                    want,
                )

    def _projected(self, lines: EpisodeLines) -> EpisodeLines:
        """``lines`` with the priors' nuisance directions taken out of the voice vectors
        (`nuisance`), when the priors have them and were trained for this voice model."""
        nuisance = self.priors.nuisance
        if nuisance is None or lines.voice_model != self.priors.voice_model:
            return lines
        return nuisance.apply(lines)

    def _context(self, lines: EpisodeLines) -> LineContext:
        """The projected lines' context, its voice list searched as deep as the community
        graph of these params reads it (so `self_calibration` needs no search of its own)."""
        return build_context(
            self._projected(lines), voice_kept=int(self.params.community_neighbours)
        )

    # ------------------------------------------------------------------ fit

    def fit(self, lines: EpisodeLines, labels: Mapping[str, str]) -> SpeakerGrouper:
        """Refit the confidence, merge and name models from human labels (line id -> name).

        The priors act as a Gaussian prior on the weights (``params.strength`` examples'
        worth), so a few labels move the models a little and many labels move them a lot.
        Labels of lines not in ``lines`` are ignored.
        """
        self._check_models(lines)
        params, priors = self.params, self.priors
        context = self._context(lines)
        codes, _ = label_codes(lines, labels)
        self.n_labels_ = int((codes != UNLABELLED).sum())
        self.names_ = self._fit_names(context, codes)
        if self.n_labels_ < params.min_labels:
            self.confidence_, self.merge_ = priors.confidence, priors.merge
            return self
        self.confidence_ = ConfidenceModel(
            k=priors.confidence.k, q=priors.confidence.q, length=priors.confidence.length
        ).fit(context, codes, prior=priors.confidence, strength=params.strength)
        confidence = self.confidence_.predict(context)
        # replay by similarity and in the prior model's own edge order (as the priors were made)
        first = replay_pairs(context, confidence, codes)
        second = replay_pairs(context, confidence, codes, order_by=priors.merge)
        X, same = np.vstack([first[0], second[0]]), np.concatenate([first[1], second[1]])
        if len(same) and 0 < same.sum() < len(same):
            self.merge_ = MergeClassifier(l2=priors.merge.l2).fit(
                X, same, prior=priors.merge, strength=params.strength
            )
        else:
            self.merge_ = priors.merge
        return self

    def _fit_names(self, context: LineContext, codes: np.ndarray) -> NameModel | None:
        if self.n_labels_ < max(self.params.name_min_labels, 1):
            return None
        prior = self.priors.names
        model = NameModel(l2=prior.l2 if prior is not None else 1.0)
        return model.fit(context, codes, prior=prior, strength=self.params.name_strength)

    # ------------------------------------------------------------------ propose

    def propose(
        self,
        lines: EpisodeLines,
        labels: Mapping[str, str] | None = None,
        speaker_numbers: SpeakerNumbers | None = None,
        *,
        previous: Mapping[str, Proposal | tuple[str | None, float]]
        | Sequence[Proposal]
        | None = None,
    ) -> Grouping:
        """One proposal per line, in order; labelled lines come back with their label, score 1.

        labels : line id -> name given by an annotator (constraints; ids not in ``lines`` are
            ignored).
        speaker_numbers : the previous call's `Grouping.speaker_numbers`, so that numbered
            speakers keep their numbers; it is copied, never changed.
        previous : the proposals shown before this call (line id -> `Proposal` or (speaker,
            score), or the previous `Grouping.proposals`): a refit may not rename a line
            shown a known name with confidence on weak evidence (``params.hold`` /
            ``params.switch``, `stability`), and `Grouping.moves` says what changed.

        The score, in [0, 1], is what annotators sort by, lowest first (see `scoring`).
        """
        numbers = SpeakerNumbers() if speaker_numbers is None else speaker_numbers.copy()
        if len(lines) == 0:
            empty = np.zeros(0, np.int64)
            return Grouping([], numbers, empty, np.zeros((0, 0)))
        self._check_models(lines)
        params = self.params
        context = self._context(lines)
        confidence_model, merge = self._models()
        confidence = confidence_model.predict(context)
        codes, names = label_codes(lines, labels or {})
        clustering = SelfCalibratingClustering.from_params(params).fit(
            context, confidence=confidence, merge=merge, labels=codes
        )
        clusters = clustering.labels_
        fit = membership(context, confidence, merge, clusters)
        named = name_lines(
            fit,
            clusters,
            codes,
            names,
            attach=params.attach,
            name_attach=params.name_attach,
            name_guess=params.name_guess,
        )
        number_of = number_clusters(lines.line_ids, named.final, numbers)
        scores, features = score_lines(
            self.priors.calibrator,
            context,
            confidence,
            fit,
            named,
            review=REVIEW_MODES[params.review],
        )
        proposals = proposals_for(
            lines.line_ids,
            fit,
            named,
            codes,
            names,
            number_of,
            speaker_names(named, number_of),
            scores,
            unassigned_score=UNASSIGNED_SCORE,
        )
        proposals = names_from_model(
            getattr(self, "names_", None),
            context,
            codes,
            names,
            proposals,
            sure=params.name_sure,
            override=params.name_override,
            none_margin=params.name_none_margin,
        )
        moves = None
        if previous:
            proposals, moves = self._bounded(proposals, previous, labels or {}, names)
        return Grouping(
            proposals, numbers, named.final, features, clustering.skeleton_, moves=moves
        )

    def _bounded(
        self,
        proposals: list[Proposal],
        previous: Mapping[str, Proposal | tuple[str | None, float]] | Sequence[Proposal],
        labels: Mapping[str, str],
        names: list[str],
    ) -> tuple[list[Proposal], Moves]:
        """The bounded blast radius (`stability`): ``proposals`` with the confident known
        names of ``previous`` held, and what changed."""
        if isinstance(previous, Mapping):
            items = previous.items()
        else:
            items = ((p.line_id, p) for p in previous)
        shown = {
            k: (v.speaker, v.score) if isinstance(v, Proposal) else (v[0], float(v[1]))
            for k, v in items
        }
        proposals, held = hold_previous(
            proposals,
            shown,
            labels,
            names,
            hold=self.params.hold,
            switch=self.params.switch,
        )
        moves = count_moves(
            shown, {p.line_id: (p.speaker, p.score) for p in proposals}, labels, names, held=held
        )
        return proposals, moves

    # ------------------------------------------------------------------ files

    def save(self, folder: Path | str) -> None:
        """Write ``grouper.json`` (priors included, so the folder stands alone). No pickle."""
        state: dict[str, Any] = {
            "format": SAVE_FORMAT,
            "version": SAVE_VERSION,
            "seed": self.seed,
            "params_version": PARAMS_VERSION,
            "params": self.params.to_json(),
            "priors": self.priors.to_json(),
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
        if state.get("format") != SAVE_FORMAT or state.get("version") not in (1, SAVE_VERSION):
            raise ValueError(f"{path}: not a saved speaker grouper (version {SAVE_VERSION})")
        priors = Priors.from_json(state["priors"])
        priors.source = str(path)
        if state["version"] == 1:  # the constructor's options, on top of the priors' own
            given = ParamsOverride.from_json({"version": 1, "values": state.get("options", {})})
            params = params_for_priors(priors).replace(**given.values)
        else:
            params = GrouperParams.from_json(
                ParamsOverride.from_json(
                    {"version": state.get("params_version"), "values": state["params"]}
                ).values
            )
        grouper = cls(params, priors=priors, seed=int(state.get("seed", 0)))
        fitted = state.get("fitted")
        if fitted:
            grouper.confidence_ = ConfidenceModel.from_json(fitted["confidence"])
            grouper.merge_ = MergeClassifier.from_json(fitted["merge"])
            grouper.n_labels_ = int(fitted["n_labels"])
            grouper.names_ = NameModel.from_json(fitted["names"]) if "names" in fitted else None
        return grouper


def label_codes(lines: EpisodeLines, labels: Mapping[str, str]) -> tuple[np.ndarray, list[str]]:
    """(n,) int64 codes of the lines' labels (-1 unlabelled), and the names by code (sorted).

    Labels of line ids not in ``lines`` are ignored."""
    present = {line_id: str(name) for line_id, name in labels.items() if line_id in lines}
    names = sorted(set(present.values()))
    code = {name: c for c, name in enumerate(names)}
    out = np.full(len(lines), UNLABELLED, dtype=np.int64)
    for line_id, name in present.items():
        out[lines.index_of(line_id)] = code[name]
    return out, names
