"""Predict and fit for one Label Studio project, shaped like upstream ``LabelStudioMLBase``.

``predict(tasks)`` groups every line of the tasks' episodes, plus the project's other episodes as
a gallery (characters recur), and answers each task with its line's proposal. ``fit(event,
data)`` records what a webhook says (labels, deletions) durably and at once, and leaves the
refit to one background worker per project, which gathers bursts of events into one refit,
saves the new model, bumps the model version and pushes the refreshed proposals into Label
Studio (`ml_backend.refresh`).

Heavy objects (the grouper, the episode lines, the proposals) are cached per project and per
model version, so a ``/predict`` for one task after the first costs a lookup, not a grouping.

The rest of the backend lives beside it, one job per module: `ml_backend.protocol` (parsing and
refusals), `ml_backend.worker` (the refit thread), `ml_backend.registry` (every project, trust,
recovery on start), `ml_backend.project_state` (what is on disk), `ml_backend.label_studio`
(the one HTTP client).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from label_config import PLACEHOLDER_SPEAKER, speaker_prediction, speakers_in_config
from ml_backend.config import BackendConfig
from ml_backend.media_access import (
    Credentials,
    EpisodeCache,
    MediaError,
    episode_folder,
    safe_episode_name,
)
from ml_backend.operation_log import OperationLog
from ml_backend.project_state import (
    ProjectState,
    annotation_entry,
    episode_id_in,
    rebuild_from_annotations,
)
from ml_backend.protocol import (
    ANNOTATION_EVENTS,
    MAX_TASKS_PER_REQUEST,
    BadRequest,
    CheckedAnnotation,
    ParsedTask,
    Unprocessable,
    annotation_id_of,
    parse_tasks,
    shown_choice,
    task_id_of,
    task_problem,
)
from ml_backend.refresh import (
    VERSION_PREFIX,
    LabelStudioApi,
    RefreshError,
    ensure_speakers,
    push_predictions,
)
from ml_backend.worker import RefitWorker

logger = logging.getLogger(__name__)

INITIAL_VERSION = f"{VERSION_PREFIX}0000-prior"
RECONCILE_EVERY_S = 300.0


def _grouping() -> tuple[Any, Any, Any]:
    """SpeakerGrouper, Placeholders and load_lines, imported on first use (numpy, priors)."""
    from ml_backend.grouping import SpeakerGrouper
    from ml_backend.grouping.lines import load_lines
    from ml_backend.grouping.proposal import Placeholders

    return SpeakerGrouper, Placeholders, load_lines


class SpeakerGroupingModel:
    """One project's model: predictions, labels, refits. Thread-safe."""

    def __init__(
        self,
        project: int,
        *,
        config: BackendConfig,
        state: ProjectState | None = None,
        credentials: Credentials | None = None,
        metrics: Any = None,
    ) -> None:
        self.project = int(project)
        self.config = config
        self.state = state or ProjectState.open(config.model_dir, self.project)
        self.oplog = OperationLog(self.state.folder)
        self.credentials = credentials or Credentials(
            config.label_studio_url, config.label_studio_api_key
        )
        self.metrics = metrics
        self.cache = EpisodeCache(
            self.state.folder / "episodes",
            roots=config.media_roots,
            credentials=self.credentials,
            voice_model=config.voice_model,
            image_model=config.image_model,
        )
        self._compute = threading.RLock()
        self._config_lock = threading.Lock()
        self._grouper: Any = None
        self._grouper_version: str | None = None
        self._lines: Any = None
        self._line_set: set[str] = set()
        self._lines_key: Any = None
        self._proposals: dict[str, Any] = {}
        self._proposals_key: Any = None
        self._snapshot: tuple[Mapping[str, Any], str] | None = None
        self._placeholders: Any = None
        self._proposed_labels: dict[str, str] | None = None
        self._listed_speakers: set[str] = set()
        self._last_reconcile = 0.0
        self.worker = RefitWorker(self, delay=config.refit_delay_s)
        self.last_push: Any = None

    # ------------------------------------------------------------------ protocol

    @property
    def model_version(self) -> str:
        return self.state.model_version or INITIAL_VERSION

    def setup(self) -> str:
        return self.model_version

    def predict(
        self,
        tasks: Sequence[Any],
        context: Any = None,
        *,
        label_config: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        """``{"results": [...], "model_version": v}``, one slot per task in order.

        A task whose media cannot be used gets an empty list (Label Studio then stores no
        prediction for it) and an entry in ``errors``; when no task at all can be answered,
        `Unprocessable` is raised so the caller sees why.
        """
        parsed = parse_tasks(tasks)
        errors: dict[int, str] = {}
        by_episode: dict[str, list[int]] = {}
        for position, task in enumerate(parsed):
            problem = task_problem(task)
            if problem is not None:
                errors[position] = problem
            else:
                by_episode.setdefault(task.episode, []).append(position)
        folders: dict[str, Path] = {}
        for episode, positions in by_episode.items():
            try:
                folder = self._episode_folder(
                    episode, [parsed[p] for p in positions], [tasks[p] for p in positions]
                )
            except MediaError as error:
                for position in positions:
                    errors[position] = str(error)
                continue
            known = _line_ids_of(folder)
            for position in positions:
                if parsed[position].line_id not in known:
                    line_id = parsed[position].line_id[:80]
                    errors[position] = f"line {line_id} is not in episode folder {folder.name}"

            if any(position not in errors for position in positions):
                folders[episode] = folder
        if len(errors) == len(parsed):
            # Refused before anything is stored: a refused request changes no state. Tasks that
            # are malformed themselves make a 400; media that cannot be used, a 422.
            message = "; ".join(dict.fromkeys(errors.values()))
            if not by_episode:
                raise BadRequest(message)
            raise Unprocessable(message)
        self.state.add_episodes(folders)
        self.state.remember_tasks(
            {
                t.task_id: t.line_id
                for p, t in enumerate(parsed)
                if t.task_id is not None and p not in errors
            }
        )
        wanted = {parsed[p].line_id for p in range(len(parsed)) if p not in errors}
        proposals, version = self._snapshot_for(wanted)
        results: list[Any] = []
        for position, task in enumerate(parsed):
            proposal = proposals.get(task.line_id)
            if position in errors:
                results.append([])
            elif proposal is None:
                errors[position] = f"line {task.line_id} is not in its episode's features"
                results.append([])
            else:
                speaker, score = shown_choice(proposal)
                results.append(
                    {
                        "result": speaker_prediction(speaker, score=score),
                        "score": score,
                        "model_version": version,
                    }
                )
        if len(errors) == len(parsed):
            raise Unprocessable("; ".join(dict.fromkeys(errors.values())))
        names = [r["result"][0]["value"]["choices"][0] for r in results if r]
        self._ensure_listed(names, label_config)
        answer: dict[str, Any] = {"results": results, "model_version": version}
        if errors:
            answer["errors"] = [
                {"task": parsed[p].task_id, "line_id": parsed[p].line_id, "error": message}
                for p, message in sorted(errors.items())
            ]
        return answer

    def fit(self, event: str, data: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        """Apply one webhook event now; the refit and the push follow in the background."""
        if event in ANNOTATION_EVENTS:
            annotations = data.get("annotation")
            task_payload = data.get("task")
            if event == "ANNOTATIONS_CREATED":
                if not isinstance(annotations, list) or not annotations:
                    raise BadRequest("ANNOTATIONS_CREATED needs a non-empty annotation list")
                if len(annotations) > MAX_TASKS_PER_REQUEST:
                    raise BadRequest(f"more than {MAX_TASKS_PER_REQUEST} annotations at once")
                if task_payload is None:
                    task_payload = data.get("tasks") or []
                if not isinstance(task_payload, list) or not all(
                    isinstance(t, Mapping) for t in task_payload
                ):
                    raise BadRequest("ANNOTATIONS_CREATED needs a task list of objects")
                tasks_by_id = {t.get("id"): t for t in task_payload}
                pairs = [(a, tasks_by_id.get(task_id_of(a))) for a in annotations]
            else:
                if task_payload is not None and not isinstance(task_payload, Mapping):
                    raise BadRequest(f"{event} needs a task object")
                pairs = [(annotations, task_payload)]
            # Every annotation is checked before any is stored: a bulk event is all or nothing.
            checked = [self._check_annotation(annotation, task) for annotation, task in pairs]
            kinds = self._apply_annotations(checked)
            self.worker.schedule()
            return {"status": "queued", "kinds": kinds, "model_version": self.model_version}
        if event == "ANNOTATIONS_DELETED":
            items = data.get("annotations")
            if not isinstance(items, list):
                raise BadRequest("ANNOTATIONS_DELETED needs an annotations list")
            if len(items) > MAX_TASKS_PER_REQUEST:
                raise BadRequest(f"more than {MAX_TASKS_PER_REQUEST} annotations at once")
            ids = [annotation_id_of(item) for item in items]
            removed = self.state.forget_annotations(ids)
            self.oplog.mark_deleted(ids)
            if removed:
                self.worker.schedule()
            return {"status": "queued" if removed else "ignored", "forgotten": len(removed)}
        if event == "START_TRAINING":
            self.worker.schedule(force=True, reconcile=True)
            return {"status": "queued", "model_version": self.model_version}
        return {"status": "ignored", "action": event}

    # ------------------------------------------------------------------ labels

    def _check_annotation(self, annotation: Any, task: Any) -> CheckedAnnotation:
        """One annotation made ready to store, or `BadRequest`; stores nothing."""
        if not isinstance(annotation, Mapping):
            raise BadRequest("webhook has no annotation object")
        annotation_id = annotation_id_of(annotation)
        task_id = task_id_of(annotation)
        if task_id is None and isinstance(task, Mapping):
            task_id = task.get("id")
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise BadRequest(f"annotation {annotation_id} names no task id")
        if annotation.get("was_cancelled"):
            # A skip arrives as a created annotation carrying the pre-filled result.
            return CheckedAnnotation(annotation_id, task_id, None, None, None)
        data = task.get("data") if isinstance(task, Mapping) else None
        line_id = data.get("line_id") if isinstance(data, Mapping) else None
        if not isinstance(line_id, str):
            line_id = self.state.line_of_task(task_id)
        if not isinstance(line_id, str):
            raise BadRequest(f"annotation {annotation_id}: task {task_id} has no data.line_id")
        episode = data.get("episode", line_id.rpartition(":")[0]) if data is not None else None
        if episode is not None:
            problem = task_problem(ParsedTask(task_id, line_id, str(episode), data or {}))
            if not isinstance(episode, str) or problem is not None:
                raise BadRequest(f"annotation {annotation_id}: {problem or 'bad data.episode'}")
        try:
            entry = annotation_entry(annotation, task_id=task_id, line_id=line_id)
        except (TypeError, ValueError, KeyError) as error:
            raise BadRequest(f"annotation {annotation_id}: {error}") from None
        return CheckedAnnotation(annotation_id, task_id, line_id, entry, data)

    def _apply_annotations(self, checked: Sequence[CheckedAnnotation]) -> list[str]:
        """Store checked annotations in one commit, then log each; returns their kinds."""
        skipped = [c.annotation_id for c in checked if c.entry is None]
        stored = {c.annotation_id: c.entry for c in checked if c.entry is not None}
        for item in checked:
            if item.data is not None:
                self._register_episode_of(item.data)
        before = self.state.labels()
        shown = {c.annotation_id: self.state.proposal(str(c.line_id)) for c in checked}
        if skipped:
            self.state.forget_annotations(skipped)
            self.oplog.mark_deleted(skipped)
        self.state.store_annotations(stored)
        kinds = []
        for item in checked:
            if item.entry is None:
                kinds.append("skipped")
                continue
            line_id, label = str(item.line_id), item.entry["speaker"]
            named_elsewhere = label is not None and any(
                name == label for other, name in before.items() if other != line_id
            )
            seen = shown[item.annotation_id]
            proposed = None if seen is None or seen[0] == PLACEHOLDER_SPEAKER else seen[0]
            kind = self.oplog.record(
                item.annotation_id,
                episode=line_id.rsplit(":", 1)[0],
                annotator=item.entry["annotator"],
                line_id=line_id,
                proposed=proposed,
                label=label,
                named_elsewhere=named_elsewhere,
                score=None if seen is None else seen[1],
            )
            if self.metrics is not None:
                self.metrics.operation(kind)
            kinds.append(kind)
        return kinds

    def backfill_operations(self) -> int:
        """Log the stored annotations the operation log lacks; returns how many.

        A kill between storing a label and logging it (the webhook was never acknowledged, but
        its label is kept) leaves the log one operation short; on start it is judged against
        the proposal stored for its line, which is what the annotator was shown.
        """
        missing = sorted(self.state.annotation_ids() - self.oplog.logged_ids())
        labels = self.state.labels()
        for annotation_id in missing:
            entry = self.state.annotation(annotation_id)
            if entry is None:
                continue
            line_id, label = str(entry["line_id"]), entry.get("speaker")
            shown = self.state.proposal(line_id)
            proposed = None if shown is None or shown[0] == PLACEHOLDER_SPEAKER else shown[0]
            self.oplog.record(
                annotation_id,
                episode=line_id.rsplit(":", 1)[0],
                annotator=str(entry.get("annotator") or "unknown"),
                line_id=line_id,
                proposed=proposed,
                label=label,
                named_elsewhere=label is not None
                and any(name == label for other, name in labels.items() if other != line_id),
            )
        if missing:
            logger.info(
                "project %d: logged %d operations a crash left out", self.project, len(missing)
            )
        return len(missing)

    def _register_episode_of(self, data: Mapping[str, Any]) -> None:
        """A webhook may come before any /predict (a restarted backend): learn the episode."""
        line_id = str(data.get("line_id"))
        episode = data.get("episode", line_id.rsplit(":", 1)[0])
        if not isinstance(episode, str) or episode in self.state.episodes():
            return
        try:
            safe_episode_name(episode)
            folder = episode_folder(data, self.config.media_roots)
        except MediaError as error:
            logger.info("project %d: episode not registered (%s)", self.project, error)
            return
        usable = folder is not None and (folder / "features.npz").is_file()
        if usable and episode_id_in(folder) == episode:
            self.state.add_episodes({episode: folder})

    # ------------------------------------------------------------------ episodes and proposals

    def _episode_folder(
        self, episode: str, parsed: Sequence[ParsedTask], raw: Sequence[Mapping[str, Any]]
    ) -> Path:
        known = self.state.episodes().get(episode)
        if known is not None:
            folder = Path(known["folder"])
            if (folder / "tasks.json").is_file() and (folder / "features.npz").is_file():
                return folder
        folder = episode_folder(parsed[0].data, self.config.media_roots)
        if folder is not None:
            own = episode_id_in(folder)
            if own != episode:
                raise MediaError(
                    f"task of episode {episode!r} points into folder {folder.name}, whose lines "
                    f"are of episode {own!r}; refused"
                )
        if folder is not None and (folder / "features.npz").is_file():
            return folder
        try:
            if folder is not None:
                return self.cache.from_import(folder)
            return self._cached_from_tasks(episode, raw)
        except MediaError:
            raise
        except (OSError, ValueError, RuntimeError) as error:
            # Undecodable clips, a corrupt cache: this episode's media are unusable as given.
            raise MediaError(
                f"episode {episode}: features could not be computed ({error})"
            ) from None

    def _cached_from_tasks(self, episode: str, raw: Sequence[Mapping[str, Any]]) -> Path:
        # Media only over HTTP: the whole episode's tasks come from Label Studio when it can
        # be asked, so the grouping sees every line and not just the ones in this request.
        tasks = list(raw)
        api = self.api()
        if api is not None:
            try:
                tasks = [
                    t
                    for t in api.tasks(self.project)
                    if (t.get("data") or {}).get("episode", "") == episode
                ] or tasks
            except RefreshError as error:
                logger.warning("project %d: listing tasks failed (%s)", self.project, error)
            finally:
                api.close()
        for task in tasks:
            data = task.get("data") or {}
            if not isinstance(data.get("index"), int) or not isinstance(data.get("audio"), str):
                raise MediaError(f"task of line {data.get('line_id')} has no data.index/audio")
        return self.cache.from_tasks(episode, tasks)

    def _folders(self) -> list[Path]:
        folders: dict[Path, None] = {}
        for entry in self.state.episodes().values():
            folder = Path(entry["folder"])
            if (folder / "tasks.json").is_file() and (folder / "features.npz").is_file():
                folders.setdefault(folder.resolve(), None)  # one folder is loaded once
        return list(folders)

    def _load_lines(self, folders: Sequence[Path]) -> Any:
        key = tuple(
            (str(f), (f / "features.npz").stat().st_mtime_ns, (f / "tasks.json").stat().st_mtime_ns)
            for f in folders
        )
        if key != self._lines_key:
            _, _, load_lines = _grouping()
            from ml_backend.grouping.lines import MixedEmbeddersError

            try:
                self._lines = load_lines(folders)
            except MixedEmbeddersError as error:
                # Episodes embedded with another model cannot share a space: group the newest
                # episode's model only, and say so.
                logger.warning(
                    "project %d: %s; grouping the latest model only", self.project, error
                )
                self._lines = load_lines(folders[-1:])
            self._line_set = set(self._lines.line_ids)
            self._lines_key = key
        return self._lines

    def grouper(self) -> Any:
        SpeakerGrouper, _, _ = _grouping()
        version = self.state.model_version
        if self._grouper is None or self._grouper_version != version:
            folder = self.state.model_folder(version)
            if folder is not None and folder.is_dir():
                self._grouper = SpeakerGrouper.load(folder)
            else:
                self._grouper = SpeakerGrouper(**self.config.grouper_kwargs())
            self._grouper_version = version
        return self._grouper

    def _placeholders_object(self) -> Any:
        if self._placeholders is None:
            _, Placeholders, _ = _grouping()
            stored = self.state.load_placeholders()
            self._placeholders = Placeholders.from_json(stored) if stored else Placeholders()
        return self._placeholders

    def _snapshot_for(self, line_ids: set[str]) -> tuple[Mapping[str, Any], str]:
        """(proposals, the version they were made with) covering ``line_ids``.

        Fresh when nothing holds the model. While the worker holds it, a request reads the
        last complete snapshot instead of waiting: an immutable pair, replaced whole, so it is
        never half-updated. But only a snapshot of the version the backend now publishes
        (``/versions``, ``/setup``): once a refit has bumped the version, its proposals are
        what a client that saw the new version must get, so the request waits for them. Lines
        the snapshot lacks (an episode registered just now) wait for fresh proposals too.
        """
        if self._compute.acquire(blocking=False):
            try:
                return self._fresh_snapshot()
            finally:
                self._compute.release()
        snapshot = self._snapshot
        if (
            snapshot is not None
            and snapshot[1] == self.model_version
            and line_ids <= snapshot[0].keys()
        ):
            return snapshot
        with self._compute:
            return self._fresh_snapshot()

    def _fresh_snapshot(self) -> tuple[Mapping[str, Any], str]:
        snapshot = (self.proposals(), self.model_version)
        self._snapshot = snapshot
        return snapshot

    def proposals(self) -> dict[str, Any]:
        """line id -> Proposal for every line of the project's episodes (cached)."""
        with self._compute:
            folders = self._folders()
            if not folders:
                return {}
            lines = self._load_lines(folders)
            labels = {k: v for k, v in self.state.labels().items() if k in self._line_set}
            key = (self.model_version, self._lines_key, _digest(labels))
            if key == self._proposals_key:
                self._snapshot = (self._proposals, self.model_version)
                return self._proposals
            began = time.perf_counter()
            placeholders = self._placeholders_object()
            previous = (
                {k: shown_choice(p) for k, p in self._proposals.items()}
                if self._proposals
                else self.state.shown_proposals()
            )
            grouper = self.grouper()
            proposals = grouper.propose(lines, labels, placeholders, previous=previous)
            self._log_moves(grouper, labels)
            self.state.save_placeholders(placeholders.to_json())
            self._proposals = {p.line_id: p for p in proposals}
            self._proposals_key = key
            self._snapshot = (self._proposals, self.model_version)  # the worker's too
            self.state.save_proposals(
                self.model_version, {p.line_id: shown_choice(p) for p in proposals}
            )
            logger.info(
                "project %d: %d proposals in %.2f s",
                self.project,
                len(proposals),
                time.perf_counter() - began,
            )
            return self._proposals

    def _log_moves(self, grouper: Any, labels: Mapping[str, str]) -> None:
        """Log how many lines the new labels moved (`ml_backend.grouping.stability`)."""
        moves = getattr(grouper, "last_moves_", None)
        before = self._proposed_labels
        if before is None:  # first proposals since start: the labels the saved model knew
            before = dict(self.state.fitted_labels)
        self._proposed_labels = dict(labels)
        if moves is None or before == labels:
            return
        new = {k: v for k, v in labels.items() if before.get(k) != v}
        new.update({k: None for k in before.keys() - labels.keys()})
        self.oplog.record_refit(
            self.model_version,
            labels=new,
            lines_moved=moves.moved,
            from_named=moves.from_named,
            held=moves.held,
            large=moves.large,
        )
        if self.metrics is not None:
            self.metrics.moved(moves.moved, large=moves.large)
        if moves.large:
            logger.warning(
                "project %d: %d new label(s) moved %d lines (%d of them from a known name); "
                "check %s",
                self.project,
                len(new),
                moves.moved,
                moves.from_named,
                ", ".join(sorted(new)[:5]),
            )

    # ------------------------------------------------------------------ refit and push

    def refit(self, *, force: bool = False) -> bool:
        """Fit on the current labels, save, bump the version. False when nothing changed."""
        labels = self.state.labels()
        if not force and labels == self.state.fitted_labels and self.state.model_version:
            return False
        SpeakerGrouper, _, _ = _grouping()
        began = time.perf_counter()
        with self._compute:
            folders = self._folders()
            if not folders:
                logger.info("project %d: labels recorded, no episode to fit on yet", self.project)
                return False
            lines = self._load_lines(folders)
            usable = {k: v for k, v in labels.items() if k in self._line_set}
            grouper = SpeakerGrouper(**self.config.grouper_kwargs()).fit(lines, usable)
            number = self.state.version_number + 1
            digest = _digest({"instance": self.state.instance, **usable})
            version = f"{VERSION_PREFIX}{number:04d}-{digest[:8]}"
            grouper.save(self.state.new_model_folder(version))  # priors included: stands alone
            self.state.set_model_version(version, number, labels)
            self._grouper, self._grouper_version = grouper, version
            self.proposals()
        seconds = time.perf_counter() - began
        if self.metrics is not None:
            self.metrics.fitted(seconds, version)
        logger.info(
            "project %d: fitted %s on %d labels in %.2f s",
            self.project,
            version,
            len(usable),
            seconds,
        )
        return True

    def push(self) -> Any:
        """Push every line's current proposal to Label Studio (see `ml_backend.refresh`)."""
        api = self.api()
        if api is None or not self.config.push_predictions:
            return None
        try:
            proposals = self.proposals()
            version = self.model_version
            info = api.project(self.project)
            known = self.state.tasks()
            # The task list costs a paged call; the stored map is enough while the count holds.
            fresh = info.get("task_number") != len(known)
            tasks = self._list_tasks(api) if fresh else known
            if not proposals or not tasks:
                return None
            with self._config_lock:
                try:
                    result = push_predictions(
                        api,
                        self.project,
                        self._predictions(tasks, proposals),
                        model_version=version,
                        project_info=info,
                    )
                except RefreshError:
                    if fresh:
                        raise
                    # A task was replaced behind our back: list them all and try once more.
                    logger.info("project %d: task map stale; listing tasks again", self.project)
                    tasks = self._list_tasks(api)
                    result = push_predictions(
                        api,
                        self.project,
                        self._predictions(tasks, proposals),
                        model_version=version,
                    )
                self._listed_speakers.update(shown_choice(p)[0] for p in proposals.values())
        finally:
            api.close()
        self.last_push = result
        if self.metrics is not None:
            self.metrics.pushed(result.seconds, result.created)
        return result

    def _list_tasks(self, api: LabelStudioApi) -> dict[int, str]:
        tasks = {}
        for task in api.tasks(self.project):
            line_id = (task.get("data") or {}).get("line_id")
            if isinstance(line_id, str):
                tasks[int(task["id"])] = line_id
        self.state.replace_tasks(tasks)
        return tasks

    @staticmethod
    def _predictions(tasks: Mapping[int, str], proposals: Mapping[str, Any]) -> list[dict]:
        predictions = []
        for task_id, line_id in sorted(tasks.items()):
            proposal = proposals.get(line_id)
            if proposal is not None:
                speaker, score = shown_choice(proposal)
                predictions.append(
                    {
                        "task": task_id,
                        "result": speaker_prediction(speaker, score=score),
                        "score": score,
                    }
                )
        return predictions

    def reconcile(self) -> tuple[int, int]:
        """Match the stored annotations with Label Studio's: lost webhooks, lost MODEL_DIR.

        Also learns the project's episodes from the tasks, so a backend whose MODEL_DIR was
        lost can refit before Label Studio asks for any prediction.
        """
        api = self.api()
        if api is None:
            return (0, 0)
        known_before = self.state.annotation_ids()
        try:
            tasks = list(api.tasks(self.project, annotations=True))
        finally:
            api.close()
        counts = rebuild_from_annotations(self.state, tasks, known_before=known_before)
        firsts: dict[str, Mapping[str, Any]] = {}
        for task in tasks:
            data = task.get("data") or {}
            line_id = data.get("line_id")
            if isinstance(line_id, str):
                firsts.setdefault(str(data.get("episode", line_id.rsplit(":", 1)[0])), data)
        for data in firsts.values():
            self._register_episode_of(data)
        self._last_reconcile = time.monotonic()
        if counts != (0, 0):
            logger.info("project %d: reconciled %d annotations, forgot %d", self.project, *counts)
        return counts

    def background_round(self, *, force: bool, reconcile: bool) -> None:
        """One round of the worker: reconcile when due, refit, push."""
        if reconcile or time.monotonic() - self._last_reconcile > RECONCILE_EVERY_S:
            try:
                self.reconcile()
            except RefreshError as error:
                logger.warning("project %d: reconcile failed: %s", self.project, error)
        changed = self.refit(force=force)
        if changed or force:
            self.push()

    def api(self) -> LabelStudioApi | None:
        if not self.credentials.usable:
            return None
        return LabelStudioApi(str(self.credentials.url), str(self.credentials.api_key))

    def _ensure_listed(self, names: Sequence[str], label_config: str | None) -> None:
        """Names shown in predictions must be choices, or Label Studio drops the prediction."""
        wanted = {n for n in names if n not in self._listed_speakers}
        if not wanted:
            return
        if label_config:
            try:
                listed = set(speakers_in_config(label_config))
            except ValueError as error:
                raise BadRequest(f"label_config: {error}") from None
            self._listed_speakers.update(wanted & listed)
            wanted -= listed
        api = self.api()
        if not wanted or api is None:
            return
        try:
            with self._config_lock:
                ensure_speakers(api, self.project, sorted(wanted))
                self._listed_speakers.update(wanted)
        except RefreshError as error:
            logger.warning("project %d: could not append speakers: %s", self.project, error)
        finally:
            api.close()


def _digest(labels: Mapping[str, str]) -> str:
    text = json.dumps(sorted(labels.items()), ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


_LINE_IDS: dict[tuple[str, int], frozenset[str]] = {}


def _line_ids_of(folder: Path) -> frozenset[str]:
    """Every line id in ``folder/tasks.json`` (cached while the file is unchanged)."""
    path = folder / "tasks.json"
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return frozenset()
    if key not in _LINE_IDS:
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
            ids = frozenset(t["data"]["line_id"] for t in tasks if isinstance(t.get("data"), dict))
        except (OSError, ValueError, LookupError, TypeError, AttributeError):
            ids = frozenset()
        if len(_LINE_IDS) > 256:
            _LINE_IDS.clear()
        _LINE_IDS[key] = ids
    return _LINE_IDS[key]
