"""Grouping quality: the one definition of every metric of docs/architecture.md §5, used everywhere.

A *grouping* gives each line a predicted cluster (any hashable label) or leaves it unassigned;
the truth gives each line its speaker. All metrics compare the two partitions of the lines:

- **edge** precision, recall and F1 over all pairs of lines: a pair is *predicted* when both lines
  share a cluster and *true* when both share a speaker. An unassigned line is a cluster of its
  own, so it predicts no pair;
- **BCubed** precision, recall and F1: per line, the share of its cluster that shares its speaker
  (precision) and the share of its speaker's lines that share its cluster (recall), averaged over
  lines. An unassigned line is again a singleton: precision 1, recall 1/(its speaker's lines);
- **coverage**: the share of lines assigned to a cluster;
- **operation count**: what an annotator must do to turn the grouping into the truth, with each
  predicted cluster mapped to its majority speaker (see `operation_count`).

Undefined is not zero: precision with no predicted pairs (or recall with no true pairs, or any
score of zero lines) is ``None``, so a method that predicts nothing cannot score a perfect or a
failing precision by accident; tables print it as ``-``. F1 is 0 when one side is 0 (the
harmonic mean is 0 whatever the other side is) and ``None`` when a side is undefined otherwise.

Pairs are counted from the contingency table of (speaker, cluster) counts, so memory is O(lines)
and 20,000 lines cost milliseconds; pair counts are exact integers.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "BCubedScores",
    "EdgeScores",
    "GroupingScores",
    "Operations",
    "bcubed_scores",
    "coverage",
    "edge_scores",
    "is_unassigned",
    "operation_count",
    "score_grouping",
]


@dataclass(frozen=True)
class EdgeScores:
    """Pairwise scores; ``None`` where undefined (see the module docstring)."""

    precision: float | None
    recall: float | None
    f1: float | None
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int


@dataclass(frozen=True)
class BCubedScores:
    precision: float | None
    recall: float | None
    f1: float | None


@dataclass(frozen=True)
class Operations:
    """Corrections that turn a grouping into the truth (docs/architecture.md §5).

    Each predicted cluster maps to its majority speaker (ties: the speaker seen first in line
    order). ``removals``: members not of that speaker; ``adds``: the removed lines plus the
    unassigned ones, each put where it belongs; ``merges``: per speaker, the clusters mapped to it
    minus one; ``names``: the speakers with at least one mapped cluster, each named once.
    """

    removals: int
    adds: int
    merges: int
    names: int
    total: int
    per_100_lines: float | None


@dataclass(frozen=True)
class GroupingScores:
    """Every §5 metric of one grouping against the truth."""

    lines: int
    speakers: int
    clusters: int
    """Predicted clusters, unassigned lines not counted."""
    assigned: int
    coverage: float | None
    edge: EdgeScores
    bcubed: BCubedScores
    operations: Operations

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (``None`` stays ``None``: JSON ``null``)."""
        return asdict(self)


def is_unassigned(label: object) -> bool:
    """Whether a predicted label means "no cluster": ``None``, ``""``, NaN or a negative integer.

    Negative integers follow the cluster-id convention (``-1``, as HDBSCAN's noise label and
    ``Proposal.cluster``); the empty string is how a CSV writes an unknown speaker.
    """
    if label is None:
        return True
    if isinstance(label, str):
        return label == ""
    if isinstance(label, (bool, np.bool_)):
        return False
    if isinstance(label, (int, np.integer)):
        return int(label) < 0
    if isinstance(label, (float, np.floating)):
        return bool(np.isnan(label)) or float(label) < 0
    return False


def edge_scores(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> EdgeScores:
    """Pairwise precision, recall and F1 of ``predicted`` clusters against ``truth`` speakers.

    truth : (num_lines,) speaker of each line (every line has one)
    predicted : (num_lines,) cluster of each line; unassigned (`is_unassigned`) = its own cluster
    """
    return _edge(_Contingency.build(truth, predicted))


def _edge(table: _Contingency) -> EdgeScores:
    correct = _pairs(table.cells)
    true_pairs = _pairs(table.speaker_sizes)
    predicted_pairs = _pairs(table.cluster_sizes)
    precision = correct / predicted_pairs if predicted_pairs else None
    recall = correct / true_pairs if true_pairs else None
    return EdgeScores(
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        true_pairs=true_pairs,
        predicted_pairs=predicted_pairs,
        correct_pairs=correct,
    )


def bcubed_scores(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> BCubedScores:
    """BCubed precision, recall and F1 (Bagga & Baldwin), unassigned lines as singletons.

    With n_sc lines of speaker s in cluster c, |c| lines in c and |s| lines of s:
    precision = (1/N) sum_sc n_sc^2 / |c|, recall = (1/N) sum_sc n_sc^2 / |s|.
    """
    return _bcubed(_Contingency.build(truth, predicted))


def _bcubed(table: _Contingency) -> BCubedScores:
    if table.lines == 0:
        return BCubedScores(None, None, None)
    squared = table.cells.astype(np.float64) ** 2
    precision = float(np.sum(squared / table.cluster_sizes[table.cell_cluster])) / table.lines
    recall = float(np.sum(squared / table.speaker_sizes[table.cell_speaker])) / table.lines
    return BCubedScores(precision, recall, _f1(precision, recall))


def coverage(predicted: Sequence[Hashable]) -> float | None:
    """Share of lines assigned to a cluster; ``None`` for no lines."""
    if len(predicted) == 0:
        return None
    return sum(not is_unassigned(label) for label in predicted) / len(predicted)


def operation_count(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> Operations:
    """Removals, adds, merges and names that turn ``predicted`` into ``truth`` (see `Operations`).

    Unassigned lines are not clusters here: each costs one add and nothing else.
    """
    return _operations(_Contingency.build(truth, predicted))


def _operations(table: _Contingency) -> Operations:
    assigned_cells = table.cluster_assigned[table.cell_cluster]
    cells = table.cells[assigned_cells]
    cell_speaker = table.cell_speaker[assigned_cells]
    cell_cluster = table.cell_cluster[assigned_cells]
    # Majority speaker per cluster: sort cells by (cluster, -count, speaker's first appearance)
    # and take each cluster's first cell; speakers are coded in order of first appearance.
    order = np.lexsort((cell_speaker, -cells, cell_cluster))
    sorted_clusters = cell_cluster[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_clusters[1:] != sorted_clusters[:-1]
    majority_cells = order[first]
    majority_speaker = cell_speaker[majority_cells]
    assigned = int(table.cells[assigned_cells].sum())
    removals = assigned - int(cells[majority_cells].sum())
    adds = removals + (table.lines - assigned)
    clusters_per_speaker = np.bincount(majority_speaker, minlength=len(table.speaker_sizes))
    names = int(np.count_nonzero(clusters_per_speaker))
    merges = int(clusters_per_speaker.sum()) - names
    total = removals + adds + merges + names
    return Operations(
        removals=removals,
        adds=adds,
        merges=merges,
        names=names,
        total=total,
        per_100_lines=100.0 * total / table.lines if table.lines else None,
    )


def score_grouping(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> GroupingScores:
    """Every metric at once; ``truth`` and ``predicted`` are aligned per line."""
    table = _Contingency.build(truth, predicted)
    assigned = int(table.cluster_sizes[table.cluster_assigned].sum())
    return GroupingScores(
        lines=table.lines,
        speakers=len(table.speaker_sizes),
        clusters=int(np.count_nonzero(table.cluster_assigned)),
        assigned=assigned,
        coverage=assigned / table.lines if table.lines else None,
        edge=_edge(table),
        bcubed=_bcubed(table),
        operations=_operations(table),
    )


# ---------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Contingency:
    """Sparse (speaker, cluster) count table: one entry per non-empty cell.

    Speakers and clusters are coded 0.. in order of first appearance; every unassigned line gets
    a cluster of its own (``cluster_assigned`` False).
    """

    lines: int
    cells: np.ndarray  # (num_cells,) int64 lines per non-empty cell
    cell_speaker: np.ndarray  # (num_cells,) int64 speaker code
    cell_cluster: np.ndarray  # (num_cells,) int64 cluster code
    speaker_sizes: np.ndarray  # (num_speakers,) int64
    cluster_sizes: np.ndarray  # (num_clusters,) int64
    cluster_assigned: np.ndarray  # (num_clusters,) bool

    @classmethod
    def build(cls, truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> _Contingency:
        if len(truth) != len(predicted):
            raise ValueError(
                f"truth has {len(truth)} lines but the prediction has {len(predicted)}"
            )
        speakers = _codes(truth, what="truth")
        clusters, assigned = _cluster_codes(predicted)
        num_clusters = len(assigned)
        # One int64 key per cell: speakers x clusters stays far below 2**63 for any line count.
        keys = speakers * max(num_clusters, 1) + clusters
        unique, counts = np.unique(keys, return_counts=True)
        return cls(
            lines=len(truth),
            cells=counts.astype(np.int64),
            cell_speaker=unique // max(num_clusters, 1),
            cell_cluster=unique % max(num_clusters, 1),
            speaker_sizes=np.bincount(speakers).astype(np.int64),
            cluster_sizes=np.bincount(clusters, minlength=num_clusters).astype(np.int64),
            cluster_assigned=assigned,
        )


def _codes(labels: Sequence[Hashable], *, what: str) -> np.ndarray:
    """(n,) int64 codes in order of first appearance."""
    index: dict[Hashable, int] = {}
    codes = np.empty(len(labels), dtype=np.int64)
    for position, label in enumerate(labels):
        if label is None:
            raise ValueError(f"{what} line {position} has no label")
        codes[position] = index.setdefault(_key(label), len(index))
    return codes


def _cluster_codes(labels: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    index: dict[Hashable, int] = {}
    codes = np.empty(len(labels), dtype=np.int64)
    assigned: list[bool] = []
    for position, label in enumerate(labels):
        if is_unassigned(label):
            codes[position] = len(assigned)
            assigned.append(False)
            continue
        key = _key(label)
        if key not in index:
            index[key] = len(assigned)
            assigned.append(True)
        codes[position] = index[key]
    return codes, np.array(assigned, dtype=bool)


def _key(label: Hashable) -> Hashable:
    # numpy scalars hash like Python ones, but keep 1 and np.int64(1) one key explicitly.
    return label.item() if isinstance(label, np.generic) else label


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int(np.sum(counts * (counts - 1) // 2))


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision == 0 or recall == 0:
        return 0.0
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall)
