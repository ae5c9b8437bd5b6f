"""What the grouping proposes: one `Proposal` per line, the `Grouping` of one call, and the
`Moves` it made among the proposals shown before it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from label_config import NUMBERED_SPEAKER_PREFIX
from ml_backend.grouping.speaker_numbers import SpeakerNumbers

__all__ = ["NUMBERED_SPEAKER_PREFIX", "Grouping", "Moves", "Proposal"]


@dataclass(frozen=True)
class Proposal:
    """One line's proposed speaker.

    speaker : a known name, a numbered speaker "Speaker 7", or None (no speaker: unassigned,
        shown to annotators as the "Unknown" choice).
    cluster : cluster id, -1 when unassigned; the number is the numbered speaker's, stable
        across calls.
    score : calibrated P(the line is grouped with the right people), see `scoring` for what
        that is for each kind of proposal; 1.0 for a human-labelled line.
    alternatives : next-best (speaker, P) pairs, best first.
    """

    line_id: str
    speaker: str | None
    cluster: int
    score: float
    alternatives: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Moves:
    """What one refit changed among unlabelled lines that had a proposal before
    (`stability.count_moves`)."""

    moved: int
    """Lines whose shown speaker changed."""
    from_named: int
    """Of those, lines that had been shown a known name (a renaming, not a first naming)."""
    held: int = 0
    """Lines `stability.hold_previous` kept at their previous known name."""
    large: bool = False
    """More lines moved than `stability.LARGE_MOVE`: worth a warning."""


@dataclass(frozen=True)
class Grouping:
    """What `SpeakerGrouper.propose` returns; the grouper and its inputs are left unchanged.

    proposals : one per line, in the lines' order.
    speaker_numbers : the numbering after this call; pass it to the next call (and store it)
        so that "Speaker 7" stays Speaker 7.
    clusters : (n,) int64 cluster of every line after naming (the clustering's own ids, not
        the speaker numbers), -1 for a line with no speaker. Diagnostics.
    score_features : (n, len(calibration.FEATURES)) float64, what each score was computed from
        (`bench.train_priors` fits the calibrator on them).
    skeleton : which clustering made the clusters: "gated", "community" or "joined"
        (`self_calibration.SelfCalibratingClustering`). Diagnostics.
    moves : given the proposals shown before (``propose(..., previous=...)``), what this call
        changed among them after the bounded blast radius (`stability`); None without them.
    """

    proposals: list[Proposal]
    speaker_numbers: SpeakerNumbers
    clusters: np.ndarray
    score_features: np.ndarray
    skeleton: str = "gated"
    moves: Moves | None = None
