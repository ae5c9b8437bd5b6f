"""Pushing refreshed proposals into Label Studio after a refit (docs/architecture.md §7).

Label Studio asks ``/predict`` only for tasks that hold no prediction of the version ``/setup``
reports, never re-asks for a stale one, and sorts by score only when ``project.model_version``
names the predictions' version. So after every refit the backend pushes all proposals itself:

1. append the speakers the predictions use to the config's choices (append-only), because the
   bulk import silently drops a prediction whose choice is not listed;
2. import the predictions in bulk and check the ``created`` count;
3. pin ``project.model_version`` to the new version;
4. delete the project's older versions of ours (other models' predictions are left alone).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from foundation.label_studio import LabelStudioClient, LabelStudioError
from label_config import append_speakers, speakers_in_config

logger = logging.getLogger(__name__)

VERSION_PREFIX = "sg-"
IMPORT_BATCH = 1000


RefreshError = LabelStudioError
"""Label Studio refused or lost part of a push (the client's one error type)."""
LabelStudioApi = LabelStudioClient
"""The client every call goes through (`foundation.label_studio`)."""


@dataclass(frozen=True)
class PushResult:
    model_version: str
    created: int
    expected: int
    appended_speakers: tuple[str, ...]
    deleted_versions: tuple[str, ...]
    seconds: float


def ensure_speakers(
    api: LabelStudioApi,
    project: int,
    names: Sequence[str],
    *,
    project_info: Mapping[str, Any] | None = None,
) -> tuple[str, ...]:
    """Append the names the project's config lacks; returns the names appended.

    project_info : the project as just read from Label Studio, to save a request.
    """
    info = project_info if project_info is not None else api.project(project)
    config = info.get("label_config") or ""
    listed = set(speakers_in_config(config))
    wanted = [name for name in dict.fromkeys(names) if name and name not in listed]
    if not wanted:
        return ()
    api.update_project(project, label_config=append_speakers(config, wanted))
    logger.info("project %d: appended speakers %s to the config", project, wanted)
    return tuple(wanted)


def push_predictions(
    api: LabelStudioApi,
    project: int,
    predictions: Sequence[Mapping[str, Any]],
    *,
    model_version: str,
    project_info: Mapping[str, Any] | None = None,
) -> PushResult:
    """Replace the project's predictions of ours with ``predictions`` of ``model_version``.

    predictions : ``{"task": id, "result": [...], "score": s}`` each.
    Raises `RefreshError` when Label Studio created fewer predictions than sent (a speaker
    missing from the config, a task deleted meanwhile); the version is then not pinned, so
    annotators keep the previous, complete set.
    """
    began = time.perf_counter()
    steps: dict[str, float] = {}
    names = [
        choice
        for prediction in predictions
        for region in prediction["result"]
        for choice in (region.get("value") or {}).get("choices") or []
    ]
    appended = ensure_speakers(api, project, names, project_info=project_info)
    steps["config"] = time.perf_counter() - began
    # A version is pushed again when Label Studio lost the pin (connecting a backend sets the
    # project's version to its title): importing it twice would give each task two copies.
    held = api.model_versions(project).get(model_version, 0)
    if held:
        api.delete_model_version(project, model_version)
    created = _import_all(api, project, predictions, model_version)
    # Label Studio may have fetched this version from /predict itself meanwhile (it fills only
    # tasks without it): then some tasks hold two copies. Once it is done, one clean re-import.
    if api.model_versions(project).get(model_version, 0) > created:
        logger.info(
            "project %d: %s was also fetched by Label Studio; re-importing it once",
            project,
            model_version,
        )
        api.delete_model_version(project, model_version)
        created = _import_all(api, project, predictions, model_version)
    if created < len(predictions):
        raise RefreshError(
            f"project {project}: Label Studio created {created} of {len(predictions)} "
            f"predictions of {model_version}; version not pinned"
        )
    steps["import"] = time.perf_counter() - began - sum(steps.values())
    api.update_project(project, model_version=model_version)
    steps["pin"] = time.perf_counter() - began - sum(steps.values())
    deleted = []
    for version in api.model_versions(project):
        if version != model_version and version.startswith(VERSION_PREFIX):
            api.delete_model_version(project, version)
            deleted.append(version)
    steps["cleanup"] = time.perf_counter() - began - sum(steps.values())
    result = PushResult(
        model_version=model_version,
        created=created,
        expected=len(predictions),
        appended_speakers=appended,
        deleted_versions=tuple(deleted),
        seconds=time.perf_counter() - began,
    )
    logger.info(
        "project %d: pushed %d predictions of %s in %.2f s (%s; deleted %s)",
        project,
        created,
        model_version,
        result.seconds,
        ", ".join(f"{step} {seconds:.2f} s" for step, seconds in steps.items()),
        deleted,
    )
    return result


def _import_all(
    api: LabelStudioApi,
    project: int,
    predictions: Sequence[Mapping[str, Any]],
    model_version: str,
) -> int:
    """Import ``predictions`` as ``model_version`` in batches; how many Label Studio created."""
    created = 0
    for start in range(0, len(predictions), IMPORT_BATCH):
        batch = [
            {**prediction, "model_version": model_version}
            for prediction in predictions[start : start + IMPORT_BATCH]
        ]
        created += api.import_predictions(project, batch)
    return created
