"""What the annotation loop shows the annotator, judged against the truth, step by step.

`LoopTracker` is fed every set of proposals the simulated annotator is shown (`observe`) and
every answer it gives (`answered`), and reports (issue 15's "Must show" and issue 16 item 4):

- **calibration**: a reliability table of the shown scores (mean score, share right, count per
  0.1-wide bin), pooled over every proposal of an unreviewed line in every snapshot, and the
  share of wrong proposals scored >= 0.9;
- **churn**: proposals of unreviewed lines that a refit turned from right to wrong (and from
  wrong to right), per 100 lines;
- **new speakers**: for each speaker, whether the first of their lines that the annotator
  reviewed, while nobody had named that speaker yet, was shown as a new numbered speaker
  (`Speaker N`, right: a new person; counted under the key ``placeholder``) or under a known
  name (a new speaker hidden under someone else); and the same over every snapshot;
- **blast radius**: per answer, how many unreviewed lines changed their shown speaker at the
  next snapshot, and how many turned from right to wrong; reported separately for the
  deliberately wrong answers (annotator mistakes).

A proposal is right (the operation count's rule, docs/architecture.md §5) when its name is the
line's speaker, or, for a numbered speaker, when the line's speaker is the one most lines of
that numbered speaker have and nobody has given that speaker's name yet; "Unknown" is never right.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_backend.grouping.calibration import reliability_bins
from ml_backend.grouping.proposal import NUMBERED_SPEAKER_PREFIX

HIGH_SCORE = 0.9
BINS = 10


def is_numbered_speaker(name: str | None) -> bool:
    """A numbered speaker (`Speaker 7`): a cluster nobody has named yet."""
    if name is None or not name.startswith(NUMBERED_SPEAKER_PREFIX):
        return False
    return name.removeprefix(NUMBERED_SPEAKER_PREFIX).isdigit()


@dataclass
class _Answer:
    line: str
    wrong: bool
    after: int | None = None
    """Index of the snapshot that followed the answer (None until one came)."""


@dataclass
class LoopTracker:
    """Collects the loop's snapshots. ``truth`` maps line id -> speaker."""

    truth: Mapping[str, str]
    snapshots: list[dict[str, tuple[str | None, float]]] = field(default_factory=list)
    reviewed_at: list[set[str]] = field(default_factory=list)
    named_at: list[set[str]] = field(default_factory=list)
    answers: list[_Answer] = field(default_factory=list)
    first_review: dict[str, str] = field(default_factory=dict)
    """speaker -> "placeholder" / "known name" / "unknown" / "right name" at first review."""
    _reviewed: set[str] = field(default_factory=set)
    _named: set[str] = field(default_factory=set)

    def observe(self, shown: Mapping[str, tuple[str | None, float]]) -> None:
        """One snapshot: line id -> (speaker shown, score), for (at least) unreviewed lines."""
        self.snapshots.append(dict(shown))
        self.reviewed_at.append(set(self._reviewed))
        self.named_at.append(set(self._named))
        for answer in self.answers:
            if answer.after is None:
                answer.after = len(self.snapshots) - 1

    def answered(self, line: str, shown: str | None, label: str) -> None:
        """The annotator reviewed ``line``, shown ``shown``, and gave ``label``."""
        speaker = self.truth[line]
        if speaker not in self._named and speaker not in self.first_review:
            if shown == speaker:
                kind = "right name"
            elif shown is None:
                kind = "unknown"
            elif is_numbered_speaker(shown):
                kind = "placeholder"
            else:
                kind = "known name"
            self.first_review[speaker] = kind
        self._reviewed.add(line)
        self._named.add(label)
        self.answers.append(_Answer(line, label != speaker))

    # ------------------------------------------------------------------ judging

    def _right(self, k: int) -> dict[str, bool]:
        """Whether each unreviewed line's proposal in snapshot ``k`` is right."""
        shown, named = self.snapshots[k], self.named_at[k]
        majority: dict[str, str] = {}
        members: dict[str, Counter[str]] = {}
        for line, (speaker, _) in shown.items():
            if is_numbered_speaker(speaker):
                members.setdefault(str(speaker), Counter())[self.truth[line]] += 1
        for placeholder, counts in members.items():
            majority[placeholder] = counts.most_common(1)[0][0]
        out = {}
        for line, (speaker, _) in shown.items():
            if line in self.reviewed_at[k]:
                continue
            true = self.truth[line]
            if speaker is None:
                out[line] = False
            elif is_numbered_speaker(speaker):
                out[line] = majority[speaker] == true and true not in named
            else:
                out[line] = speaker == true
        return out

    def summary(self) -> dict[str, Any]:
        n = len(self.truth)
        rights = [self._right(k) for k in range(len(self.snapshots))]
        scores, right = [], []
        for k, judged in enumerate(rights):
            for line, ok in judged.items():
                scores.append(self.snapshots[k][line][1])
                right.append(ok)
        scores_a, right_a = np.array(scores, float), np.array(right, bool)
        wrong_high = int(((scores_a >= HIGH_SCORE) & ~right_a).sum())
        wrong_high_new = sum(
            1
            for k, judged in enumerate(rights)
            for line, ok in judged.items()
            if not ok
            and self.snapshots[k][line][1] >= HIGH_SCORE
            and self.truth[line] not in self.named_at[k]
        )
        wrong_lines_high = {
            line
            for k, judged in enumerate(rights)
            for line, ok in judged.items()
            if not ok and self.snapshots[k][line][1] >= HIGH_SCORE
        }
        flips_bad = flips_good = 0
        for k in range(1, len(rights)):
            for line, ok in rights[k].items():
                before = rights[k - 1].get(line)
                if before is True and not ok:
                    flips_bad += 1
                elif before is False and ok:
                    flips_good += 1
        # new speakers under known names, over every snapshot
        hidden = shown_new = 0
        for k, judged in enumerate(rights):
            for line in judged:
                true = self.truth[line]
                if true in self.named_at[k]:
                    continue
                speaker = self.snapshots[k][line][0]
                if is_numbered_speaker(speaker):
                    shown_new += 1
                elif speaker is not None:
                    hidden += 1
        first = Counter(self.first_review.values())
        blast = [self._blast(a) for a in self.answers if a.after is not None]
        wrong_blast = [b for b, a in zip(blast, self.answers, strict=False) if a.wrong]
        return {
            "snapshots": len(self.snapshots),
            "calibration": {
                "proposals": len(scores),
                "reliability": _reliability(scores_a, right_a),
                "wrong": int((~right_a).sum()),
                "wrong_scored_high": wrong_high,
                "wrong_high_share": round(wrong_high / max(1, int((~right_a).sum())), 4),
                "wrong_high_unnamed_speaker": wrong_high_new,
                "lines_ever_wrong_high": len(wrong_lines_high),
            },
            "churn": {
                "right_to_wrong": flips_bad,
                "wrong_to_right": flips_good,
                "right_to_wrong_per_100": round(100.0 * flips_bad / n, 2) if n else 0.0,
            },
            "new_speakers": {
                "speakers": len(self.first_review),
                "first_line": dict(first),
                "first_line_placeholder_share": round(
                    first["placeholder"] / max(1, len(self.first_review)), 3
                ),
                "snapshot_lines_placeholder": shown_new,
                "snapshot_lines_known_name": hidden,
            },
            "blast": {
                "answers": len(blast),
                "changed_median": _median([b[0] for b in blast]),
                "changed_max": max((b[0] for b in blast), default=0),
                "wrong_answers": len(wrong_blast),
                "wrong_answer_changed": [b[0] for b in wrong_blast],
                "wrong_answer_broke": [b[1] for b in wrong_blast],
            },
        }

    def _blast(self, answer: _Answer) -> tuple[int, int]:
        """(lines whose shown speaker changed, lines turned right -> wrong) at the snapshot
        after ``answer``, among lines unreviewed in both."""
        k = answer.after
        assert k is not None
        if k == 0:
            return 0, 0
        before, after = self.snapshots[k - 1], self.snapshots[k]
        right_before, right_after = self._right(k - 1), self._right(k)
        changed = broke = 0
        for line, (speaker, _) in after.items():
            if line in self.reviewed_at[k] or line not in before:
                continue
            if before[line][0] != speaker:
                changed += 1
                if right_before.get(line) and not right_after.get(line):
                    broke += 1
        return changed, broke


def _median(values: list[int]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _reliability(scores: np.ndarray, right: np.ndarray) -> list[dict[str, Any]]:
    """`calibration.reliability_bins` as JSON rows."""
    return [
        {
            "bin": f"{low:.1f}-{high:.1f}",
            "mean_score": round(mean, 3),
            "right": round(share, 3),
            "n": count,
        }
        for low, high, mean, share, count in reliability_bins(scores, right, BINS)
    ]


def lowest_share_precision(scores: np.ndarray, wrong: np.ndarray, share: float = 0.1) -> float:
    """Share of wrong proposals among the ``share`` lowest scores (ties broken by line order).

    scores : (n,) float; wrong : (n,) bool.
    """
    n = len(scores)
    if n == 0:
        return float("nan")
    k = max(1, round(share * n))
    order = np.lexsort((np.arange(n), scores))[:k]
    return float(np.asarray(wrong, bool)[order].mean())
