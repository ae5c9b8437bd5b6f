"""The Label Studio ML-backend protocol as data: what a request may hold, and its refusals.

Parsing only, no state: `parse_tasks` and `task_problem` for ``/predict``, `CheckedAnnotation`
for webhooks, and the errors the server answers with (400 `MalformedRequest`, 403 `Refused`, 409
`Conflict`, 422 `Unprocessable`). A whole request is checked here before its project is
touched, which is what makes a refused request change no state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from foundation.layout import line_episode, split_line_id
from label_config import UNKNOWN_CHOICE
from ml_backend.media_access import TaskMediaError, safe_episode_name

MAX_TASKS_PER_REQUEST = 20000
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
EVENTS = (*ANNOTATION_EVENTS, "ANNOTATIONS_DELETED", "START_TRAINING")


class MalformedRequest(ValueError):
    """The request itself is wrong (shape, fields): answered 400 with this one line.

    Not werkzeug's ``BadRequest`` (an HTTP exception the server also handles), hence the name."""


class Unprocessable(ValueError):
    """Well-formed, but nothing can be predicted from it (media missing): answered 422."""


class Refused(ValueError):
    """Not allowed by the operator's settings (an untrusted origin, the project cap): 403."""


class Conflict(ValueError):
    """The request names another incarnation of the project (its stamp differs): 409."""


@dataclass(frozen=True)
class ParsedTask:
    task_id: int | None
    line_id: str
    episode: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class CheckedAnnotation:
    """One webhook annotation, checked and ready to store (entry None: a skip)."""

    annotation_id: int
    task_id: int
    line_id: str | None
    entry: dict[str, Any] | None
    data: Mapping[str, Any] | None


def parse_tasks(tasks: Any) -> list[ParsedTask]:
    """Every task of a ``/predict`` body; `MalformedRequest` naming the first malformed one."""
    if not isinstance(tasks, list) or not tasks:
        raise MalformedRequest("tasks must be a non-empty list")
    if len(tasks) > MAX_TASKS_PER_REQUEST:
        raise MalformedRequest(
            f"{len(tasks)} tasks in one request; at most {MAX_TASKS_PER_REQUEST}"
        )
    return [parse_task(task, position) for position, task in enumerate(tasks)]


def parse_task(task: Any, position: int) -> ParsedTask:
    """The fields predict needs; unknown fields are ignored, missing ones named."""
    if not isinstance(task, Mapping):
        raise MalformedRequest(f"tasks[{position}] is not an object")
    data = task.get("data")
    if not isinstance(data, Mapping):
        raise MalformedRequest(f"tasks[{position}] has no data object")
    task_id = task.get("id")
    if task_id is not None and (isinstance(task_id, bool) or not isinstance(task_id, int)):
        raise MalformedRequest(f"tasks[{position}].id is not an integer")
    line_id = data.get("line_id")
    if not isinstance(line_id, str) or ":" not in line_id or len(line_id) > 200:
        raise MalformedRequest(
            f"tasks[{position}] has no data.line_id '<episode>:<index>' "
            "(import the episode with speaker-grouping import)"
        )
    episode = data.get("episode", line_episode(line_id))
    if not isinstance(episode, str):
        raise MalformedRequest(f"tasks[{position}].data.episode is not a string")
    return ParsedTask(task_id, line_id, episode, data)


def task_problem(task: ParsedTask) -> str | None:
    """Why this one task cannot be answered, or None; its neighbours are answered anyway.

    A line id must be ``<episode>:<index>`` of the task's own episode: a task whose
    ``data.episode`` disagrees would register its folder under a second id, and the project's
    lines would then appear twice in every grouping.
    """
    try:
        safe_episode_name(task.episode)
    except TaskMediaError as error:
        return str(error)
    prefix, index = split_line_id(task.line_id)
    if prefix != task.episode:
        return (
            f"line id {task.line_id[:80]!r} is not of its task's episode {task.episode!r}; refused"
        )
    if not (index.isascii() and index.isdigit()) or len(index) > 9:
        return f"line id {task.line_id[:80]!r} does not end in a line number; refused"
    return None


def shown_choice(proposal: Any) -> tuple[str, float]:
    """The choice and score a proposal is shown with: no speaker reads "Unknown"."""
    score = min(max(float(proposal.score), 0.0), 1.0)
    return (proposal.speaker or UNKNOWN_CHOICE), score


def annotation_id_of(annotation: Any) -> int:
    value = annotation.get("id") if isinstance(annotation, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedRequest("annotation without an integer id")
    return value


def task_id_of(annotation: Any) -> int | None:
    task = annotation.get("task") if isinstance(annotation, Mapping) else None
    if isinstance(task, Mapping):
        task = task.get("id")
    return task if isinstance(task, int) and not isinstance(task, bool) else None
