"""An append-only, fsynced journal of label changes: what makes a webhook's 200 safe to send.

Storing a label used to rewrite the whole ``state.json`` (every annotation of the project) before
the webhook was acknowledged. Now each acknowledged change is one JSON line appended to
``labels.journal`` and fsynced; the full state is written by the other commits and compacted on
start (`ml_backend.project_state.ProjectState.compact_journal`), when the journal is replayed
onto ``state.json`` and emptied.

Records (one JSON object per line):

- ``{"put": {"<annotation id>": entry, ...}}``: annotations stored or replaced;
- ``{"del": [annotation id, ...]}``: annotations forgotten.

Both are idempotent, so replaying the whole journal onto any ``state.json`` written since the
last compaction gives the same labels. A line cut short by a crash (never acknowledged) is
ignored with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from foundation.atomic import atomic_write_bytes, fsync_directory

logger = logging.getLogger(__name__)

JOURNAL_FILE = "labels.journal"


class LabelJournal:
    """The journal of one project folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record and fsync it; returns once it survives a crash."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            created = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_directory(self.path.parent)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record, oldest first; a torn or unreadable line is skipped."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                logger.warning(
                    "%s:%d: unreadable record skipped (cut by a crash?)", self.path, number
                )
                continue
            if isinstance(record, dict):
                yield record

    def clear(self) -> None:
        """Empty the journal (after its records are in a written ``state.json``)."""
        with self._lock:
            if self.path.exists():
                atomic_write_bytes(self.path, b"")


def apply(record: Mapping[str, Any], annotations: dict[str, Any], tasks: dict[str, Any]) -> None:
    """Apply one record to a state's ``annotations`` and ``tasks`` maps (in place)."""
    put = record.get("put")
    if isinstance(put, dict):
        for key, entry in put.items():
            if isinstance(entry, dict) and "line_id" in entry and "task" in entry:
                annotations[str(key)] = entry
                tasks[str(entry["task"])] = entry["line_id"]
    removed = record.get("del")
    if isinstance(removed, list):
        for key in removed:
            annotations.pop(str(key), None)
