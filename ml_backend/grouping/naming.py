"""Names for clusters and lines (KNN naming, docs/architecture.md §4).

Two kinds of proposal name no character:

- a **numbered speaker**, "Speaker N": a cluster nobody has named yet. Its number survives
  re-proposals: `SpeakerNumbers` matches each new cluster to the old one it shares most members
  with;
- **no speaker** (`Proposal.speaker` is None, shown to annotators as the "Unknown" choice): a
  line the grouping declines to assign.

Steps (`name_lines`, then `speaker_names`, `proposals_for` and `names_from_model`):

- A cluster takes the name most of its labelled members hold.
- A lone line (a cluster of one, unlabelled) joins the cluster it most probably belongs to
  (`membership`), when the merge classifier gives that at least ``attach`` probability
  (``name_attach`` for a named cluster); else it gets no speaker.
- A cluster without labelled members takes the name of the named cluster its members fit best
  when their mean probability reaches ``name_guess``; else it is a numbered speaker.
- With enough labels the name model (`name_model.NameModel`) may overrule a cluster's name for
  a line where it is surer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ml_backend.grouping.clusters import UNLABELLED
from ml_backend.grouping.context import LineContext
from ml_backend.grouping.membership import Membership
from ml_backend.grouping.name_model import NameModel
from ml_backend.grouping.proposal import NUMBERED_SPEAKER_PREFIX, Proposal
from ml_backend.grouping.speaker_numbers import SpeakerNumbers

ALTERNATIVES = 3
"""How many next-best names a proposal lists."""


def cluster_names(clusters: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[int, str]:
    """cluster -> the majority name of its labelled members (ties: the name seen first)."""
    out: dict[int, str] = {}
    labelled = np.flatnonzero(labels != UNLABELLED)
    votes: dict[int, Counter[int]] = {}
    for i in labelled.tolist():
        votes.setdefault(int(clusters[i]), Counter())[int(labels[i])] += 1
    for cluster, counter in votes.items():
        out[cluster] = names[counter.most_common(1)[0][0]]
    return out


@dataclass(frozen=True)
class NamedLines:
    """Where every line ends up after naming, before any number is given.

    final : (n,) int64 cluster of each line (the clustering's ids), -1 for no speaker.
    own : (n,) P(line belongs to its final cluster); for an attached line, its attach P.
    attached : (n,) bool, the line was a lone line attached to a cluster.
    eligible : (C,) bool, the cluster may take lines (two or more members, or named).
    named : cluster -> the name its labelled members hold.
    guessed : cluster -> (name, P) for an unlabelled cluster that fits a named one.
    """

    final: np.ndarray
    own: np.ndarray
    attached: np.ndarray
    eligible: np.ndarray
    named: dict[int, str]
    guessed: dict[int, tuple[str, float]]

    @property
    def final_size(self) -> np.ndarray:
        """(C,) members of each cluster after naming."""
        return np.bincount(self.final[self.final >= 0], minlength=len(self.eligible))


def name_lines(
    fit: Membership,
    clusters: np.ndarray,
    codes: np.ndarray,
    names: Sequence[str],
    *,
    attach: float,
    name_attach: float,
    name_guess: float,
) -> NamedLines:
    """Attach lone lines and name clusters from the labels (see the module's steps).

    clusters : (n,) int64 cluster of every line (lone lines have their own).
    codes : (n,) int64 label code of each line, -1 unlabelled; ``names[code]`` is its name.
    """
    n = len(clusters)
    size = np.bincount(clusters, minlength=int(clusters.max()) + 1)
    named = cluster_names(clusters, codes, names)
    eligible = size >= 2
    eligible[list(named)] = True
    lone = (size[clusters] == 1) & (codes == UNLABELLED)
    final = np.where(lone, -1, clusters)
    own = fit.own.copy()
    attached = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(lone).tolist():
        for target, p in zip(fit.candidates[i], fit.probabilities[i], strict=True):
            cut = name_attach if int(target) in named else attach
            if target >= 0 and eligible[target] and p >= cut:
                final[i], own[i], attached[i] = target, p, True
                break
    guessed = guess_names(fit, final, named, name_guess)
    return NamedLines(final, own, attached, eligible, named, guessed)


def number_clusters(
    line_ids: Sequence[str], final: np.ndarray, numbers: SpeakerNumbers
) -> dict[int, int]:
    """cluster -> its speaker number, for every assigned cluster (``numbers`` is updated)."""
    assigned = [int(c) for c in np.unique(final[final >= 0])]
    members: dict[int, list[str]] = {c: [] for c in assigned}
    for i in np.flatnonzero(final >= 0).tolist():
        members[int(final[i])].append(line_ids[i])
    return dict(zip(assigned, numbers.assign([members[c] for c in assigned]), strict=True))


def speaker_names(named: NamedLines, number_of: Mapping[int, int]) -> dict[int, str]:
    """cluster -> the speaker it proposes: its labels' name, a guessed name, else numbered."""
    speaker_of = {c: f"{NUMBERED_SPEAKER_PREFIX}{number}" for c, number in number_of.items()}
    speaker_of.update({c: name for c, (name, _) in named.guessed.items()})
    speaker_of.update(named.named)
    return speaker_of


def proposals_for(
    line_ids: Sequence[str],
    fit: Membership,
    named: NamedLines,
    codes: np.ndarray,
    names: Sequence[str],
    number_of: Mapping[int, int],
    speaker_of: Mapping[int, str],
    scores: np.ndarray,
    *,
    unassigned_score: float,
) -> list[Proposal]:
    """One `Proposal` per line: labelled lines keep their label at score 1, lines without a
    cluster get no speaker at ``unassigned_score``, the rest their cluster's speaker at
    ``scores`` (n,), with up to `ALTERNATIVES` next-best names sharing the remaining P."""
    proposals = []
    final = named.final
    for i, line_id in enumerate(line_ids):
        alternatives = _alternatives(fit, i, final[i], named.eligible, speaker_of, named.named)
        if codes[i] != UNLABELLED:
            speaker, cluster, score = names[codes[i]], int(number_of[final[i]]), 1.0
        elif final[i] < 0:
            speaker, cluster, score = None, -1, unassigned_score
        else:
            speaker, cluster = speaker_of[final[i]], int(number_of[final[i]])
            score = float(scores[i])
        rest = 1.0 - score
        alternatives = [(name, round(p * rest, 4)) for name, p in alternatives]
        proposals.append(Proposal(line_id, speaker, cluster, float(score), tuple(alternatives)))
    return proposals


def _alternatives(
    fit: Membership,
    i: int,
    own_cluster: int,
    eligible: np.ndarray,
    speaker_of: Mapping[int, str],
    named: Mapping[int, str],
) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for target, p in zip(fit.candidates[i], fit.probabilities[i], strict=True):
        if target < 0 or target == own_cluster or not eligible[target]:
            continue
        name = speaker_of.get(int(target), named.get(int(target)))
        if name is not None and all(name != seen for seen, _ in out):
            out.append((name, float(p)))
        if len(out) == ALTERNATIVES:
            break
    return out


def guess_names(
    fit: Membership, final: np.ndarray, named: Mapping[int, str], minimum: float
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


def names_from_model(
    model: NameModel | None,
    context: LineContext,
    codes: np.ndarray,
    names: Sequence[str],
    proposals: Sequence[Proposal],
    *,
    sure: float,
    override: float,
    none_margin: float,
) -> list[Proposal]:
    """Let the name model overrule the clusters' proposal where it is surer.

    A cluster's name is only as good as the cluster; with enough labels the labelled lines
    themselves (and who speaks around a line) say more about a noisy line than the cluster
    it happened to join. A numbered-speaker cluster (and a line with no speaker) takes the
    model's best known name, judged on its members' mean probabilities, unless "none of the
    known names" is likelier by more than ``none_margin``. A named cluster's line changes name
    when the model's P beats the proposal's score by more than ``override``.
    """
    if model is None or not names:
        return list(proposals)
    rows = np.flatnonzero(codes == UNLABELLED)
    if not len(rows):
        return list(proposals)
    p = model.predict_proba(context, codes, rows, sure=sure)
    known = set(names)
    # a numbered-speaker cluster is judged as a whole: its members' mean probabilities
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
            if old.speaker == names[best] or p_best <= old.score + override:
                continue
        elif float(pooled[a, 1 + best]) <= p_none - none_margin:
            continue
        alternatives = tuple(
            (names[j], round(float(p[a, 1 + j]), 4))
            for j in np.argsort(-p[a, 1:]).tolist()
            if j != best and p[a, 1 + j] > 0.0
        )[:ALTERNATIVES]
        out[i] = Proposal(old.line_id, names[best], old.cluster, p_best, alternatives)
    return out
