"""What the grouping proposes for one line."""

from __future__ import annotations

from dataclasses import dataclass

from ml_backend.grouping.naming import PLACEHOLDER_PREFIX, Placeholders

__all__ = ["PLACEHOLDER_PREFIX", "Placeholders", "Proposal"]


@dataclass(frozen=True)
class Proposal:
    """One line's proposed speaker.

    speaker : a known name, a placeholder "Speaker 7", or None (unknown / unassigned).
    cluster : cluster id, -1 when unassigned; the number is the placeholder's, stable across calls.
    score : calibrated P(speaker is right); 1.0 for a human-labelled line, 0.0 when unassigned.
    alternatives : next-best (speaker, P) pairs, best first.
    """

    line_id: str
    speaker: str | None
    cluster: int
    score: float
    alternatives: tuple[tuple[str, float], ...] = ()
