"""The embedded-default main job: a local Label Studio with the bundled sample episode imported.

Everything lives under one data folder (default ``demo-data/``), so a second run reuses the
migrated database (seconds instead of tens of seconds) and the same login, and re-importing the
sample adds no duplicate tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from importers.pipeline import ImportResult, import_episode
from importers.push import PushResult, push_tasks
from speaker_grouping.local_label_studio import LocalLabelStudio

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_EPISODE = REPO_ROOT / "bench" / "episodes" / "sample" / "episode.mp4"
DEMO_PROJECT = "Speaker Grouping demo"
START_TIMEOUT_S = 600.0
"""A fresh data folder means minutes of database migrations on a busy 2-core machine."""


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path = Path("demo-data")
    episode: Path = SAMPLE_EPISODE
    subtitles: Path | None = None
    project: str = DEMO_PROJECT
    port: int | None = None


@dataclass(frozen=True)
class DemoSession:
    label_studio: LocalLabelStudio
    imported: ImportResult
    pushed: PushResult

    @property
    def project_url(self) -> str:
        return f"{self.label_studio.url}/projects/{self.pushed.project_id}/data"


def start_demo(options: DemoOptions, *, hook: Callable[..., None] | None = None) -> DemoSession:
    """Start Label Studio and import the episode; the caller owns (and must stop) the server."""
    data_dir = options.data_dir.resolve()
    media_root = data_dir / "media"
    media_root.mkdir(parents=True, exist_ok=True)
    imported = import_episode(
        options.episode,
        subtitles=options.subtitles,
        out_dir=media_root,
        options={"document_root": media_root},
        hook=hook,
    )
    label_studio = LocalLabelStudio(
        data_dir=data_dir / "label-studio", document_root=media_root, port=options.port
    )
    if hook is not None:
        hook("label-studio", completed=0, total=1)
    label_studio.start(timeout=START_TIMEOUT_S)
    if hook is not None:
        hook("label-studio", completed=1, total=1)
    try:
        pushed = push_tasks(
            imported.tasks,
            url=label_studio.url,
            api_key=label_studio.token,
            project=options.project,
            document_root=media_root,
            media_dir=imported.episode_dir,
            hook=hook,
        )
    except BaseException:
        label_studio.stop()
        raise
    return DemoSession(label_studio=label_studio, imported=imported, pushed=pushed)


def count_project_tasks(session: DemoSession) -> int:
    """How many tasks of this episode Label Studio holds, read back through its API."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=session.label_studio.url, api_key=session.label_studio.token)
    project = client.projects.get(id=session.pushed.project_id)
    return int(project.task_number or 0)
