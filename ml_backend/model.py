"""Predict and fit for one Label Studio project, shaped like upstream ``LabelStudioMLBase``.

``predict(tasks)`` groups every line of the tasks' episodes, plus the project's other episodes as
a gallery (characters recur), and answers each task with its line's proposal. ``fit(event,
data)`` records what a webhook says (labels, deletions) durably and at once, and leaves the
refit to a background round, which gathers bursts of events into one refit, saves the new
model, bumps the model version and pushes the refreshed proposals into Label Studio
(`ml_backend.refresh`).

One writer per project: every change (labels, episode and task registration, refit, push,
reconcile, speaker listing, the connection to Label Studio) runs on the project's
`ml_backend.worker.ProjectWorker`, one at a time. Request threads read `Snapshot`, which the
worker replaces whole after each change, so they never take a lock and never see half an
update; a request that needs a change (new labels, an episode seen for the first time) hands
the worker a command and waits for its answer.

The rest of the backend lives beside it, one job per module: `ml_backend.protocol` (parsing and
refusals), `ml_backend.worker` (the project's one writer), `ml_backend.registry` (every project,
trust, recovery on start), `ml_backend.project_state` (what is on disk),
`ml_backend.connection` (the webhook, version and views Label Studio must hold),
`foundation.label_studio` (the one HTTP client).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from foundation.layout import features_path, is_grouping_ready, line_episode, tasks_path
from label_config import UNKNOWN_CHOICE, speaker_prediction, speakers_in_config
from ml_backend.config import BackendConfig
from ml_backend.media_access import (
    Credentials,
    EpisodeCache,
    TaskMediaError,
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
    CheckedAnnotation,
    MalformedRequest,
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
from ml_backend.worker import ProjectWorker

logger = logging.getLogger(__name__)

INITIAL_VERSION = f"{VERSION_PREFIX}0000-prior"
RECONCILE_EVERY_S = 300.0
CONNECT_RETRY_S = 5.0
"""While Label Studio cannot be reached for the start-up catch-up, try again this often."""


def _grouping() -> tuple[Any, Any, Any]:
    """SpeakerGrouper, SpeakerNumbers and load_lines, imported on first use (numpy, priors)."""
    from ml_backend.episode_lines import load_lines
    from ml_backend.grouping import SpeakerGrouper
    from ml_backend.grouping.speaker_numbers import SpeakerNumbers

    return SpeakerGrouper, SpeakerNumbers, load_lines


@dataclass(frozen=True)
class Snapshot:
    """What request threads read: replaced whole by the worker, never changed in place.

    generation : the worker's count of changes that alter proposals (labels, episodes) when
        ``proposals`` were made; behind `SpeakerGroupingModel.generation`, they are stale.
    """

    version: str
    generation: int
    number: int = 0
    """The version's running number (0: the priors)."""
    stamp: int | None = None
    proposals: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    episodes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """episode id -> registered folder."""
    tasks: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    """Label Studio task id -> line id."""
    listed: frozenset[str] = frozenset()
    """Speakers known to be choices of the project's label config."""


class SpeakerGroupingModel:
    """One project's model: predictions, labels, refits. Thread-safe (one writer, `worker`)."""

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
        # Below: touched by the worker thread only.
        self._grouper: Any = None
        self._grouper_version: str | None = None
        self._lines: Any = None
        self._line_set: set[str] = set()
        self._lines_key: Any = None
        self._proposals: dict[str, Any] = {}
        self._proposals_key: Any = None
        self._speaker_numbers: Any = None
        self._proposed_labels: dict[str, str] | None = None
        self._listed_speakers: set[str] = set()
        self._last_reconcile = 0.0
        self._caught_up = False
        self.generation = 0
        """Bumped by the worker on every change that alters proposals; read by requests."""
        self.last_push: Any = None
        self.connection: Any = None
        """What the last `ml_backend.connection.ensure_connection` found (None: not yet)."""
        self.public_url: str | None = config.public_url
        self.snapshot = Snapshot(
            version=self.state.model_version or INITIAL_VERSION,
            generation=-1,
            number=self.state.version_number,
            stamp=self.state.stamp,
            episodes=MappingProxyType(
                {name: e["folder"] for name, e in self.state.episodes().items()}
            ),
            tasks=MappingProxyType(self.state.tasks()),
        )
        self.worker = ProjectWorker(
            f"project-{self.project}",
            delay=config.refit_delay_s,
            round=self.background_round,
            on_failure=metrics.fit_failed if metrics is not None else None,
        )

    # ------------------------------------------------------------------ protocol

    @property
    def model_version(self) -> str:
        return self.snapshot.version

    def setup(self) -> str:
        return self.model_version

    def record_stamp(self, stamp: int | None) -> None:
        """Remember Label Studio's project stamp (through the worker, once)."""
        if stamp is not None and self.snapshot.stamp is None:
            self.worker.call(lambda: self._record_stamp(stamp))

    def _record_stamp(self, stamp: int) -> None:
        self.state.record_stamp(stamp)
        self.snapshot = replace(self.snapshot, stamp=self.state.stamp)

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
            except TaskMediaError as error:
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
                raise MalformedRequest(message)
            raise Unprocessable(message)
        task_lines = {
            t.task_id: t.line_id
            for p, t in enumerate(parsed)
            if t.task_id is not None and p not in errors
        }
        wanted = {parsed[p].line_id for p in range(len(parsed)) if p not in errors}
        snapshot = self.snapshot
        fresh = (
            snapshot.generation == self.generation
            and wanted <= snapshot.proposals.keys()
            and all(snapshot.episodes.get(e) == str(f) for e, f in folders.items())
            and all(snapshot.tasks.get(t) == line for t, line in task_lines.items())
        )
        if not fresh:
            snapshot = self.worker.call(lambda: self._register(folders, task_lines))
        results: list[Any] = []
        for position, task in enumerate(parsed):
            proposal = snapshot.proposals.get(task.line_id)
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
                        "model_version": snapshot.version,
                    }
                )
        if len(errors) == len(parsed):
            raise Unprocessable("; ".join(dict.fromkeys(errors.values())))
        names = [r["result"][0]["value"]["choices"][0] for r in results if r]
        self._ensure_listed(names, label_config)
        answer: dict[str, Any] = {"results": results, "model_version": snapshot.version}
        if errors:
            answer["errors"] = [
                {"task": parsed[p].task_id, "line_id": parsed[p].line_id, "error": message}
                for p, message in sorted(errors.items())
            ]
        return answer

    def _register(self, folders: Mapping[str, Path], task_lines: Mapping[int, str]) -> Snapshot:
        """Worker: register the request's episodes and tasks, then fresh proposals."""
        if self.state.add_episodes(folders):
            self.generation += 1
        self.state.remember_tasks(task_lines)
        return self._publish()

    def record_event(self, event: str, data: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        """Apply one webhook event now (on the worker); the refit and push follow in a round."""
        return self.worker.call(lambda: self._record_event(event, data))

    def _record_event(self, event: str, data: Mapping[str, Any]) -> dict[str, Any]:
        if event in ANNOTATION_EVENTS:
            annotations = data.get("annotation")
            task_payload = data.get("task")
            if event == "ANNOTATIONS_CREATED":
                if not isinstance(annotations, list) or not annotations:
                    raise MalformedRequest("ANNOTATIONS_CREATED needs a non-empty annotation list")
                if len(annotations) > MAX_TASKS_PER_REQUEST:
                    raise MalformedRequest(f"more than {MAX_TASKS_PER_REQUEST} annotations at once")
                if task_payload is None:
                    task_payload = data.get("tasks") or []
                if not isinstance(task_payload, list) or not all(
                    isinstance(t, Mapping) for t in task_payload
                ):
                    raise MalformedRequest("ANNOTATIONS_CREATED needs a task list of objects")
                tasks_by_id = {t.get("id"): t for t in task_payload}
                pairs = [(a, tasks_by_id.get(task_id_of(a))) for a in annotations]
            else:
                if task_payload is not None and not isinstance(task_payload, Mapping):
                    raise MalformedRequest(f"{event} needs a task object")
                pairs = [(annotations, task_payload)]
            # Every annotation is checked before any is stored: a bulk event is all or nothing.
            checked = [self._check_annotation(annotation, task) for annotation, task in pairs]
            kinds = self._apply_annotations(checked, bulk=event == "ANNOTATIONS_CREATED")
            self.worker.schedule()
            return {"status": "queued", "kinds": kinds, "model_version": self.model_version}
        if event == "ANNOTATIONS_DELETED":
            items = data.get("annotations")
            if not isinstance(items, list):
                raise MalformedRequest("ANNOTATIONS_DELETED needs an annotations list")
            if len(items) > MAX_TASKS_PER_REQUEST:
                raise MalformedRequest(f"more than {MAX_TASKS_PER_REQUEST} annotations at once")
            ids = [annotation_id_of(item) for item in items]
            removed = self.state.forget_annotations(ids)
            self.oplog.mark_deleted(ids)
            if removed:
                self.generation += 1
                self.worker.schedule()
            return {"status": "queued" if removed else "ignored", "forgotten": len(removed)}
        if event == "START_TRAINING":
            self.worker.schedule(force=True, reconcile=True)
            return {"status": "queued", "model_version": self.model_version}
        return {"status": "ignored", "action": event}

    # ------------------------------------------------------------------ labels

    def _check_annotation(self, annotation: Any, task: Any) -> CheckedAnnotation:
        """One annotation made ready to store, or `MalformedRequest`; stores nothing."""
        if not isinstance(annotation, Mapping):
            raise MalformedRequest("webhook has no annotation object")
        annotation_id = annotation_id_of(annotation)
        task_id = task_id_of(annotation)
        if task_id is None and isinstance(task, Mapping):
            task_id = task.get("id")
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise MalformedRequest(f"annotation {annotation_id} names no task id")
        if annotation.get("was_cancelled"):
            # A skip arrives as a created annotation carrying the pre-filled result.
            return CheckedAnnotation(annotation_id, task_id, None, None, None)
        data = task.get("data") if isinstance(task, Mapping) else None
        line_id = data.get("line_id") if isinstance(data, Mapping) else None
        if not isinstance(line_id, str):
            line_id = self.state.line_of_task(task_id)
        if not isinstance(line_id, str):
            raise MalformedRequest(
                f"annotation {annotation_id}: task {task_id} has no data.line_id"
            )
        episode = data.get("episode", line_episode(line_id)) if data is not None else None
        if episode is not None:
            problem = task_problem(ParsedTask(task_id, line_id, str(episode), data or {}))
            if not isinstance(episode, str) or problem is not None:
                raise MalformedRequest(
                    f"annotation {annotation_id}: {problem or 'bad data.episode'}"
                )
        try:
            entry = annotation_entry(annotation, task_id=task_id, line_id=line_id)
        except (TypeError, ValueError, KeyError) as error:
            raise MalformedRequest(f"annotation {annotation_id}: {error}") from None
        return CheckedAnnotation(annotation_id, task_id, line_id, entry, data)

    def _apply_annotations(
        self, checked: Sequence[CheckedAnnotation], *, bulk: bool = False
    ) -> list[str]:
        """Store checked annotations in one commit, then log them; returns their kinds.

        bulk : a Data Manager action made them all at once ("Create Annotations From
            Predictions"): the lines that got one speaker are logged as one operation
            (`OperationLog.record_group`), the way the annotator did it.
        """
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
        if stored or skipped:
            self.generation += 1
        operations = []
        for item in checked:
            if item.entry is None:
                continue
            line_id, label = str(item.line_id), item.entry["speaker"]
            seen = shown[item.annotation_id]
            operations.append(
                {
                    "annotation_id": item.annotation_id,
                    "episode": line_episode(line_id),
                    "annotator": item.entry["annotator"],
                    "line_id": line_id,
                    "proposed": None if seen is None or seen[0] == UNKNOWN_CHOICE else seen[0],
                    "label": label,
                    "named_elsewhere": label is not None
                    and any(name == label for other, name in before.items() if other != line_id),
                    "score": None if seen is None else seen[1],
                }
            )
        if bulk and len(operations) > 1:
            logged, counted = self.oplog.record_group(operations)
        else:
            logged = {op["annotation_id"]: self.oplog.record(**op) for op in operations}
            counted = list(logged.values())
        if self.metrics is not None:
            for kind in counted:
                self.metrics.operation(kind)
        return ["skipped" if c.entry is None else logged[c.annotation_id] for c in checked]

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
            proposed = None if shown is None or shown[0] == UNKNOWN_CHOICE else shown[0]
            self.oplog.record(
                annotation_id,
                episode=line_episode(line_id),
                annotator=str(entry.get("annotator") or "unknown"),
                line_id=line_id,
                proposed=proposed,
                label=label,
                score=None if shown is None else shown[1],
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
        episode = data.get("episode", line_episode(line_id))
        if not isinstance(episode, str) or episode in self.state.episodes():
            return
        try:
            safe_episode_name(episode)
            folder = episode_folder(data, self.config.media_roots)
        except TaskMediaError as error:
            logger.info("project %d: episode not registered (%s)", self.project, error)
            return
        usable = folder is not None and features_path(folder).is_file()
        if usable and episode_id_in(folder) == episode:
            self.state.add_episodes({episode: folder})

    # ------------------------------------------------------------------ episodes and proposals

    def _episode_folder(
        self, episode: str, parsed: Sequence[ParsedTask], raw: Sequence[Mapping[str, Any]]
    ) -> Path:
        known = self.snapshot.episodes.get(episode)
        if known is not None:
            folder = Path(known)
            if is_grouping_ready(folder):
                return folder
        folder = episode_folder(parsed[0].data, self.config.media_roots)
        if folder is not None:
            own = episode_id_in(folder)
            if own != episode:
                raise TaskMediaError(
                    f"task of episode {episode!r} points into folder {folder.name}, whose lines "
                    f"are of episode {own!r}; refused"
                )
        if folder is not None and features_path(folder).is_file():
            return folder
        try:
            if folder is not None:
                return self.cache.from_import(folder)
            return self._cached_from_tasks(episode, raw)
        except TaskMediaError:
            raise
        except (OSError, ValueError, RuntimeError) as error:
            # Undecodable clips, a corrupt cache: this episode's media are unusable as given.
            raise TaskMediaError(
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
                raise TaskMediaError(f"task of line {data.get('line_id')} has no data.index/audio")
        return self.cache.from_tasks(episode, tasks)

    def _folders(self) -> list[Path]:
        folders: dict[Path, None] = {}
        for entry in self.state.episodes().values():
            folder = Path(entry["folder"])
            if is_grouping_ready(folder):
                folders.setdefault(folder.resolve(), None)  # one folder is loaded once
        return list(folders)

    def _load_lines(self, folders: Sequence[Path]) -> Any:
        key = tuple(
            (str(f), features_path(f).stat().st_mtime_ns, tasks_path(f).stat().st_mtime_ns)
            for f in folders
        )
        if key != self._lines_key:
            _, _, load_lines = _grouping()
            from ml_backend.episode_lines import MixedEmbeddersError

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
        """Worker: the model of the current version (loaded once per version)."""
        SpeakerGrouper, _, _ = _grouping()
        version = self.state.model_version
        if self._grouper is None or self._grouper_version != version:
            folder = self.state.model_folder(version)
            if folder is not None and folder.is_dir():
                self._grouper = SpeakerGrouper.load(folder)
            else:
                self._grouper = self._new_grouper()
            self._grouper_version = version
        return self._grouper

    def _new_grouper(self) -> Any:
        """A grouper with the configured priors and the backend's parameters on top of them."""
        SpeakerGrouper, _, _ = _grouping()
        from ml_backend.grouping.params import params_for_priors
        from ml_backend.grouping.priors import load_priors

        priors = load_priors(self.config.priors)
        params = params_for_priors(priors).replace(**self.config.grouper_changes())
        return SpeakerGrouper(params, priors=priors)

    def _speaker_numbers_object(self) -> Any:
        if self._speaker_numbers is None:
            _, SpeakerNumbers, _ = _grouping()
            stored = self.state.load_speaker_numbers()
            self._speaker_numbers = SpeakerNumbers.from_json(stored) if stored else SpeakerNumbers()
        return self._speaker_numbers

    def _publish(self) -> Snapshot:
        """Worker: fresh proposals for the current labels and episodes, published whole."""
        generation = self.generation
        proposals = self._proposals_now()
        snapshot = Snapshot(
            version=self.state.model_version or INITIAL_VERSION,
            generation=generation,
            number=self.state.version_number,
            stamp=self.state.stamp,
            proposals=MappingProxyType(dict(proposals)),
            episodes=MappingProxyType(
                {name: e["folder"] for name, e in self.state.episodes().items()}
            ),
            tasks=MappingProxyType(self.state.tasks()),
            listed=frozenset(self._listed_speakers),
        )
        self.snapshot = snapshot  # one reference assignment: readers see old or new, whole
        return snapshot

    def proposals(self) -> Mapping[str, Any]:
        """line id -> Proposal for every line of the project's episodes, fresh."""
        snapshot = self.snapshot
        if snapshot.generation == self.generation:
            return snapshot.proposals
        return self.worker.call(self._publish).proposals

    def _proposals_now(self) -> dict[str, Any]:
        """Worker: line id -> Proposal for the current labels (cached per input)."""
        folders = self._folders()
        if not folders:
            return {}
        lines = self._load_lines(folders)
        labels = {k: v for k, v in self.state.labels().items() if k in self._line_set}
        version = self.state.model_version or INITIAL_VERSION
        key = (version, self._lines_key, _digest(labels))
        if key == self._proposals_key:
            return self._proposals
        began = time.perf_counter()
        # what the annotators were shown: a refit may not rename confident names on weak
        # evidence (`ml_backend.grouping.stability`)
        previous = (
            {k: shown_choice(p) for k, p in self._proposals.items()}
            if self._proposals
            else self.state.shown_proposals()
        )
        grouping = self.grouper().propose(
            lines, labels, self._speaker_numbers_object(), previous=previous
        )
        proposals = grouping.proposals
        self._log_moves(grouping.moves, labels, version)
        self.state.save_speaker_numbers(grouping.speaker_numbers.to_json())
        self._speaker_numbers = grouping.speaker_numbers
        self._proposals = {p.line_id: p for p in proposals}
        self._proposals_key = key
        self.state.save_proposals(version, {p.line_id: shown_choice(p) for p in proposals})
        logger.info(
            "project %d: %d proposals in %.2f s",
            self.project,
            len(proposals),
            time.perf_counter() - began,
        )
        return self._proposals

    def _log_moves(self, moves: Any, labels: Mapping[str, str], version: str) -> None:
        """Worker: log how many lines the new labels moved (`ml_backend.grouping.stability`):
        operation log, /metrics, and a warning when they are many."""
        before = self._proposed_labels
        if before is None:  # first proposals since start: the labels the saved model knew
            before = self.state.fitted_labels
        self._proposed_labels = dict(labels)
        if moves is None or before == labels:
            return
        new: dict[str, str | None] = {k: v for k, v in labels.items() if before.get(k) != v}
        new.update({k: None for k in before.keys() - labels.keys()})
        self.oplog.record_refit(
            version,
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

    # ------------------------------------------------------------------ refit and push (worker)

    def refit(self, *, force: bool = False) -> bool:
        """Fit on the current labels, save, bump the version. False when nothing changed."""
        if not self.worker.on_worker_thread:
            return self.worker.call(lambda: self.refit(force=force))
        labels = self.state.labels()
        if not force and labels == self.state.fitted_labels:
            return False  # the priors (or the last fit) already stand for these labels
        began = time.perf_counter()
        folders = self._folders()
        if not folders:
            logger.info("project %d: labels recorded, no episode to fit on yet", self.project)
            return False
        lines = self._load_lines(folders)
        usable = {k: v for k, v in labels.items() if k in self._line_set}
        unfitted = self._new_grouper()
        grouper = self.worker.run_aside(lambda: unfitted.fit(lines, usable))
        number = self.state.version_number + 1
        digest = _digest({"instance": self.state.instance, **usable})
        version = f"{VERSION_PREFIX}{number:04d}-{digest[:8]}"
        grouper.save(self.state.new_model_folder(version))  # priors included: stands alone
        self.state.set_model_version(version, number, labels)
        self._grouper, self._grouper_version = grouper, version
        self._publish()
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
        """Push every line's current proposal to Label Studio (see `ml_backend.refresh`).

        The HTTP calls run through `ProjectWorker.run_aside`, so webhooks are applied meanwhile;
        the task map Label Studio listed is stored after they return.
        """
        if not self.worker.on_worker_thread:
            return self.worker.call(self.push)
        api = self.api()
        if api is None or not self.config.push_predictions:
            return None
        proposals = self._publish().proposals
        version = self.model_version
        known = self.state.tasks()
        project = self.project

        def send() -> tuple[Any, dict[int, str] | None]:
            with api:
                info = api.project(project)
                # The task list costs a paged call; the stored map is enough while the count
                # holds.
                listed = (
                    _list_tasks(api, project) if info.get("task_number") != len(known) else None
                )
                tasks = known if listed is None else listed
                if not proposals or not tasks:
                    return None, listed
                try:
                    result = push_predictions(
                        api,
                        project,
                        self._predictions(tasks, proposals),
                        model_version=version,
                        project_info=info,
                    )
                except RefreshError:
                    if listed is not None:
                        raise
                    # A task was replaced behind our back: list them all and try once more.
                    logger.info("project %d: task map stale; listing tasks again", project)
                    listed = _list_tasks(api, project)
                    result = push_predictions(
                        api, project, self._predictions(listed, proposals), model_version=version
                    )
                return result, listed

        result, listed = self.worker.run_aside(send)
        if listed is not None:
            self.state.replace_tasks(listed)
        if result is None:
            return None
        self._listed_speakers.update(shown_choice(p)[0] for p in proposals.values())
        self.last_push = result
        self._publish()
        if self.metrics is not None:
            self.metrics.pushed(result.seconds, result.created)
        return result

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
        lost can refit before Label Studio asks for any prediction. Runs on the worker, so a
        webhook acknowledged while the listing ran is applied before or after it, never lost.
        """
        if not self.worker.on_worker_thread:
            return self.worker.call(self.reconcile)
        api = self.api()
        if api is None:
            return (0, 0)
        known_before = self.state.annotation_ids()

        def listing() -> list[dict[str, Any]]:
            with api:
                return list(api.tasks(self.project, annotations=True))

        tasks = self.worker.run_aside(listing)
        counts = rebuild_from_annotations(self.state, tasks, known_before=known_before)
        firsts: dict[str, Mapping[str, Any]] = {}
        for task in tasks:
            data = task.get("data") or {}
            line_id = data.get("line_id")
            if isinstance(line_id, str):
                firsts.setdefault(str(data.get("episode", line_episode(line_id))), data)
        for data in firsts.values():
            self._register_episode_of(data)
        self._last_reconcile = time.monotonic()
        if counts != (0, 0):
            self.generation += 1
            self.backfill_operations()
            logger.info("project %d: reconciled %d annotations, forgot %d", self.project, *counts)
        return counts

    def background_round(self, *, force: bool, reconcile: bool) -> None:
        """One round of the worker: connect and catch up when due, refit, push.

        The first round after a start (or a ``/setup``) makes sure Label Studio's webhook
        points at this backend and reconciles, so corrections saved while the backend was down
        are not lost (`ml_backend.connection`). While Label Studio cannot be reached, the round
        is tried again every `CONNECT_RETRY_S` seconds.
        """
        from ml_backend.connection import ensure_connection

        catching_up = not self._caught_up and self.credentials.usable
        if catching_up:
            try:
                self.connection = self.worker.run_aside(
                    lambda: ensure_connection(
                        self.api(),
                        self.project,
                        public_url=self.public_url,
                        basic_auth=(self.config.basic_auth_user, self.config.basic_auth_pass),
                    )
                )
            except RefreshError as error:
                logger.warning(
                    "project %d: Label Studio not reachable yet (%s); retrying in %.0f s",
                    self.project,
                    error,
                    CONNECT_RETRY_S,
                )
                self._retry_later(force=force)
                return
        due = time.monotonic() - self._last_reconcile > RECONCILE_EVERY_S
        if catching_up or reconcile or due:
            try:
                self.reconcile()
            except RefreshError as error:
                logger.warning("project %d: reconcile failed: %s", self.project, error)
                if catching_up:
                    self._retry_later(force=force)
                    return
        self._caught_up = True
        changed = self.refit(force=force)
        if changed or force or self._pin_is_stale():
            self.push()
        self._publish()

    def _pin_is_stale(self) -> bool:
        """Whether Label Studio's project shows another model version than ours.

        Label Studio sorts by score and shows scores only for predictions of the project's
        model version, which connecting a backend sets to the backend's title
        (docs/architecture.md §7): until a push pins ours, "Doubt first" does not sort.
        """
        api = self.api()
        if api is None or not self.config.push_predictions:
            return False

        def read() -> Any:
            with api:
                return api.project(self.project).get("model_version")

        try:
            pinned = self.worker.run_aside(read)
        except RefreshError as error:
            logger.warning("project %d: %s", self.project, error)
            return False
        if self.connection is not None:
            self.connection = self.connection.pinned(pinned)
        return pinned != self.model_version

    def catch_up(self) -> None:
        """Check the connection and reconcile in the next round (start, ``/setup``).

        Not waited for: ``/setup`` must answer within Label Studio's 3 s, whatever the worker
        is doing.
        """
        if not self.worker.on_worker_thread:
            self.worker.submit(self.catch_up)
            return
        self._caught_up = False
        self.worker.schedule(reconcile=True)

    def use_credentials(self, credentials: Credentials) -> None:
        """Worker: talk to Label Studio with these from now on (learnt from ``/setup``)."""
        if not self.worker.on_worker_thread:
            self.worker.call(lambda: self.use_credentials(credentials))
            return
        self.credentials = credentials
        self.cache.credentials = credentials

    def _retry_later(self, *, force: bool) -> None:
        self.worker.retry(CONNECT_RETRY_S, force=force)

    def api(self) -> LabelStudioApi | None:
        if not self.credentials.usable:
            return None
        return LabelStudioApi(str(self.credentials.url), str(self.credentials.api_key))

    def _ensure_listed(self, names: Sequence[str], label_config: str | None) -> None:
        """Names shown in predictions must be choices, or Label Studio drops the prediction."""
        wanted = {n for n in names if n not in self.snapshot.listed}
        if wanted:
            self.worker.call(lambda: self._list_speakers(wanted, label_config))

    def _list_speakers(self, wanted: set[str], label_config: str | None) -> None:
        """Worker: append the names the config lacks (append-only, see `ensure_speakers`)."""
        wanted = wanted - self._listed_speakers
        if label_config and wanted:
            try:
                listed = set(speakers_in_config(label_config))
            except ValueError as error:
                raise MalformedRequest(f"label_config: {error}") from None
            self._listed_speakers.update(wanted & listed)
            wanted -= listed
        api = self.api()
        if wanted and api is not None:
            try:
                ensure_speakers(api, self.project, sorted(wanted))
                self._listed_speakers.update(wanted)
            except RefreshError as error:
                logger.warning("project %d: could not append speakers: %s", self.project, error)
            finally:
                api.close()
        elif api is not None:
            api.close()
        self.snapshot = replace(self.snapshot, listed=frozenset(self._listed_speakers))

    def reset(self, archive: Path) -> None:
        """Worker: move the project's folder aside whole and take no more commands.

        Runs after every command queued before it, so nothing of the old project can be written
        into the new one afterwards.
        """
        folder = self.state.folder
        if folder.exists():
            folder.rename(archive)
        self.worker.close(f"project {self.project} was reset; retry the request")


def _list_tasks(api: LabelStudioApi, project: int) -> dict[int, str]:
    """Label Studio task id -> line id, for every task of the project."""
    tasks = {}
    for task in api.tasks(project):
        line_id = (task.get("data") or {}).get("line_id")
        if isinstance(line_id, str):
            tasks[int(task["id"])] = line_id
    return tasks


def _digest(labels: Mapping[str, str]) -> str:
    text = json.dumps(sorted(labels.items()), ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


_LINE_IDS: dict[tuple[str, int], frozenset[str]] = {}


def _line_ids_of(folder: Path) -> frozenset[str]:
    """Every line id in ``folder/tasks.json`` (cached while the file is unchanged)."""
    path = tasks_path(folder)
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
