"""Read who speaks each line out of a Label Studio project, grouped by episode.

The project is read through Label Studio's export API (the JSON export of every task with its
annotations and predictions), so what is exported is exactly what Label Studio holds. Per task:

- the speaker is that of the latest annotation that was not cancelled (a skip arrives as a
  cancelled annotation holding the pre-filled prediction, so it names nobody); a typed
  ``new_speaker`` wins over the drop-down, and the choice "Unknown" names nobody
  (:func:`label_config.speaker_from_annotation`);
- a line that annotation flags "Two speakers" or "Not speech" names nobody either: it is not one
  speaker's speech, so it must not train a voice, but it stays in subtitles and the CSV, with
  its flags;
- with ``include_predictions``, a line with no usable annotation takes the speaker of its latest
  prediction, and ``SpeakerLine.source`` says which of the two a speaker came from.

Clips and the original subtitle file are found on disk: media URLs ``/data/local-files/?d=P``
resolve to ``<document_root>/P``; with ``media_root`` (the folder holding the import folders,
``<media_root>/<episode>/audio/0001.wav``) any media URL resolves by the part that follows the
episode id. A URL never resolves outside the folder it is resolved under.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from exporters import SOURCE_ANNOTATION, SOURCE_PREDICTION, SpeakerLine
from foundation.label_studio import LabelStudioClient, LabelStudioError
from foundation.layout import (
    AUDIO_DIR,
    file_under_root,
    media_url_path,
    report_path,
    split_line_id,
)
from label_config import (
    FLAG_NOT_SPEECH,
    FLAG_TWO_SPEAKERS,
    UNKNOWN_CHOICE,
    flags_from_annotation,
    speaker_from_annotation,
)

__all__ = [
    "SKIPPED_FLAGS",
    "EpisodeExport",
    "ExportedTask",
    "ProjectExport",
    "fetch_project_tasks",
    "lines_from_tasks",
    "media_path",
    "original_subtitles",
    "read_project",
]

logger = logging.getLogger(__name__)

SKIPPED_FLAGS = frozenset({FLAG_TWO_SPEAKERS, FLAG_NOT_SPEECH})
EXPORT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ExportedTask:
    task_id: int
    line: SpeakerLine
    audio_url: str | None


@dataclass(frozen=True)
class EpisodeExport:
    episode: str
    lines: list[SpeakerLine]  # in index order; ``clip`` set where the clip was found
    folder: Path | None  # the import folder, when found
    subtitles: Path | None  # the subtitle file the episode was imported from, when found


@dataclass(frozen=True)
class ProjectExport:
    project_id: int
    title: str
    episodes: dict[str, EpisodeExport] = field(default_factory=dict)

    @property
    def lines(self) -> list[SpeakerLine]:
        return [line for episode in self.episodes.values() for line in episode.lines]

    def count(self, source: str) -> int:
        return sum(1 for line in self.lines if line.speaker and line.source == source)

    @property
    def flagged(self) -> int:
        return sum(1 for line in self.lines if SKIPPED_FLAGS.intersection(line.flags))


def read_project(
    *,
    url: str,
    api_key: str,
    project: str | int,
    include_predictions: bool = False,
    media_root: Path | None = None,
    document_root: Path | None = None,
) -> ProjectExport:
    """Fetch the project's tasks and turn them into lines per episode, clips resolved on disk."""
    project_id, title, tasks = fetch_project_tasks(url=url, api_key=api_key, project=project)
    exported = lines_from_tasks(tasks, include_predictions=include_predictions)
    by_episode: dict[str, list[ExportedTask]] = {}
    for task in exported:
        by_episode.setdefault(task.line.episode, []).append(task)
    episodes: dict[str, EpisodeExport] = {}
    for episode in sorted(by_episode):
        tasks_of_episode = sorted(by_episode[episode], key=lambda task: task.line.index)
        lines: list[SpeakerLine] = []
        folder: Path | None = None
        for task in tasks_of_episode:
            clip = media_path(
                task.audio_url,
                episode=episode,
                media_root=media_root,
                document_root=document_root,
            )
            if clip is not None and folder is None and clip.parent.name == AUDIO_DIR:
                folder = clip.parent.parent
            lines.append(replace(task.line, clip=clip))
        if folder is None and media_root is not None:
            folder = episode_folder_under(Path(media_root), episode)
        subtitles = original_subtitles(folder, media_root=media_root) if folder else None
        episodes[episode] = EpisodeExport(episode, lines, folder, subtitles)
    return ProjectExport(project_id, title, episodes)


# --------------------------------------------------------------------------- Label Studio


def fetch_project_tasks(
    *, url: str, api_key: str, project: str | int, timeout: float = EXPORT_TIMEOUT_S
) -> tuple[int, str, list[dict[str, Any]]]:
    """(project id, title, every task of a JSON export snapshot, annotated or not).

    A snapshot export (``POST /api/projects/{id}/exports/``), not the deprecated "easy export",
    because only a snapshot carries the predictions' results rather than their ids; the snapshot
    is deleted once downloaded, so exports do not pile up in the project's Export page.
    ``project`` is an id (an int, or a string of digits naming an existing id) or an exact title.
    Raises `foundation.label_studio.LabelStudioError` with one line when Label Studio refuses or
    is away.
    """
    with LabelStudioClient(url, api_key) as client:
        project_id, title = _find_project(client, project)
        snapshot = client.create_export(
            project_id,
            title="speaker-grouping export",
            task_filter_options={"only_with_annotations": False},
            annotation_filter_options={"usual": True, "ground_truth": True, "skipped": True},
            serialization_options={"predictions": {"only_id": False}},
        )
        try:
            # Without Redis, Label Studio builds the snapshot inside the request; with it, later.
            deadline = time.monotonic() + timeout
            while snapshot.get("status") not in ("completed", "failed"):
                if time.monotonic() > deadline:
                    raise LabelStudioError(
                        f"Label Studio did not finish exporting project {project_id} "
                        f"in {timeout:.0f} s (export {snapshot['id']} is {snapshot.get('status')})"
                    )
                time.sleep(0.5)
                snapshot = client.export(project_id, snapshot["id"])
            if snapshot["status"] == "failed":
                raise LabelStudioError(
                    f"Label Studio failed to export project {project_id} (export {snapshot['id']})"
                )
            payload = client.download_export(project_id, snapshot["id"], export_type="JSON")
        finally:
            _delete_snapshot(client, project_id, snapshot["id"])
    try:
        tasks = json.loads(payload)
    except ValueError as error:
        raise ValueError(
            f"Label Studio's export of project {project_id} is not JSON: {error}"
        ) from None
    if not isinstance(tasks, list):
        raise ValueError(f"Label Studio's export of project {project_id} is not a list of tasks")
    logger.info("project %r (id %d): %d tasks exported", title, project_id, len(tasks))
    return project_id, title, tasks


def _delete_snapshot(client: LabelStudioClient, project_id: int, export_id: int) -> None:
    try:
        client.delete_export(project_id, export_id)
    except LabelStudioError as error:  # best effort: the export itself succeeded
        logger.info(
            "export snapshot %d of project %d not deleted: %s", export_id, project_id, error
        )


def _find_project(client: LabelStudioClient, project: str | int) -> tuple[int, str]:
    text = str(project).strip()
    if text.isdigit():
        try:
            found = client.project(int(text))
            return int(found["id"]), str(found.get("title") or "")
        except LabelStudioError as error:
            if error.status != 404 or isinstance(project, int):
                raise
    titles = [(int(p["id"]), str(p["title"])) for p in client.projects_titled(text)]
    if not titles:
        raise ValueError(f"Label Studio has no project titled {text!r} (nor with that id)")
    if len(titles) > 1:
        logger.warning("%d projects are titled %r; using the oldest", len(titles), text)
    return titles[0]


# --------------------------------------------------------------------------- tasks → lines


def lines_from_tasks(
    tasks: Iterable[Mapping[str, Any]], *, include_predictions: bool = False
) -> list[ExportedTask]:
    """One `ExportedTask` per task that carries a line (``data.episode`` and ``data.index``);
    other tasks are not ours and are skipped with a log line."""
    exported: list[ExportedTask] = []
    for task in tasks:
        data = task.get("data") or {}
        episode, index = _episode_and_index(data)
        if episode is None or index is None:
            logger.warning("task %s has no line_id/episode/index; not exported", task.get("id"))
            continue
        speaker, source, flags = _speaker_of(task, include_predictions)
        line = SpeakerLine(
            index=index,
            start=_seconds(data.get("start")),
            end=_seconds(data.get("end")),
            text=str(data.get("text") or ""),
            speaker=speaker,
            episode=episode,
            source=source,
            flags=tuple(flags),
            source_line=_int_or_none(data.get("source_line")),
        )
        audio = data.get("audio")
        exported.append(
            ExportedTask(int(task.get("id") or 0), line, audio if isinstance(audio, str) else None)
        )
    return exported


def _speaker_of(task: Mapping[str, Any], include_predictions: bool) -> tuple[str | None, str, list]:
    annotation = _latest(a for a in task.get("annotations") or [] if not a.get("was_cancelled"))
    if annotation is not None:
        result = annotation.get("result") or []
        flags = flags_from_annotation(result)
        if SKIPPED_FLAGS.intersection(flags):
            return None, SOURCE_ANNOTATION, flags
        return _named(speaker_from_annotation(result)), SOURCE_ANNOTATION, flags
    if include_predictions:
        prediction = _latest(task.get("predictions") or [])
        if prediction is not None:
            speaker = _named(speaker_from_annotation(prediction.get("result") or []))
            return speaker, SOURCE_PREDICTION if speaker else "", []
    return None, "", []


def _latest(items: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recently changed item (ISO timestamps of one server compare as text)."""
    candidates = [item for item in items if isinstance(item, Mapping)]
    if not candidates:
        return None
    return max(
        candidates,
        key=lambda item: (
            str(item.get("updated_at") or item.get("created_at") or ""),
            int(item.get("id") or 0),
        ),
    )


def _named(speaker: str | None) -> str | None:
    return None if speaker in (None, UNKNOWN_CHOICE) else speaker


def _episode_and_index(data: Mapping[str, Any]) -> tuple[str | None, int | None]:
    episode = data.get("episode")
    index = _int_or_none(data.get("index"))
    line_id = data.get("line_id")
    if isinstance(line_id, str) and ":" in line_id:
        from_id, number = split_line_id(line_id)
        episode = episode or from_id
        index = index if index is not None else _int_or_none(number)
    return (str(episode) if episode else None), index


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _seconds(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


# --------------------------------------------------------------------------- files on disk


def media_path(
    url: str | None,
    *,
    episode: str,
    media_root: Path | None = None,
    document_root: Path | None = None,
) -> Path | None:
    """The file on disk behind a task's media URL, or None when it is not found.

    ``/data/local-files/?d=P`` is ``<document_root>/P``; with ``media_root``, any URL whose path
    holds the episode id is ``<media_root>/<episode>/<rest>``, and a local-files URL is also
    tried as ``<media_root>/P``. Candidates that escape their root ("..", links) are refused.
    """
    if not url:
        return None
    try:
        relative, local = media_url_path(url)
    except ValueError:
        return None
    parts = [part for part in PurePosixPath(relative).parts if part != "/"]
    candidates: list[tuple[Path, Sequence[str]]] = []
    if local and document_root is not None:
        candidates.append((Path(document_root), parts))
    if media_root is not None:
        if episode in parts:
            at = len(parts) - 1 - parts[::-1].index(episode)
            candidates.append((Path(media_root), parts[at:]))
        if local:
            candidates.append((Path(media_root), parts))
    for root, relative_parts in candidates:
        path = file_under_root(root, relative_parts)
        if path is not None:
            return path
    return None


_SUBTITLE_SUFFIXES = frozenset({".srt", ".ass", ".ssa", ".vtt"})


def original_subtitles(folder: Path, *, media_root: Path | None = None) -> Path | None:
    """The subtitle file an import folder was made from, as its report.json names it.

    The report holds the path given at import time, which may be relative or from another
    machine (a container), so the file's name is also looked for beside the import folder and
    in ``media_root``.
    """
    try:
        report = json.loads(report_path(folder).read_text(encoding="utf-8"))
        recorded = Path(str(report["subtitles"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # report.json is data: a path in it must not make the export read (and rewrite into the
    # .ass) any file on the machine. Beside the import or in media_root anything goes; elsewhere
    # (the video's folder, as the importer records it) only a subtitle file.
    roots = [folder.resolve(), folder.resolve().parent]
    if media_root is not None:
        roots.append(Path(media_root).resolve())
    candidates = [recorded, folder / recorded.name, folder.parent / recorded.name]
    if media_root is not None:
        candidates.append(Path(media_root) / recorded.name)
    for candidate in candidates:
        try:
            resolved = (folder / candidate).resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        inside = any(resolved.is_relative_to(root) for root in roots)
        if resolved.is_file() and (inside or resolved.suffix.lower() in _SUBTITLE_SUFFIXES):
            return resolved
    logger.info("%s: subtitle file %s not found beside the import", folder, recorded)
    return None


def episode_folder_under(media_root: Path, episode: str) -> Path | None:
    """``media_root/<episode>`` when it is a folder strictly inside ``media_root``."""
    if not episode or "\x00" in episode or episode in (".", ".."):
        return None
    root = media_root.resolve()
    try:
        folder = (root / episode).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if folder.parent != root or not folder.is_dir():
        return None  # "../x", "a/b", an absolute id or a symlink out: not an episode folder
    return folder
