"""The embedded-default main job: Label Studio and our backend, with every line proposed.

On 127.0.0.1 it starts a local Label Studio (SQLite) and our ML backend, imports the bundled
sample episode with its features, connects the backend to the project, has Label Studio
retrieve a prediction for every task, and adds a "Doubt first" view sorted by score, which is
where an annotator starts.

Everything lives under one data folder (default ``demo-data/``), so a second run reuses the
migrated database (seconds instead of tens of seconds), the same login and the backend's state,
and re-importing the sample adds no duplicate tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from importers.pipeline import ImportResult
from importers.push import PushResult, push_tasks
from speaker_grouping.local_backend import LocalBackend
from speaker_grouping.local_label_studio import LocalLabelStudio

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_EPISODE = REPO_ROOT / "bench" / "episodes" / "sample" / "episode.mp4"
DEMO_PROJECT = "Speaker Grouping demo"
BACKEND_TITLE = "speaker-grouping"
DOUBT_VIEW = "Doubt first"
START_TIMEOUT_S = 600.0
"""A fresh data folder means minutes of database migrations on a busy 2-core machine."""
RETRIEVE_TIMEOUT_S = 600.0
"""Label Studio asks the backend for every task's prediction inside one request."""


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
    backend: LocalBackend
    imported: ImportResult
    pushed: PushResult

    @property
    def project_url(self) -> str:
        return f"{self.label_studio.url}/projects/{self.pushed.project_id}/data"

    def stop(self) -> None:
        """Stop both servers (the backend first: it may be pushing to Label Studio)."""
        self.backend.stop()
        self.label_studio.stop()


@dataclass(frozen=True)
class PredictionSummary:
    """What the annotator finds on opening the project."""

    tasks: int
    predicted: int
    speakers: dict[str, int]
    """Proposed speaker -> number of lines."""
    doubtful: list[tuple[float, int, str, str]]
    """The lowest-scored lines: (score, index, speaker, text)."""


def start_demo(options: DemoOptions, *, hook: Callable[..., None] | None = None) -> DemoSession:
    """Start both servers, import the episode and connect the backend to its project.

    The caller owns the servers and must call `DemoSession.stop`.
    """
    from ml_backend.features.extractor import FeatureExtractor
    from ml_backend.features.prepare import prepare_episode

    data_dir = options.data_dir.resolve()
    media_root = data_dir / "media"
    media_root.mkdir(parents=True, exist_ok=True)
    extractor = FeatureExtractor.build(None, None)
    try:
        imported = prepare_episode(
            options.episode,
            media_root,
            options.subtitles,
            {"document_root": media_root},
            extractor,
            hook,
            overlap=False,
        ).media
    finally:
        extractor.close()
    label_studio = LocalLabelStudio(
        data_dir=data_dir / "label-studio", document_root=media_root, port=options.port
    )
    _step(hook, "label-studio", 0)
    label_studio.start(timeout=START_TIMEOUT_S)
    _step(hook, "label-studio", 1)
    backend = LocalBackend(
        model_dir=data_dir / "model",
        document_root=media_root,
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
    )
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
        _step(hook, "ml-backend", 0)
        backend.start()
        session = DemoSession(
            label_studio=label_studio, backend=backend, imported=imported, pushed=pushed
        )
        connect_backend(session)
        _step(hook, "ml-backend", 1)
    except BaseException:
        backend.stop()
        label_studio.stop()
        raise
    return session


def connect_backend(session: DemoSession) -> None:
    """Point the project at this run's backend, add the "Doubt first" view, fetch proposals.

    The backend's port changes from run to run, so a connection left by an earlier run is
    updated rather than duplicated.
    """
    from foundation.label_studio import LabelStudioClient, LabelStudioError

    studio = session.label_studio
    project = session.pushed.project_id
    with LabelStudioClient(studio.url, studio.token) as client:
        ours = [ml for ml in client.ml_backends(project) if ml.get("title") == BACKEND_TITLE]
        if ours:
            client.update_ml_backend(
                ours[0]["id"], project=project, url=session.backend.url, is_interactive=False
            )
            for stale in ours[1:]:
                client.delete_ml_backend(stale["id"])
        else:
            client.create_ml_backend(
                project, url=session.backend.url, title=BACKEND_TITLE, is_interactive=False
            )
        views = client.views(project)
        if not any((view.get("data") or {}).get("title") == DOUBT_VIEW for view in views):
            client.create_view(
                project, {"title": DOUBT_VIEW, "ordering": ["tasks:predictions_score"]}
            )
        try:
            client.run_action(
                project,
                "retrieve_tasks_predictions",
                selected={"all": True, "excluded": []},
                timeout=RETRIEVE_TIMEOUT_S,
            )
        except LabelStudioError as error:
            raise LabelStudioError(
                f"Label Studio could not retrieve predictions ({error}); "
                f"backend log: {session.backend.log_path}",
                status=error.status,
            ) from None


def summarise_predictions(session: DemoSession, *, doubtful: int = 5) -> PredictionSummary:
    """Read every task's newest prediction back from Label Studio."""
    from foundation.label_studio import LabelStudioClient

    tasks = predicted = 0
    speakers: dict[str, int] = {}
    scored: list[tuple[float, int, str, str]] = []
    studio = session.label_studio
    with LabelStudioClient(studio.url, studio.token) as client:
        for task in client.tasks(session.pushed.project_id, annotations=True):
            tasks += 1
            newest = _newest_prediction(task.get("predictions") or [])
            if newest is None:
                continue
            predicted += 1
            speaker = _predicted_speaker(newest)
            speakers[speaker] = speakers.get(speaker, 0) + 1
            score = newest.get("score")
            data = task.get("data") or {}
            scored.append(
                (
                    float(score) if score is not None else 0.0,
                    data["index"],
                    speaker,
                    str(data.get("text", "")),
                )
            )
    scored.sort()
    return PredictionSummary(
        tasks=tasks,
        predicted=predicted,
        speakers=dict(sorted(speakers.items(), key=lambda item: -item[1])),
        doubtful=scored[:doubtful],
    )


def _newest_prediction(predictions: list[dict]) -> dict | None:
    as_dicts = [p for p in predictions if isinstance(p, dict)]
    if not as_dicts:
        return None
    return max(as_dicts, key=lambda p: p.get("id") or 0)


def _predicted_speaker(prediction: dict) -> str:
    for region in prediction.get("result") or []:
        choices = (region.get("value") or {}).get("choices")
        if region.get("from_name") == "speaker" and choices:
            return str(choices[0])
    return "?"


def _step(hook: Callable[..., None] | None, name: str, completed: int) -> None:
    if hook is not None:
        hook(name, completed=completed, total=1)


def count_project_tasks(session: DemoSession) -> int:
    """How many tasks of this episode Label Studio holds, read back through its API."""
    from foundation.label_studio import LabelStudioClient

    with LabelStudioClient(session.label_studio.url, session.label_studio.token) as client:
        project = client.project(session.pushed.project_id)
    return int(project.get("task_number") or 0)
