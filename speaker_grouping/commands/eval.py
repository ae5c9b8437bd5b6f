"""Score predicted speakers against ground truth: edge and BCubed P/R/F1, coverage, operations.

TRUTH is a CSV with an ``index`` column and the true label (default column ``character``, as in
the episode generator's ``truth.csv``); PRED is a CSV with an ``index`` column and the predicted
speaker or cluster (default column ``speaker``, as ``speaker-grouping group`` writes it; an empty
cell is an unassigned line). A ``line_id`` column (``<episode>:<index>``) may stand in for
``index``. When both files name an ``episode`` per line, lines are joined on (episode, index), so
one pair of files can hold a whole season. Truth lines with no prediction count as unassigned.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from foundation.layout import split_line_id

if TYPE_CHECKING:  # the metrics (numpy) load only when the command runs
    from ml_backend.metrics import GroupingScores

Key = tuple[str | None, int]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "truth", type=Path, help="ground-truth CSV (e.g. the generator's truth.csv)"
    )
    parser.add_argument("pred", type=Path, help="predictions CSV (e.g. what `group` wrote)")
    parser.add_argument(
        "--truth-column", default="character", help="true label column (default: character)"
    )
    parser.add_argument(
        "--pred-column", default="speaker", help="predicted label column (default: speaker)"
    )
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")


def run(args: argparse.Namespace) -> int:
    truth = read_labels(args.truth, column=args.truth_column, required=True)
    predicted = read_labels(args.pred, column=args.pred_column, required=False)
    result = compare(truth, predicted)
    if args.json:
        document = {"truth": str(args.truth), "pred": str(args.pred)}
        document["missing_predictions"] = result.missing
        document.update(result.scores.to_dict())
        print(json.dumps(document, indent=2))
    else:
        if result.missing:
            print(
                f"note: {result.missing} lines of {args.truth} have no prediction in "
                f"{args.pred}; counted as unassigned",
                file=sys.stderr,
            )
        print(format_scores(result.scores))
    return 0


@dataclass(frozen=True)
class LabelFile:
    """One CSV's labels keyed by (episode or None, index), with where each key was read."""

    path: Path
    labels: dict[Key, str]
    rows: dict[Key, int]
    """The CSV line number each key came from, for error messages."""
    has_episodes: bool


@dataclass(frozen=True)
class Comparison:
    scores: GroupingScores
    missing: int


def read_labels(path: Path, *, column: str, required: bool) -> LabelFile:
    """Read one label CSV; every problem is a one-line ValueError naming the file and line.

    ``required``: an empty label is an error (truth) rather than an unassigned line (pred).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames
        if not fields:
            raise ValueError(f"{path}: empty file, expected a CSV header")
        if column not in fields:
            raise ValueError(f"{path}:1: no column {column!r} (columns: {', '.join(fields)})")
        if "index" not in fields and "line_id" not in fields:
            raise ValueError(f"{path}:1: no 'index' or 'line_id' column")
        has_episodes = "episode" in fields or ("index" not in fields and "line_id" in fields)
        labels: dict[Key, str] = {}
        rows: dict[Key, int] = {}
        for record in reader:
            line = reader.line_num
            key = _key(record, path=path, line=line, has_episode_column="episode" in fields)
            if key in rows:
                raise ValueError(
                    f"{path}:{line}: {_describe(key)} appears twice (first on line {rows[key]})"
                )
            label = (record.get(column) or "").strip()
            if required and not label:
                raise ValueError(f"{path}:{line}: {_describe(key)} has no {column!r}")
            labels[key] = label
            rows[key] = line
    return LabelFile(path=path, labels=labels, rows=rows, has_episodes=has_episodes)


def compare(truth: LabelFile, predicted: LabelFile) -> Comparison:
    """Align the predictions to the truth lines and score them.

    Joins on (episode, index) when both files have episodes, else on index alone. A predicted
    line that is not in the truth is an error; a truth line with no prediction is unassigned.
    """
    from ml_backend.metrics import score_grouping

    by_episode = truth.has_episodes and predicted.has_episodes
    truth_labels = _rekey(truth, by_episode)
    predicted_labels = _rekey(predicted, by_episode)
    for key in predicted_labels:
        if key not in truth_labels:
            row = predicted.rows[key] if by_episode else _row_by_index(predicted, key[1])
            raise ValueError(f"{predicted.path}:{row}: {_describe(key)} is not in {truth.path}")
    keys = list(truth_labels)
    missing = sum(key not in predicted_labels for key in keys)
    scores = score_grouping(
        [truth_labels[key] for key in keys], [predicted_labels.get(key, "") for key in keys]
    )
    return Comparison(scores=scores, missing=missing)


def format_scores(scores: GroupingScores) -> str:
    """A small plain-text table of a GroupingScores."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    ops = scores.operations
    coverage = "-" if scores.coverage is None else f"{100 * scores.coverage:.1f}%"
    per_100 = "-" if ops.per_100_lines is None else f"{ops.per_100_lines:.1f}"
    lines = [
        f"lines {scores.lines}  speakers {scores.speakers}  clusters {scores.clusters}  "
        f"assigned {scores.assigned}  coverage {coverage}",
        "",
        f"{'':<8}{'precision':>10}{'recall':>10}{'F1':>10}",
        f"{'edge':<8}{number(scores.edge.precision):>10}{number(scores.edge.recall):>10}"
        f"{number(scores.edge.f1):>10}",
        f"{'BCubed':<8}{number(scores.bcubed.precision):>10}{number(scores.bcubed.recall):>10}"
        f"{number(scores.bcubed.f1):>10}",
        "",
        f"operations: {ops.removals} removals + {ops.adds} adds + {ops.merges} merges + "
        f"{ops.names} names = {ops.total} ({per_100} per 100 lines)",
        f"pairs: {scores.edge.correct_pairs} correct of {scores.edge.predicted_pairs} predicted, "
        f"{scores.edge.true_pairs} true",
    ]
    return "\n".join(lines)


def _key(record: dict, *, path: Path, line: int, has_episode_column: bool) -> Key:
    episode = ((record.get("episode") or "").strip() or None) if has_episode_column else None
    raw = (record.get("index") or "").strip()
    if not raw and record.get("line_id"):
        line_id = record["line_id"].strip()
        episode_part, raw = split_line_id(line_id)
        if not episode_part:
            raise ValueError(f"{path}:{line}: bad line_id {line_id!r} (want <episode>:<index>)")
        episode = episode or episode_part
    try:
        index = int(raw)
    except ValueError:
        raise ValueError(f"{path}:{line}: bad index {raw!r} (want a whole number)") from None
    if index < 0:
        raise ValueError(f"{path}:{line}: bad index {index} (negative)")
    return (episode, index)


def _rekey(labels: LabelFile, by_episode: bool) -> dict[Key, str]:
    if by_episode:
        return labels.labels
    rekeyed: dict[Key, str] = {}
    for (episode, index), label in labels.labels.items():
        key = (None, index)
        if key in rekeyed:
            raise ValueError(
                f"{labels.path}:{labels.rows[(episode, index)]}: index {index} appears in more "
                "than one episode; give both files an 'episode' column"
            )
        rekeyed[key] = label
    return rekeyed


def _row_by_index(labels: LabelFile, index: int) -> int:
    return next(row for (_, i), row in labels.rows.items() if i == index)


def _describe(key: Key) -> str:
    episode, index = key
    return f"line {index}" if episode is None else f"line {index} of episode {episode}"
