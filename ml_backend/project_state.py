"""What the backend knows about one Label Studio project, on disk under ``MODEL_DIR/<project>/``.

- ``state.json``: every annotation seen (its task, line, speaker, annotator and time), so that
  ``ANNOTATIONS_DELETED``, which carries only annotation ids, can be applied; the task → line map;
  the episodes of the project and where their features are; the model version and the labels it
  was fitted on.
- ``models/<version>/``: the fitted `SpeakerGrouper` (its own JSON/npz files).
- ``placeholders.json``: the stable numbers of the numbered speakers, "Speaker N"
  (`SpeakerNumbers.to_json`; the file keeps its first name so that existing state loads).
- ``proposals.json``: the latest proposal per line, so the operation log can tell what an
  annotator was shown, across restarts.
- ``operations.json``: the operation log (`ml_backend.operation_log`).
- ``labels.journal``: label changes since the last start, appended and fsynced before a webhook
  is acknowledged (`ml_backend.label_journal`); replayed onto ``state.json`` when read, and
  folded into it on start.

Every file is written atomically, and concurrent writers are group-committed: a thread that
finds a newer snapshot already written returns at once, so a burst of 200 webhooks costs a
handful of writes while each one still returns only after its change is on disk. The model
version changes only after the model it names is saved. If ``MODEL_DIR`` is lost, the labels
can be rebuilt from Label Studio's annotations (`rebuild_from_annotations`).
"""

from __future__ import annotations

import copy
import json
import logging
import secrets
import shutil
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from foundation.atomic import atomic_write_text
from foundation.layout import tasks_path
from label_config import UNKNOWN_CHOICE, flags_from_annotation, speaker_from_annotation
from ml_backend.label_journal import JOURNAL_FILE, LabelJournal
from ml_backend.label_journal import apply as apply_record

logger = logging.getLogger(__name__)

FORMAT_NAME = "speaker-grouping-project"
FORMAT_VERSION = 1
STATE_FILE = "state.json"
MODELS_DIR = "models"
SPEAKER_NUMBERS_FILE = "placeholders.json"
PROPOSALS_FILE = "proposals.json"


class StateError(ValueError):
    """A state file is unreadable or not ours (one line naming the file)."""


class DurableJson:
    """A JSON document held in memory and written atomically, with group commit.

    Mutate ``data`` only inside ``with doc.lock:``; then call `commit`, which returns once a
    snapshot at least as new as the caller's change is on disk.
    """

    def __init__(self, path: Path, default: dict[str, Any]) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._generation = 0
        self._written = 0
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise StateError(f"{self.path}: unreadable ({error})") from None
            if not isinstance(self.data, dict):
                raise StateError(f"{self.path}: expected a JSON object")
            for key, value in default.items():
                self.data.setdefault(key, copy.deepcopy(value))
        else:
            self.data = copy.deepcopy(default)

    def commit(self) -> None:
        with self.lock:
            self._generation += 1
            mine = self._generation
        with self._write_lock:
            if self._written >= mine:
                return  # another thread wrote a snapshot that includes this change
            with self.lock:
                text = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))
                generation = self._generation
            atomic_write_text(self.path, text + "\n")
            self._written = generation


def _default_state(project: int) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "project": project,
        "project_stamp": None,
        "instance": secrets.token_hex(4),
        "model_version": None,
        "version_number": 0,
        "fitted_labels": {},
        "episodes": {},
        "tasks": {},
        "annotations": {},
    }


class ProjectState:
    """The durable state of one project. Thread-safe; every mutator commits before returning."""

    def __init__(self, folder: Path, project: int) -> None:
        # The folder is created by the first write, not here: opening a project for a request
        # that is then refused must leave nothing behind.
        self.folder = Path(folder)
        self.project = int(project)
        self._doc = DurableJson(self.folder / STATE_FILE, _default_state(self.project))
        data = self._doc.data
        if data.get("format") != FORMAT_NAME or data.get("version") != FORMAT_VERSION:
            raise StateError(
                f"{self._doc.path}: not a speaker-grouping project state of version "
                f"{FORMAT_VERSION}"
            )
        self._proposals = DurableJson(self.folder / PROPOSALS_FILE, {"lines": {}})
        self._journal = LabelJournal(self.folder / JOURNAL_FILE)
        self._replayed = 0
        for record in self._journal.records():
            apply_record(record, self._doc.data["annotations"], self._doc.data["tasks"])
            self._replayed += 1
        if self._repair_episodes():
            self._doc.commit()

    def compact_journal(self) -> int:
        """Write the replayed journal into ``state.json`` and empty it; returns the records.

        Only the process that owns the project calls this (on start): a reader that compacted
        while the server appends could lose a record.
        """
        replayed, self._replayed = self._replayed, 0
        if replayed:
            self._doc.commit()
            self._journal.clear()
        return replayed

    @classmethod
    def open(cls, model_dir: Path, project: int) -> ProjectState:
        return cls(Path(model_dir) / str(int(project)), project)

    @property
    def lock(self) -> threading.RLock:
        return self._doc.lock

    def commit(self) -> None:
        self._doc.commit()

    # ------------------------------------------------------------------ identity

    @property
    def stamp(self) -> int | None:
        """Label Studio's project creation stamp, once a request has told it.

        Label Studio ids restart at 1 in a new database, so ``12`` alone cannot tell a project
        from an older one that had the same id; ``/setup`` and ``/predict`` send ``12.<stamp>``.
        """
        with self.lock:
            known = self._doc.data.get("project_stamp")
        return None if known is None else int(known)

    def check_stamp(self, stamp: int | None) -> bool:
        """False when ``stamp`` names another project than the one this state belongs to."""
        known = self.stamp
        return stamp is None or known is None or known == int(stamp)

    def record_stamp(self, stamp: int | None) -> None:
        """Remember the stamp of the first request that succeeded (never overwrites one)."""
        if stamp is None:
            return
        with self.lock:
            if self._doc.data.get("project_stamp") is not None:
                return
            self._doc.data["project_stamp"] = int(stamp)
        self._doc.commit()

    # ------------------------------------------------------------------ model version

    @property
    def model_version(self) -> str | None:
        with self.lock:
            return self._doc.data.get("model_version")

    @property
    def instance(self) -> str:
        """Random per state folder: a rebuilt MODEL_DIR never reuses an old version's name."""
        with self.lock:
            return str(self._doc.data.get("instance") or "")

    @property
    def version_number(self) -> int:
        with self.lock:
            return int(self._doc.data.get("version_number") or 0)

    def model_folder(self, version: str | None = None) -> Path | None:
        version = version or self.model_version
        return None if version is None else self.folder / MODELS_DIR / version

    def new_model_folder(self, version: str) -> Path:
        folder = self.folder / MODELS_DIR / version
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def set_model_version(self, version: str, number: int, fitted: Mapping[str, str]) -> None:
        """Point at a saved model; older model folders are removed after the switch is on disk."""
        with self.lock:
            self._doc.data["model_version"] = version
            self._doc.data["version_number"] = int(number)
            self._doc.data["fitted_labels"] = dict(fitted)
        self._doc.commit()
        models = self.folder / MODELS_DIR
        for old in models.iterdir() if models.is_dir() else ():
            if old.name != version:
                shutil.rmtree(old, ignore_errors=True)

    @property
    def fitted_labels(self) -> dict[str, str]:
        with self.lock:
            return dict(self._doc.data.get("fitted_labels") or {})

    # ------------------------------------------------------------------ episodes and tasks

    def episodes(self) -> dict[str, dict[str, Any]]:
        """episode id -> {"folder": path with tasks.json + features.npz, "source": ...}."""
        with self.lock:
            return copy.deepcopy(self._doc.data["episodes"])

    def add_episodes(self, folders: Mapping[str, Path], source: str = "import") -> bool:
        """Register episode folders; a folder already registered under another id is skipped.

        One folder under two ids would load its lines twice ("the same line id appears twice"),
        failing every later grouping of the project.
        """
        changed = False
        with self.lock:
            episodes = self._doc.data["episodes"]
            for episode, folder in folders.items():
                entry = {"folder": str(folder), "source": source}
                taken = {
                    _folder_key(e["folder"]) for name, e in episodes.items() if name != episode
                }
                if _folder_key(str(folder)) in taken:
                    logger.warning(
                        "project %d: %s is already registered under another episode id; "
                        "not registered again as %r",
                        self.project,
                        folder,
                        episode,
                    )
                    continue
                if episodes.get(episode) != entry:
                    episodes[episode] = entry
                    changed = True
        if changed:
            self._doc.commit()
        return changed

    def _repair_episodes(self) -> bool:
        """Drop duplicate registrations of one folder left by older versions; True if changed.

        The registration kept is the one whose id the folder's own ``tasks.json`` uses.
        """
        episodes = self._doc.data.get("episodes")
        if not isinstance(episodes, dict):
            self._doc.data["episodes"] = {}
            return True
        by_folder: dict[str, list[str]] = {}
        for name, entry in episodes.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("folder"), str):
                by_folder.setdefault("", []).append(name)
                continue
            by_folder.setdefault(_folder_key(entry["folder"]), []).append(name)
        dropped = list(by_folder.pop("", []))
        for folder, names in by_folder.items():
            if len(names) < 2:
                continue
            own = episode_id_in(Path(folder))
            keep = own if own in names else sorted(names)[0]
            dropped.extend(name for name in names if name != keep)
        for name in dropped:
            episodes.pop(name, None)
        if dropped:
            logger.warning("project %d: repaired episode registrations %s", self.project, dropped)
        return bool(dropped)

    def remember_tasks(self, task_lines: Mapping[int, str]) -> None:
        changed = False
        with self.lock:
            tasks = self._doc.data["tasks"]
            for task_id, line_id in task_lines.items():
                if tasks.get(str(task_id)) != line_id:
                    tasks[str(task_id)] = line_id
                    changed = True
        if changed:
            self._doc.commit()

    def replace_tasks(self, task_lines: Mapping[int, str]) -> None:
        """The project's full task map, as listed from Label Studio (deleted tasks drop out)."""
        with self.lock:
            self._doc.data["tasks"] = {str(int(k)): v for k, v in task_lines.items()}
        self._doc.commit()

    def tasks(self) -> dict[int, str]:
        with self.lock:
            return {int(k): v for k, v in self._doc.data["tasks"].items()}

    def line_of_task(self, task_id: int) -> str | None:
        with self.lock:
            return self._doc.data["tasks"].get(str(task_id))

    # ------------------------------------------------------------------ labels

    def record_annotation(
        self,
        annotation: Mapping[str, Any],
        *,
        task_id: int,
        line_id: str,
        commit: bool = True,
    ) -> dict[str, Any]:
        """Store one submitted annotation; returns the stored entry (with ``speaker``)."""
        entry = annotation_entry(annotation, task_id=task_id, line_id=line_id)
        self.store_annotations({int(annotation["id"]): entry}, commit=commit)
        return dict(entry)

    def store_annotations(
        self, entries: Mapping[int, Mapping[str, Any]], *, commit: bool = True
    ) -> None:
        """Store entries made by `annotation_entry`, all in one record (all or nothing).

        With ``commit``, returns once the change is in the fsynced label journal: a webhook is
        acknowledged only after that (`ml_backend.label_journal`).
        """
        if not entries:
            return
        put = {str(int(key)): dict(entry) for key, entry in entries.items()}
        with self.lock:
            for key, entry in put.items():
                self._doc.data["annotations"][key] = entry
                self._doc.data["tasks"][str(int(entry["task"]))] = entry["line_id"]
            if commit:
                self._journal.append({"put": put})

    def forget_annotations(self, annotation_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Drop annotations (deleted or skipped); returns the entries that were known."""
        removed, keys = [], []
        with self.lock:
            for annotation_id in annotation_ids:
                entry = self._doc.data["annotations"].pop(str(int(annotation_id)), None)
                if entry is not None:
                    removed.append(entry)
                    keys.append(int(annotation_id))
            if keys:
                self._journal.append({"del": keys})
        return removed

    def annotation(self, annotation_id: int) -> dict[str, Any] | None:
        with self.lock:
            entry = self._doc.data["annotations"].get(str(int(annotation_id)))
            return dict(entry) if entry is not None else None

    def annotation_ids(self) -> set[int]:
        with self.lock:
            return {int(key) for key in self._doc.data["annotations"]}

    def labels(self) -> dict[str, str]:
        """line id -> speaker: each line's most recent annotation decides (None = no label)."""
        latest: dict[str, tuple[str, int, str | None]] = {}
        with self.lock:
            for key, entry in self._doc.data["annotations"].items():
                rank = (entry.get("updated") or "", int(key))
                known = latest.get(entry["line_id"])
                if known is None or rank > known[:2]:
                    latest[entry["line_id"]] = (*rank, entry.get("speaker"))
        return {line_id: speaker for line_id, (_, _, speaker) in latest.items() if speaker}

    # ------------------------------------------------------------------ speaker numbers, proposals

    def load_speaker_numbers(self) -> dict[str, Any] | None:
        path = self.folder / SPEAKER_NUMBERS_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            logger.warning("%s unreadable (%s); speaker numbers start again", path, error)
            return None

    def save_speaker_numbers(self, data: Mapping[str, Any]) -> None:
        atomic_write_text(
            self.folder / SPEAKER_NUMBERS_FILE, json.dumps(data, ensure_ascii=False) + "\n"
        )

    def save_proposals(
        self, version: str, proposals: Mapping[str, tuple[str | None, float]]
    ) -> None:
        with self._proposals.lock:
            self._proposals.data["version"] = version
            self._proposals.data["lines"] = {
                line_id: [speaker, float(score)] for line_id, (speaker, score) in proposals.items()
            }
        self._proposals.commit()

    def proposal(self, line_id: str) -> tuple[str | None, float] | None:
        with self._proposals.lock:
            entry = self._proposals.data["lines"].get(line_id)
        return None if entry is None else (entry[0], float(entry[1]))

    def shown_proposals(self) -> dict[str, tuple[str | None, float]]:
        """line id -> (choice, score) of the proposals last shown (what a refit may change)."""
        with self._proposals.lock:
            lines = dict(self._proposals.data["lines"])
        return {line_id: (entry[0], float(entry[1])) for line_id, entry in lines.items()}


def annotation_entry(
    annotation: Mapping[str, Any], *, task_id: int, line_id: str
) -> dict[str, Any]:
    """What is stored of one annotation; ValueError naming it when its result is malformed.

    The speaker is read with `speaker_from_annotation` (a typed new name wins); "Unknown", and
    lines flagged as two speakers or not speech, carry no speaker label. Pure: storing is
    `ProjectState.store_annotations`, so a request can check every annotation before it stores any.
    """
    annotation_id = annotation.get("id")
    result = annotation.get("result") or []
    if not isinstance(result, list):
        raise ValueError(f"annotation {annotation_id}: result is not a list")
    for position, region in enumerate(result):
        if not isinstance(region, Mapping):
            raise ValueError(f"annotation {annotation_id}: result[{position}] is not an object")
        value = region.get("value", {})
        if not isinstance(value, Mapping):
            raise ValueError(
                f"annotation {annotation_id}: result[{position}].value is not an object"
            )
        for key in ("choices", "text"):
            items = value.get(key)
            if items is not None and (
                not isinstance(items, list) or not all(isinstance(i, str) for i in items)
            ):
                raise ValueError(
                    f"annotation {annotation_id}: result[{position}].value.{key} "
                    "is not a list of strings"
                )
    speaker = speaker_from_annotation(result)
    flags = flags_from_annotation(result)
    if speaker == UNKNOWN_CHOICE or flags:
        speaker = None
    updated = annotation.get("updated_at") or annotation.get("created_at") or ""
    return {
        "task": int(task_id),
        "line_id": line_id,
        "speaker": speaker,
        "flags": flags,
        "annotator": _annotator(annotation.get("completed_by"))[:200],
        "updated": str(updated)[:64],
    }


def _folder_key(folder: str) -> str:
    try:
        return str(Path(folder).resolve())
    except (OSError, RuntimeError, ValueError):
        return folder


def episode_id_in(folder: Path) -> str | None:
    """The episode id an imported folder's ``tasks.json`` gives its lines, if readable."""
    try:
        tasks = json.loads(tasks_path(folder).read_text(encoding="utf-8"))
        episode = tasks[0]["data"]["episode"]
    except (OSError, ValueError, LookupError, TypeError):
        return None
    return episode if isinstance(episode, str) else None


def _newer(candidate: str, known: str) -> bool:
    """Whether timestamp ``candidate`` is later than ``known`` (ISO 8601; text as a fallback)."""
    try:
        return datetime.fromisoformat(candidate) > datetime.fromisoformat(known)
    except (TypeError, ValueError):
        return candidate > known


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, Mapping):
        for key in ("email", "username", "id"):
            if completed_by.get(key):
                return str(completed_by[key])
        return "unknown"
    return str(completed_by) if completed_by is not None else "unknown"


def rebuild_from_annotations(
    state: ProjectState,
    tasks: Iterable[Mapping[str, Any]],
    *,
    known_before: set[int] | None = None,
) -> tuple[int, int]:
    """Make the stored annotations match Label Studio's (tasks with their annotations).

    Catches what fire-once webhooks lost, and rebuilds a lost ``MODEL_DIR``. Returns the number
    of annotations recorded and the number forgotten because Label Studio no longer has them.

    known_before : the annotation ids stored when the listing of ``tasks`` began. Only those
        may be forgotten: a webhook acknowledged while the listing ran is newer than the
        listing, so its absence from it says nothing. None: every stored id.
    """
    if known_before is None:
        known_before = state.annotation_ids()
    seen: set[int] = set()
    entries: dict[int, dict[str, Any]] = {}
    for task in tasks:
        data = task.get("data") or {}
        line_id = data.get("line_id")
        if not isinstance(line_id, str):
            continue
        for annotation in task.get("annotations") or []:
            if not isinstance(annotation, Mapping):
                continue
            if annotation.get("was_cancelled") or annotation.get("id") is None:
                continue
            seen.add(int(annotation["id"]))
            known = state.annotation(int(annotation["id"]))
            entry_updated = str(annotation.get("updated_at") or annotation.get("created_at") or "")
            if known is not None and not _newer(entry_updated, known["updated"]):
                continue  # ours is as new or newer (a webhook that came after the listing)
            try:
                entry = annotation_entry(annotation, task_id=int(task["id"]), line_id=line_id)
            except (TypeError, ValueError, KeyError) as error:
                logger.warning("project %d: annotation skipped (%s)", state.project, error)
                continue
            entries[int(annotation["id"])] = entry
    # One journal record, like a webhook's: every annotation change goes through the journal,
    # so replaying it onto any later state.json can never bring back an older entry.
    state.store_annotations(entries)
    recorded = len(entries)
    stale = (state.annotation_ids() & known_before) - seen
    forgotten = len(state.forget_annotations(stale))
    return recorded, forgotten
