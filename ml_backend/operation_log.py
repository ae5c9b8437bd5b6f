"""What each annotation cost, per episode and annotator (docs/architecture.md §5, online).

Every submitted annotation is compared with the proposal the annotator was shown for that line:

- ``accepted``: the label is the proposed speaker (or both say "nobody"); no operation.
- ``add``: the line was unassigned (proposed "Unknown") and now has a speaker.
- ``remove``: the line was proposed as one named speaker and the annotator chose another (or
  "Unknown"): it leaves a wrong cluster.
- ``name``: the line was in an unnamed cluster ("Speaker 7") and got a name nobody else holds
  yet: the cluster is named.
- ``merge``: the line was in an unnamed cluster and got a name another cluster already holds:
  the two clusters are one speaker.

The log is keyed by annotation id: an updated annotation replaces its entry (counting one more
revision), a deleted one is kept but marked, so the log always describes the work done.

A whole cluster accepted in one action (the Data Manager's "Create Annotations From
Predictions" on a filtered selection, one bulk webhook) is one operation, not one per line:
`record_group` stores each annotation under its id as usual (so a later update or deletion of
one line still finds it) with a shared ``group``, and `entries` and `summary` count the group
once. A line of the group that is corrected later leaves the group and counts on its own.

Each refit that follows new labels is logged too (`OperationLog.record_refit`), with the labels
it took in and how many unlabelled lines it changed (``lines_moved``, and ``from_named`` of those
that had shown a known name): one annotation that moves many lines is a large blast radius
(`ml_backend.grouping.stability`), flagged ``large`` above ``LARGE_MOVE`` lines.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from label_config import NUMBERED_SPEAKER_PREFIX
from ml_backend.project_state import DurableJson

OPERATIONS_FILE = "operations.json"
KINDS = ("add", "remove", "merge", "name")


def classify(proposed: str | None, label: str | None, *, named_elsewhere: bool) -> str:
    """``accepted`` or the kind of correction (see the module docstring).

    proposed : the speaker shown (a human name or a numbered speaker), or None for "Unknown".
    label : the speaker the annotator gave, or None for "Unknown"/flagged.
    named_elsewhere : whether ``label`` already names other lines (a known name), which turns
        a numbered speaker's naming into a merge; a proposed name that is not a known name is
        a numbered speaker.
    """
    if proposed == label:
        return "accepted"
    if proposed is None:
        return "add"
    if label is None:
        return "remove"
    if _is_numbered_speaker(proposed):
        return "merge" if named_elsewhere else "name"
    return "remove"


def _is_numbered_speaker(proposed: str) -> bool:
    number = proposed.removeprefix(NUMBERED_SPEAKER_PREFIX)
    return number != proposed and number.isdigit()


class OperationLog:
    """The log of one project, in ``<project folder>/operations.json``."""

    def __init__(self, folder: Path) -> None:
        self._doc = DurableJson(Path(folder) / OPERATIONS_FILE, {"annotations": {}, "refits": []})

    def record(
        self,
        annotation_id: int,
        *,
        episode: str,
        annotator: str,
        line_id: str,
        proposed: str | None,
        label: str | None,
        named_elsewhere: bool,
        score: float | None = None,
        group: str | None = None,
        commit: bool = True,
    ) -> str:
        """Log one submitted annotation; returns its kind.

        score : the proposal's score as shown, so that the log tells how the scores fared.
        group : the bulk action it came with (`record_group`); a revision leaves its group.
        """
        kind = classify(proposed, label, named_elsewhere=named_elsewhere)
        key = str(int(annotation_id))
        with self._doc.lock:
            known = self._doc.data["annotations"].get(key)
            if known is not None and not known.get("deleted"):
                if known["label"] == label:
                    return str(known["kind"])  # re-saved unchanged: no new work
                # A revision is judged against what was shown the first time.
                kind = classify(known["proposed"], label, named_elsewhere=named_elsewhere)
            self._doc.data["annotations"][key] = {
                **({"group": group} if group is not None and known is None else {}),
                "episode": episode,
                "annotator": annotator,
                "line_id": line_id,
                "proposed": proposed if known is None else known["proposed"],
                "score": score if known is None else known.get("score"),
                "label": label,
                "kind": kind,
                "revisions": 0 if known is None else int(known.get("revisions", 0)) + 1,
                "time": time.time() if known is None else known["time"],
                "updated": time.time(),
            }
        if commit:
            self._doc.commit()
        return kind

    def record_group(self, operations: list[dict[str, Any]]) -> tuple[dict[int, str], list[str]]:
        """Log the annotations of one bulk action, one operation per speaker given.

        operations : `record`'s keyword arguments, one dict per annotation.
        Returns each annotation's kind and the kind of each operation logged (one per group:
        ``accepted`` when every line of it was, else its most common correction).
        """
        by_label: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for operation in operations:
            by_label[operation["label"]].append(operation)
        kinds: dict[int, str] = {}
        logged: list[str] = []
        for members in by_label.values():
            known = self.logged_ids()
            fresh = [m for m in members if int(m["annotation_id"]) not in known]
            group = (
                f"bulk-{min(int(m['annotation_id']) for m in fresh)}" if len(fresh) > 1 else None
            )
            member_kinds = []
            for member in members:
                grouped = group if member in fresh else None
                kind = self.record(**member, group=grouped, commit=False)
                kinds[int(member["annotation_id"])] = kind
                if grouped is None:
                    logged.append(kind)
                else:
                    member_kinds.append(kind)
            if member_kinds:
                logged.append(_group_kind(member_kinds))
        self._doc.commit()
        return kinds, logged

    def mark_deleted(self, annotation_ids: list[int]) -> None:
        changed = False
        with self._doc.lock:
            for annotation_id in annotation_ids:
                entry = self._doc.data["annotations"].get(str(int(annotation_id)))
                if entry is not None and not entry.get("deleted"):
                    entry["deleted"] = True
                    changed = True
        if changed:
            self._doc.commit()

    def logged_ids(self) -> set[int]:
        """Every annotation id in the log (deleted ones included)."""
        with self._doc.lock:
            return {int(key) for key in self._doc.data["annotations"]}

    def entries(self) -> list[dict[str, Any]]:
        """Every operation, oldest first: one row per annotation, or per bulk group.

        A group's row holds its first annotation's fields plus ``annotations`` (every id),
        ``lines`` (how many) and the group's kind; its deleted members drop out of it.
        """
        with self._doc.lock:
            rows = [
                {"annotation": int(key), **entry}
                for key, entry in self._doc.data["annotations"].items()
            ]
        rows.sort(key=lambda row: (row["time"], row["annotation"]))
        out: list[dict[str, Any]] = []
        groups: dict[str, dict[str, Any]] = {}
        for row in rows:
            group = row.get("group")
            if group is None or row.get("deleted"):
                out.append(row)
                continue
            if group not in groups:
                groups[group] = {**row, "annotations": [], "lines": 0, "kinds": []}
                out.append(groups[group])
            merged = groups[group]
            merged["annotations"].append(row["annotation"])
            merged["lines"] += 1
            merged["kinds"].append(row["kind"])
        for merged in groups.values():
            merged["kind"] = _group_kind(merged.pop("kinds"))
        return out

    def record_refit(
        self,
        version: str,
        *,
        labels: Mapping[str, str | None],
        lines_moved: int,
        from_named: int,
        held: int,
        large: bool,
    ) -> None:
        """Log what one refit changed: the labels new to it (line id -> name) and the lines
        it moved (see the module docstring)."""
        with self._doc.lock:
            self._doc.data["refits"].append(
                {
                    "version": version,
                    "time": time.time(),
                    "labels": dict(labels),
                    "lines_moved": int(lines_moved),
                    "from_named": int(from_named),
                    "held": int(held),
                    "large": bool(large),
                }
            )
        self._doc.commit()

    def refits(self) -> list[dict[str, Any]]:
        """Every logged refit, oldest first."""
        with self._doc.lock:
            return [dict(entry) for entry in self._doc.data["refits"]]

    def summary(self) -> list[dict[str, Any]]:
        """One row per (episode, annotator): reviewed, accepted, corrected and each kind."""
        return summarize(self.entries())


def _group_kind(kinds: list[str]) -> str:
    """A bulk group's kind: accepted when every line was, else its most common correction."""
    corrections = [kind for kind in kinds if kind != "accepted"]
    if not corrections:
        return "accepted"
    return max(KINDS, key=corrections.count)


def summarize(entries: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: (
            {"reviewed": 0, "accepted": 0, "corrected": 0, "revisions": 0} | dict.fromkeys(KINDS, 0)
        )
    )
    for entry in entries:
        if entry.get("deleted"):
            continue
        row = counts[(str(entry["episode"]), str(entry["annotator"]))]
        row["reviewed"] += 1
        row["revisions"] += int(entry.get("revisions", 0))
        if entry["kind"] == "accepted":
            row["accepted"] += 1
        else:
            row["corrected"] += 1
            row[entry["kind"]] += 1
    return [
        {"episode": episode, "annotator": annotator, **row}
        for (episode, annotator), row in sorted(counts.items())
    ]
