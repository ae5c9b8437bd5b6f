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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.hook import Hook
from foundation.label_studio import LabelStudioClient, LabelStudioError
from foundation.layout import LOCAL_FILES_PATH
from label_config import load_config, speakers_in_config

logger = logging.getLogger(__name__)


IMPORT_BATCH_SIZE = 500
LIST_PAGE_SIZE = 1000
# A regex that matches no file: if someone presses "Sync" on our storage, nothing is imported.
_MATCH_NOTHING = "(?!)"

__all__ = ["LabelStudioError", "PushResult", "push_tasks"]


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
            LOCAL_FILES_PATH,
        )

    with LabelStudioClient(base_url, api_key) as client:
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
        isinstance(data.get(key), str) and data[key].startswith(LOCAL_FILES_PATH)
        for key in ("audio", "image")
    )


def _find_or_create_project(client: LabelStudioClient, title: str, config: str) -> tuple[int, bool]:
    # The API's title filter is a case-insensitive "contains"; only an exact title is ours.
    matches = [int(found["id"]) for found in client.projects_titled(title)]
    if not matches:
        created = client.create_project(title, config)
        logger.info("created Label Studio project %r (id %d)", title, created["id"])
        return int(created["id"]), True
    if len(matches) > 1:
        logger.warning(
            "%d projects are titled %r; using the oldest, id %d", len(matches), title, matches[0]
        )
    project_id = matches[0]
    existing_config = client.project(project_id).get("label_config") or ""
    try:
        speakers_in_config(existing_config)
    except ValueError as error:
        raise ValueError(
            f"Label Studio project {title!r} (id {project_id}) is not a speaker-grouping "
            f"project ({error}); choose another project title"
        ) from None
    return project_id, False


def _ensure_local_storage(client: LabelStudioClient, project_id: int, media_dir: Path) -> bool:
    """Create a local-files storage for ``media_dir`` unless one already covers it."""
    target = os.path.normpath(media_dir)
    for storage in client.local_storages(project_id):
        path = os.path.normpath(storage.get("path") or "/nonexistent-storage-path")
        if target == path or target.startswith(path.rstrip(os.sep) + os.sep):
            return False
    client.create_local_storage(
        project_id,
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


def _line_ids_in_project(client: LabelStudioClient, project_id: int) -> set[str]:
    line_ids: set[str] = set()
    for task in client.tasks(project_id, include="id,data", page_size=LIST_PAGE_SIZE):
        line_id = (task.get("data") or {}).get("line_id")
        if isinstance(line_id, str):
            line_ids.add(line_id)
    return line_ids


def _import(
    client: LabelStudioClient,
    project_id: int,
    tasks: Sequence[dict[str, Any]],
    hook: Hook | None,
) -> int:
    created = 0
    if hook is not None:
        hook("push", completed=0, total=len(tasks))
    for start in range(0, len(tasks), IMPORT_BATCH_SIZE):
        batch = list(tasks[start : start + IMPORT_BATCH_SIZE])
        count = client.import_tasks(project_id, batch)
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
