"""What the backend knows about one Label Studio project, on disk under ``MODEL_DIR/<project>/``.

- ``state.json``: every annotation seen (its task, line, speaker, annotator and time), so that
  ``ANNOTATIONS_DELETED``, which carries only annotation ids, can be applied; the task → line map;
  the episodes of the project and where their features are; the model version and the labels it
  was fitted on.
- ``models/<version>/``: the fitted `SpeakerGrouper` (its own JSON/npz files).
- ``placeholders.json``: the stable "Speaker N" ids (`Placeholders.to_json`).
- ``proposals.json``: the latest proposal per line, so the operation log can tell what an
  annotator was shown, across restarts.
- ``operations.json``: the operation log (`ml_backend.operation_log`).

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
from pathlib import Path
from typing import Any

from label_config import PLACEHOLDER_SPEAKER, flags_from_annotation, speaker_from_annotation
from speaker_grouping.atomic import atomic_write_text

logger = logging.getLogger(__name__)

FORMAT_NAME = "speaker-grouping-project"
FORMAT_VERSION = 1
STATE_FILE = "state.json"
MODELS_DIR = "models"
PLACEHOLDERS_FILE = "placeholders.json"
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
        self.folder = Path(folder)
        self.project = int(project)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._doc = DurableJson(self.folder / STATE_FILE, _default_state(self.project))
        data = self._doc.data
        if data.get("format") != FORMAT_NAME or data.get("version") != FORMAT_VERSION:
            raise StateError(
                f"{self._doc.path}: not a speaker-grouping project state of version "
                f"{FORMAT_VERSION}"
            )
        self._proposals = DurableJson(self.folder / PROPOSALS_FILE, {"lines": {}})

    @classmethod
    def open(cls, model_dir: Path, project: int) -> ProjectState:
        return cls(Path(model_dir) / str(int(project)), project)

    @property
    def lock(self) -> threading.RLock:
        return self._doc.lock

    def commit(self) -> None:
        self._doc.commit()

    # ------------------------------------------------------------------ identity

    def check_stamp(self, stamp: int | None) -> bool:
        """Record Label Studio's project creation stamp; False when it names another project.

        Label Studio ids restart at 1 in a new database, so ``12`` alone cannot tell a project
        from an older one that had the same id; ``/setup`` and ``/predict`` send ``12.<stamp>``.
        """
        if stamp is None:
            return True
        with self.lock:
            known = self._doc.data.get("project_stamp")
            if known is not None:
                return int(known) == int(stamp)
            self._doc.data["project_stamp"] = int(stamp)
        self._doc.commit()
        return True

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
        changed = False
        with self.lock:
            for episode, folder in folders.items():
                entry = {"folder": str(folder), "source": source}
                if self._doc.data["episodes"].get(episode) != entry:
                    self._doc.data["episodes"][episode] = entry
                    changed = True
        if changed:
            self._doc.commit()
        return changed

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
        """Store one submitted annotation; returns the stored entry (with ``speaker``).

        The speaker is read with `speaker_from_annotation` (a typed new name wins); "Unknown",
        and lines flagged as two speakers or not speech, carry no speaker label.
        """
        result = annotation.get("result") or []
        if not isinstance(result, list):
            raise ValueError(f"annotation {annotation.get('id')}: result is not a list")
        speaker = speaker_from_annotation(result)
        flags = flags_from_annotation(result)
        if speaker == PLACEHOLDER_SPEAKER or flags:
            speaker = None
        entry = {
            "task": int(task_id),
            "line_id": line_id,
            "speaker": speaker,
            "flags": flags,
            "annotator": _annotator(annotation.get("completed_by")),
            "updated": str(annotation.get("updated_at") or annotation.get("created_at") or ""),
        }
        with self.lock:
            self._doc.data["annotations"][str(int(annotation["id"]))] = entry
            self._doc.data["tasks"][str(int(task_id))] = line_id
        if commit:
            self._doc.commit()
        return dict(entry)

    def forget_annotations(self, annotation_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Drop annotations (deleted or skipped); returns the entries that were known."""
        removed = []
        with self.lock:
            for annotation_id in annotation_ids:
                entry = self._doc.data["annotations"].pop(str(int(annotation_id)), None)
                if entry is not None:
                    removed.append(entry)
        if removed:
            self._doc.commit()
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

    # ------------------------------------------------------------------ placeholders, proposals

    def load_placeholders(self) -> dict[str, Any] | None:
        path = self.folder / PLACEHOLDERS_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            logger.warning("%s unreadable (%s); placeholder ids start again", path, error)
            return None

    def save_placeholders(self, data: Mapping[str, Any]) -> None:
        atomic_write_text(
            self.folder / PLACEHOLDERS_FILE, json.dumps(data, ensure_ascii=False) + "\n"
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


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, Mapping):
        for key in ("email", "username", "id"):
            if completed_by.get(key):
                return str(completed_by[key])
        return "unknown"
    return str(completed_by) if completed_by is not None else "unknown"


def rebuild_from_annotations(
    state: ProjectState, tasks: Iterable[Mapping[str, Any]]
) -> tuple[int, int]:
    """Make the stored annotations match Label Studio's (tasks with their annotations).

    Catches what fire-once webhooks lost, and rebuilds a lost ``MODEL_DIR``. Returns the number
    of annotations recorded and the number forgotten because Label Studio no longer has them.
    """
    seen: set[int] = set()
    recorded = 0
    for task in tasks:
        data = task.get("data") or {}
        line_id = data.get("line_id")
        if not isinstance(line_id, str):
            continue
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled") or annotation.get("id") is None:
                continue
            seen.add(int(annotation["id"]))
            known = state.annotation(int(annotation["id"]))
            entry_updated = str(annotation.get("updated_at") or annotation.get("created_at") or "")
            if known is not None and known["updated"] == entry_updated:
                continue
            state.record_annotation(
                annotation, task_id=int(task["id"]), line_id=line_id, commit=False
            )
            recorded += 1
    state.commit()
    stale = state.annotation_ids() - seen
    forgotten = len(state.forget_annotations(stale))
    return recorded, forgotten
