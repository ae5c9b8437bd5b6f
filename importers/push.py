"""Push one episode's tasks into a Label Studio project, so that re-running an import is safe.

Label Studio itself has no notion of "the same task": importing a file twice gives every line
twice, and annotators then label duplicates. Every task carries a ``line_id``
(``<episode_id>:<index>``), so a push first reads the line ids the project already holds and
imports only the missing ones. Tasks already present are left as they are, annotations included.

Media are served by Label Studio from ``/data/local-files/?d=<path under the document root>``,
and only for folders that some local-files storage of a project points at, so the push also
creates that storage for ``media_dir`` when no storage covers it yet. The storage is never synced:
a sync would turn every clip and frame into a task of its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from foundation.hook import Hook
from label_config import load_config, speakers_in_config

logger = logging.getLogger(__name__)


IMPORT_BATCH_SIZE = 500
LIST_PAGE_SIZE = 1000
# A regex that matches no file: if someone presses "Sync" on our storage, nothing is imported.
_MATCH_NOTHING = "(?!)"
_LOCAL_FILES_PREFIX = "/data/local-files/"


class LabelStudioError(RuntimeError):
    """Label Studio could not be reached, refused our key, or refused a request (one line)."""


@dataclass(frozen=True)
class PushResult:
    project_id: int
    project_created: bool
    storage_created: bool
    tasks_created: int
    tasks_already_present: int


def push_tasks(
    tasks: Sequence[dict[str, Any]],
    *,
    url: str,
    api_key: str,
    project: str,
    label_config: str | None = None,
    document_root: Path | None = None,
    media_dir: Path | None = None,
    hook: Hook | None = None,
) -> PushResult:
    """Import into the project titled ``project`` the tasks whose ``line_id`` it lacks.

    The project is created with ``label_config`` (default: :func:`label_config.load_config`)
    when no project has that exact title; an existing project keeps its own config, because the
    backend may have appended speakers to it. ``media_dir`` is the folder of this episode's
    clips and frames; it must sit strictly inside ``document_root``, Label Studio's
    ``LOCAL_FILES_DOCUMENT_ROOT`` (checked here when given, else by Label Studio).
    """
    base_url = url.rstrip("/")
    line_ids = _line_ids_of(tasks)
    if media_dir is not None:
        media_dir = _checked_media_dir(Path(media_dir), document_root)
    elif any(_uses_local_files(task) for task in tasks):
        logger.warning(
            "tasks use %s URLs but no media_dir was given: Label Studio serves them only "
            "under a local-files storage, which this push will not create",
            _LOCAL_FILES_PREFIX,
        )

    client = LabelStudio(base_url=base_url, api_key=api_key)
    with _translated_errors(base_url, f"project {project!r}"):
        project_id, project_created = _find_or_create_project(
            client, project, label_config if label_config is not None else load_config()
        )
        storage_created = (
            _ensure_local_storage(client, project_id, media_dir) if media_dir is not None else False
        )
        present = _line_ids_in_project(client, project_id)
        missing = [
            task for task, line_id in zip(tasks, line_ids, strict=True) if line_id not in present
        ]
        created = _import(client, project_id, missing, hook)

    result = PushResult(
        project_id=project_id,
        project_created=project_created,
        storage_created=storage_created,
        tasks_created=created,
        tasks_already_present=len(tasks) - len(missing),
    )
    logger.info(
        "project %r (id %d): %d tasks created, %d already present",
        project,
        project_id,
        result.tasks_created,
        result.tasks_already_present,
    )
    return result


def _line_ids_of(tasks: Sequence[dict[str, Any]]) -> list[str]:
    """Each task's ``data.line_id``; a task without one, or a repeated one, is an importer bug."""
    seen: dict[str, int] = {}
    line_ids: list[str] = []
    for position, task in enumerate(tasks):
        data = task.get("data") if isinstance(task, dict) else None
        line_id = data.get("line_id") if isinstance(data, dict) else None
        if not isinstance(line_id, str) or not line_id:
            raise ValueError(f"task {position} has no data.line_id; cannot tell if it was pushed")
        if line_id in seen:
            raise ValueError(f"tasks {seen[line_id]} and {position} share line_id {line_id!r}")
        seen[line_id] = position
        line_ids.append(line_id)
    return line_ids


def _checked_media_dir(media_dir: Path, document_root: Path | None) -> Path:
    media_dir = media_dir.resolve()
    if document_root is None:
        return media_dir
    root = Path(document_root).resolve()
    if root not in media_dir.parents:
        raise ValueError(
            f"media folder {media_dir} is not inside the Label Studio document root {root} "
            "(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT); Label Studio would not serve its files"
        )
    return media_dir


def _uses_local_files(task: dict[str, Any]) -> bool:
    data = task.get("data") or {}
    return any(
        isinstance(data.get(key), str) and data[key].startswith(_LOCAL_FILES_PREFIX)
        for key in ("audio", "image")
    )


def _find_or_create_project(client: LabelStudio, title: str, config: str) -> tuple[int, bool]:
    # The API's title filter is a case-insensitive "contains"; only an exact title is ours.
    matches: list[int] = []
    page = 1
    while True:
        response = client.projects.list(title=title, page=page, page_size=LIST_PAGE_SIZE)
        matches.extend(p.id for p in response.items or [] if p.title == title)
        if not response.items or getattr(response.response, "next", None) is None:
            break
        page += 1
    matches.sort()
    if not matches:
        created = client.projects.create(title=title, label_config=config)
        logger.info("created Label Studio project %r (id %d)", title, created.id)
        return int(created.id), True
    if len(matches) > 1:
        logger.warning(
            "%d projects are titled %r; using the oldest, id %d", len(matches), title, matches[0]
        )
    project_id = matches[0]
    existing_config = client.projects.get(id=project_id).label_config or ""
    try:
        speakers_in_config(existing_config)
    except ValueError as error:
        raise ValueError(
            f"Label Studio project {title!r} (id {project_id}) is not a speaker-grouping "
            f"project ({error}); choose another project title"
        ) from None
    return project_id, False


def _ensure_local_storage(client: LabelStudio, project_id: int, media_dir: Path) -> bool:
    """Create a local-files storage for ``media_dir`` unless one already covers it."""
    target = os.path.normpath(media_dir)
    for storage in client.import_storage.local.list(project=project_id):
        path = os.path.normpath(storage.path or "/nonexistent-storage-path")
        if target == path or target.startswith(path.rstrip(os.sep) + os.sep):
            return False
    client.import_storage.local.create(
        project=project_id,
        path=target,
        title=f"speaker-grouping media: {media_dir.name}",
        description="Serves clips and frames of imported tasks. Do not sync: tasks come from "
        "speaker-grouping import.",
        regex_filter=_MATCH_NOTHING,
        use_blob_urls=False,
        recursive_scan=True,
    )
    logger.info("created local-files storage %s for project %d", target, project_id)
    return True


def _line_ids_in_project(client: LabelStudio, project_id: int) -> set[str]:
    # Paged by hand and stopped at the reported total: the SDK's pager learns the end only from a
    # 404 on the page after the last, which Label Studio logs as an error traceback.
    line_ids: set[str] = set()
    seen = 0
    page = 1
    while True:
        response = client.tasks.list(
            project=project_id,
            fields="task_only",
            include="id,data",
            page=page,
            page_size=LIST_PAGE_SIZE,
        )
        items = response.items or []
        for task in items:
            line_id = (task.data or {}).get("line_id")
            if isinstance(line_id, str):
                line_ids.add(line_id)
        seen += len(items)
        total = getattr(response.response, "total", None)
        if not items or (total is not None and seen >= total):
            return line_ids
        page += 1


def _import(
    client: LabelStudio, project_id: int, tasks: Sequence[dict[str, Any]], hook: Hook | None
) -> int:
    created = 0
    if hook is not None:
        hook("push", completed=0, total=len(tasks))
    for start in range(0, len(tasks), IMPORT_BATCH_SIZE):
        batch = list(tasks[start : start + IMPORT_BATCH_SIZE])
        response = client.projects.import_tasks(id=project_id, request=batch)
        count = response.task_count
        if count is None:
            raise LabelStudioError(
                f"Label Studio queued the import of project {project_id} instead of importing it; "
                "only the Community edition's synchronous import is supported"
            )
        if count != len(batch):
            logger.warning("Label Studio created %d of %d tasks in a batch", count, len(batch))
        created += int(count)
        if hook is not None:
            hook("push", completed=start + len(batch), total=len(tasks))
    return created


@contextmanager
def _translated_errors(url: str, subject: str) -> Iterator[None]:
    """Turn the SDK's transport and HTTP errors into one line a user can act on."""
    try:
        yield
    except httpx.TransportError as error:
        raise LabelStudioError(
            f"Label Studio is not reachable at {url} ({type(error).__name__}: {error})"
        ) from None
    except ApiError as error:
        if error.status_code in (401, 403):
            raise LabelStudioError(
                f"Label Studio at {url} rejected the API key (HTTP {error.status_code}); "
                "use the token from its Account & Settings page"
            ) from None
        raise LabelStudioError(
            f"Label Studio at {url} refused a request for {subject} "
            f"(HTTP {error.status_code}): {_error_detail(error.body)}"
        ) from None


def _error_detail(body: Any) -> str:
    if isinstance(body, dict):
        detail = body.get("validation_errors") or body.get("detail") or body
        return " ".join(str(detail).split())[:500]
    return " ".join(str(body).split())[:500]
