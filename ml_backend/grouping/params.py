"""The grouping's hyper-parameters: one frozen dataclass, declared and documented here only.

`SpeakerGrouper` takes a `GrouperParams` and uses it as given. Its defaults are the values
`bench.train_priors` chose on the training episodes for the packaged priors (plus the hand-set
ones it does not search); the packaged priors file itself holds learned weights only.

A priors file of one's own may carry an *override*: ``{"version": PARAMS_VERSION, "values":
{...}}``, written by ``bench.train_priors`` when its search chose values other than these
defaults. It is never applied silently: `params_for_priors` applies it, logs each changed value
once per process, and refuses an override written for another `PARAMS_VERSION` (the meaning of
a name may have changed since).

    params = GrouperParams(threshold=0.4)               # explicit
    params = params_for_priors(load_priors(path))       # defaults + the file's override, logged
    params = params.replace(name_none_margin=0.2)       # one change on top
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from foundation.options import coerce_options
from ml_backend.grouping.context import VOICE_KEPT
from ml_backend.grouping.scoring import REVIEW_MODES

logger = logging.getLogger(__name__)

PARAMS_VERSION = 2
"""Version of the names and meanings below. 1: the ``options`` dict of priors format 1, where
``reassign_rounds`` was called ``refine``. Bump it when a field changes its meaning."""

SKELETON_NAMES = {0: "gated", 1: "communities", 2: "likelier of the two", 3: "joined"}
"""The values of `GrouperParams.community`."""

RENAMED_IN_VERSION_2 = {"refine": "reassign_rounds"}
"""Version-1 option name -> field name."""


@dataclass(frozen=True)
class GrouperParams:
    """Every hyper-parameter of `SpeakerGrouper`, with its default and why.

    Probabilities are the merge classifier's P(same speaker) unless said otherwise.
    """

    # -- clustering (`clustering.GatedClustering`) ------------------------------------------
    threshold: float = 0.4
    """Two clusters merge above this P(same speaker). Tuned by ``bench.train_priors``."""
    gate: float = 0.3
    """Voice confidence below which a line may only join a cluster while alone."""
    weak_joins: bool = True
    """Whether a line below the gate may join a cluster while alone (the design's rule); False
    leaves every weak line to the lone-line attach step of the naming."""
    threshold_slope: float = 0.0
    """The threshold rises by this × (0.7 - the episode's mean voice confidence)."""
    noise_slope: float = 0.0
    """The threshold rises by this × the episode's mean low-SNR share (0 clean .. 1).
    Tuned by ``bench.train_priors``."""
    reassign_rounds: int = 2
    """Rounds of moving and detaching clustered lines after the clustering
    (`clustering.reassign_lines`)."""
    move_margin: float = 0.1
    """A clustered line moves to a cluster that fits it better by this much."""
    detach: float = 0.0
    """A clustered line that fits its cluster below this P is left unassigned."""

    # -- self-calibrating skeleton (`self_calibration.SelfCalibratingClustering`) -------------
    community: int = 3
    """0: the gated clustering at ``threshold``; 1: modularity communities of the
    merge-probability kNN graph, which calibrate themselves per episode; 2: whichever of the
    two the merge classifier finds likelier for the episode at hand; 3: the gated clusters,
    joined where one community holds them and the graph ties them (``community_join``). Tuned by
    ``bench.train_priors`` (bench/README.md, "Self-calibrating cold start")."""
    community_join: float = 3.0
    """``community`` 3: two gated clusters in one community are joined when the graph ties
    them by at least this much P(same speaker) per line of the smaller one. Chosen by
    ``bench.train_priors`` from 1, 2, 3 and 4."""
    community_neighbours: int = VOICE_KEPT
    """Voice neighbours per line in the community graph (the context searches this deep)."""
    community_resolution: float = 1.0
    """Louvain resolution (above 1: smaller communities)."""
    community_reassign_rounds: int = 0
    """``reassign_rounds`` after a community skeleton: moving lines by their fit to clusters
    undoes what the communities found (0.840 against 0.872 mean edge F1 on the real-voice
    training episodes)."""

    # -- naming (`naming`) ------------------------------------------------------------------
    attach: float = 0.7
    """A lone line joins its best (unnamed) cluster above this P. Tuned by
    ``bench.train_priors``."""
    name_attach: float = 0.0
    """A lone line joins a NAMED cluster above this P (0: any evidence). In the annotation
    loop a numbered speaker or "Unknown" always costs a correction and a wrong name costs no
    more, so weak evidence for a name is worth proposing."""
    name_guess: float = 0.3
    """A cluster without labels takes a named cluster's name above this mean P. A whole
    cluster named on weak evidence lumps speakers together (bench/README.md, "Measurements
    behind code choices")."""
    name_override: float = 0.0
    """The name model (`name_model.NameModel`) overrides a named cluster's proposal for a line
    when its own P is higher by this margin."""
    name_none_margin: float = -1.0
    """A numbered-speaker cluster takes the known name its members most probably have unless
    their mean P(none) exceeds that name's mean P by more than this (-1: never, numbered
    speakers stay; the backend uses 0.2, see `ml_backend.config.ANNOTATION_PARAMS`)."""
    name_sure: float = 0.7
    """Lines the name model names at this P or above count as labelled for a second look at
    the rest (1: off). Chosen with the annotation loop on the training episodes
    (bench/README.md, "Measurements behind code choices")."""

    # -- score and review order (`scoring`) ------------------------------------------------
    review: int = 1
    """The review order (`scoring.REVIEW_MODES`): 0 doubt first; 1 each unnamed cluster's most
    typical line first (biggest cluster first), then doubt; 2 the score before the numbered
    speakers' lines were scored by their membership (legacy, for same-run comparisons). Chosen
    with the annotation loop on the training episodes (bench/README.md, "Review order")."""

    # -- bounded blast radius (`stability.hold_previous`), given the previous proposals -----
    hold: float = 0.7
    """A line shown a known name at this score or above keeps it after a refit..."""
    switch: float = 0.95
    """...unless the refit's new proposal scores this or above (bench/README.md, "The hold")."""

    # -- refitting from labels (`SpeakerGrouper.fit`) ---------------------------------------
    strength: float = 3000.0
    """How many replay pairs the priors count for when refitting: few labels must not pull
    the models away from them (bench/README.md, "Measurements behind code choices")."""
    min_labels: int = 2
    """Fewer labelled lines than this: keep the priors' confidence and merge models."""
    name_strength: float = 30.0
    """How many labelled lines the name model's prior weights count for."""
    name_min_labels: int = 2
    """Fewer labelled lines than this: no name model."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "bool" and value in (0, 1) and not isinstance(value, bool):
                value = bool(value)  # 0/1 from a JSON number
                object.__setattr__(self, field.name, value)
            elif field.type == "int" and isinstance(value, float) and value.is_integer():
                value = int(value)
                object.__setattr__(self, field.name, value)
            if field.type in ("int", "bool"):
                if not isinstance(value, int):
                    raise ValueError(
                        f"grouper parameter {field.name} must be {field.type}, got {value!r}"
                    )
            elif (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValueError(f"grouper parameter {field.name} must be a number, got {value!r}")
        if self.community not in SKELETON_NAMES:
            raise ValueError(
                f"grouper parameter community must be one of {sorted(SKELETON_NAMES)} "
                f"({', '.join(f'{k} {v}' for k, v in SKELETON_NAMES.items())}), "
                f"got {self.community!r}"
            )
        if not 0 <= self.review < len(REVIEW_MODES):
            raise ValueError(
                f"grouper parameter review must be 0..{len(REVIEW_MODES) - 1} "
                f"({', '.join(REVIEW_MODES)}), got {self.review!r}"
            )

    def replace(self, **changes: Any) -> GrouperParams:
        """A copy with ``changes``; an unknown name is refused with the known ones."""
        return replace(self, **_checked(changes, what="grouper parameter"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, values: Mapping[str, Any] | GrouperParams | None) -> GrouperParams:
        """From a dict (unknown names refused), the dataclass itself, or None (defaults)."""
        return coerce_options(cls, values, what="grouper")


DEFAULTS = GrouperParams()


def _checked(values: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    known = {field.name for field in fields(GrouperParams)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what}(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return dict(values)


@dataclass(frozen=True)
class ParamsOverride:
    """Hyper-parameters a priors file sets explicitly, for one `PARAMS_VERSION`."""

    values: Mapping[str, Any]
    version: int = PARAMS_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "values": dict(self.values)}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> ParamsOverride:
        """Read ``{"version": V, "values": {...}}``; a version-1 dict is renamed to version 2.

        Raises ValueError for another version or an unknown name, so a file that was written
        for different meanings is refused rather than half-applied.
        """
        version = int(values.get("version", -1))
        given = dict(values.get("values", {}))
        if version == 1:
            given = {RENAMED_IN_VERSION_2.get(k, k): v for k, v in given.items()}
            version = PARAMS_VERSION
        if version != PARAMS_VERSION:
            raise ValueError(
                f"its parameter override is for version {version}, this code reads version "
                f"{PARAMS_VERSION}: retrain (python -m bench.train_priors) or remove it"
            )
        return cls(values=_checked(given, what="overridden grouper parameter"), version=version)

    def changes(self, base: GrouperParams = DEFAULTS) -> dict[str, Any]:
        """The values that differ from ``base``."""
        return {k: v for k, v in self.values.items() if getattr(base, k) != v}


_LOGGED: set[tuple[str, tuple[tuple[str, Any], ...]]] = set()


def params_for_priors(priors: Any) -> GrouperParams:
    """`GrouperParams` defaults with the override of ``priors`` (a `priors.Priors`) applied.

    Every value the override changes is logged (once per process and file), so a priors file
    never changes a threshold silently.
    """
    override: ParamsOverride | None = getattr(priors, "params_override", None)
    if override is None:
        return DEFAULTS
    changes = override.changes()
    if changes:
        key = (str(getattr(priors, "source", "")), tuple(sorted(changes.items())))
        if key not in _LOGGED:
            _LOGGED.add(key)
            logger.warning(
                "grouper parameters overridden by the priors file %s (parameters version %d): %s",
                key[0] or "(in memory)",
                override.version,
                ", ".join(f"{k} {getattr(DEFAULTS, k)} -> {v}" for k, v in sorted(changes.items())),
            )
    return DEFAULTS.replace(**changes)
