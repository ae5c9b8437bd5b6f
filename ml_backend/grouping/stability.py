"""A bounded blast radius: what one refit may change in the proposals an annotator already saw.

A refit re-clusters and re-names every line, so one new label (right or wrong) can rename
lines far from it: a wrong pick that joins two clusters renames both characters' lines, and
refits turn right proposals of unreviewed lines wrong as often as they fix others (issue 15's
"churn"). Two rules keep a refit's reach in proportion to its evidence:

- **Hold** (`hold_previous`): an unlabelled line that was proposed as a known name A with a
  score of at least ``hold`` keeps A when the refit proposes something else, unless the new
  proposal scores at least ``switch``. A kept line shows ``min(previous score, 1 - new
  score)``: the refit's doubt is not hidden, it moves the line up "Doubt first" instead of
  silently renaming it.
- **Count** (`count_moves`): how many unlabelled lines changed their shown speaker, and how many
  of those had a known name. The backend writes it into the operation log per refit and into
  ``/metrics``, and warns above `LARGE_MOVE`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence

from ml_backend.grouping.proposal import Moves, Proposal

LARGE_MOVE = 10
"""A refit that changes more unlabelled lines than this is logged as a warning."""


def hold_previous(
    proposals: Sequence[Proposal],
    previous: Mapping[str, tuple[str | None, float]],
    labelled: Collection[str],
    known: Collection[str],
    *,
    hold: float,
    switch: float,
) -> tuple[list[Proposal], int]:
    """(proposals with held lines kept at their previous known name, how many were held).

    previous : line id -> (speaker shown before, score); labelled : line ids with a label;
    known : the names the labels hold (a previous name no longer among them is not kept).
    """
    known = set(known)
    labelled = set(labelled)
    out, held = [], 0
    for proposal in proposals:
        before = previous.get(proposal.line_id)
        if (
            before is None
            or proposal.line_id in labelled
            or before[0] is None
            or before[0] not in known
            or before[0] == proposal.speaker
            or float(before[1]) < hold
            or proposal.score >= switch
        ):
            out.append(proposal)
            continue
        name, score = before[0], min(float(before[1]), 1.0 - proposal.score)
        alternatives = tuple((n, p) for n, p in proposal.alternatives if n != name)
        if proposal.speaker is not None:
            alternatives = ((proposal.speaker, round(proposal.score, 4)), *alternatives)
        out.append(
            dataclasses.replace(
                proposal, speaker=name, score=float(score), alternatives=alternatives[:3]
            )
        )
        held += 1
    return out, held


def count_moves(
    previous: Mapping[str, tuple[str | None, float]],
    current: Mapping[str, tuple[str | None, float]],
    labelled: Collection[str],
    known: Collection[str],
    *,
    held: int = 0,
) -> Moves:
    """Compare two sets of shown proposals (line id -> (speaker, score)), unlabelled lines only.

    known : names held by labels before this refit (a line that showed one was named).
    """
    labelled, known = set(labelled), set(known)
    moved = from_named = 0
    for line_id, (speaker, _) in current.items():
        if line_id in labelled or line_id not in previous:
            continue
        before = previous[line_id][0]
        if before != speaker:
            moved += 1
            from_named += before in known
    return Moves(moved=moved, from_named=from_named, held=held, large=moved > LARGE_MOVE)
