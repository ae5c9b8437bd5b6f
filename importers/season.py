"""Import a whole season: which videos, which are already done, and what happened to each.

A season import is many independent episode imports. This module holds what does not depend on
how one episode is imported or where: turning the command line's files, folders and globs into
a list of videos, the completion marker that makes a re-run skip finished episodes, the outcome
of one episode and the summary of them all, and the serial runner. The per-episode work is
injected as an `EpisodeWorker` (the importer layer knows nothing of features or the CLI);
`importers.season_ray` runs the same workers as Ray actors.

Resume rule: an episode is finished when its folder holds a marker (``import.done.json``),
written atomically after everything else, whose key (the source file's id and size, the
subtitle file's hash, the import settings and feature models) equals the key of this run, and
whose recorded hashes of ``tasks.json``, ``report.json`` (and ``features.npz``) still match the
files. A crash mid-episode leaves no marker (it is removed before the work starts), so the
episode is redone; so is one whose settings changed or whose outputs were touched since.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from foundation.atomic import atomic_write_json
from foundation.hook import Hook
from foundation.layout import tasks_path
from importers.media import MediaError
from importers.subtitles import SubtitleError, find_subtitles_for
from importers.tasks import episode_id_for

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mkv", ".mp4", ".avi", ".webm", ".mov", ".m4v", ".ts")
"""What a folder or glob argument picks up; a file named explicitly is taken whatever it is."""

MARKER_NAME = "import.done.json"
MARKER_FORMAT = 1
"""Bumped when the key's layout changes, so that old markers stop matching."""

Status = Literal["imported", "skipped", "failed"]


# ---------------------------------------------------------------------------------------------
# Which videos


def natural_key(path: Path) -> tuple[tuple[int, int | str], ...]:
    """Sort key in which ``ep2`` comes before ``ep10``: digit runs compare as numbers."""
    parts = re.split(r"(\d+)", str(path))
    return tuple((0, int(part)) if part.isdigit() else (1, part.lower()) for part in parts)


def find_videos(inputs: Sequence[str | Path]) -> list[Path]:
    """The videos the arguments name, in argument order, each folder or glob sorted naturally.

    Each input is an existing file (taken as it is: fansub names are full of brackets, which a
    glob would misread), a folder (its video files, not its subfolders), or a glob pattern
    (expanded here, so a quoted pattern works too; ``**`` recurses). A video named twice is
    imported once. Raises FileNotFoundError or ValueError, naming the input, when an input
    matches no video.
    """
    videos: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_file():
            videos.append(path)
        elif path.is_dir():
            found = _video_files(path.iterdir())
            if not found:
                raise ValueError(f"{path}: no video files ({' '.join(VIDEO_SUFFIXES)}) in it")
            videos += found
        elif glob.has_magic(str(raw)):
            found = _video_files(Path(name) for name in glob.glob(str(raw), recursive=True))
            if not found:
                raise ValueError(f"{raw}: the pattern matches no video file")
            videos += found
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    unique: dict[Path, Path] = {}
    for video in videos:
        unique.setdefault(video.resolve(), video)
    return list(unique.values())


def _video_files(paths: Iterator[Path] | Sequence[Path]) -> list[Path]:
    found = [path for path in paths if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()]
    return sorted(found, key=natural_key)


# ---------------------------------------------------------------------------------------------
# What happened to one episode, and to the season


@dataclass(frozen=True)
class EpisodeOutcome:
    """One episode's result, as plain data: it crosses process boundaries (Ray) unchanged."""

    video: Path
    status: Status
    episode_id: str | None = None
    episode_dir: Path | None = None
    tasks: int = 0
    detail: str = ""
    """Failed: the one-line reason. Imported: what was done (cues skipped, features)."""
    worker: str = ""
    """``host:pid`` of the process that did the work (which Ray worker, on a cluster)."""

    def reason(self) -> str:
        """The failure reason naming the video once (our errors start with the file already)."""
        if str(self.video) in self.detail:
            return self.detail
        return f"{self.video}: {self.detail}"

    def line(self) -> str:
        """One line for the terminal."""
        if self.status == "failed":
            return f"failed   {self.reason()}"
        if self.status == "skipped":
            return (
                f"skipped  {self.video}: {self.detail or 'already imported'} ({self.episode_dir})"
            )
        extra = f"; {self.detail}" if self.detail else ""
        return f"imported {self.video}: {self.tasks} tasks in {self.episode_dir}{extra}"


@dataclass
class SeasonSummary:
    outcomes: list[EpisodeOutcome] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)

    @property
    def failed(self) -> list[EpisodeOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]

    @property
    def exit_code(self) -> int:
        """1 when any episode failed: scripts must notice, while the rest still imported."""
        return 1 if self.failed else 0

    def lines(self) -> list[str]:
        lines = [
            f"imported {self.count('imported')}, skipped (already done) {self.count('skipped')}, "
            f"failed {self.count('failed')}"
        ]
        lines += [f"  failed: {outcome.reason()}" for outcome in self.failed]
        return lines


def one_line(error: BaseException) -> str:
    """An error as one line: our errors already are; others get their type in front."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (MediaError, SubtitleError, ValueError, FileNotFoundError)):
        return text
    return f"{type(error).__name__}: {text}"


# ---------------------------------------------------------------------------------------------
# The completion marker


def completion_key(
    video: Path, settings: Mapping[str, Any], *, subtitles: Path | None = None
) -> dict[str, Any]:
    """What an episode's outputs depend on, as JSON: equal keys mean the same import.

    settings : the run's import options and feature models as JSON (the caller's business).
    subtitles : the subtitle file given; None means the one found beside the video.
    The source is identified by its episode id (a hash of its size and first and last MiB) and
    the subtitle file by the SHA-1 of its bytes, so moving the files keeps them finished.
    """
    subtitle_path = subtitles if subtitles is not None else find_subtitles_for(video)
    subtitle_hash = None
    if subtitle_path is not None and subtitle_path.is_file():
        subtitle_hash = hashlib.sha1(subtitle_path.read_bytes()).hexdigest()
    return {
        "episode": episode_id_for(video),
        "size": video.stat().st_size,
        "subtitles_sha1": subtitle_hash,
        "settings": json.loads(json.dumps(settings, default=str)),
    }


def marker_path(episode_dir: Path) -> Path:
    return episode_dir / MARKER_NAME


def clear_marker(episode_dir: Path) -> None:
    """Called before an episode's work starts, so that a crash half-way leaves it unfinished."""
    marker_path(episode_dir).unlink(missing_ok=True)


def write_marker(
    episode_dir: Path,
    key: Mapping[str, Any],
    *,
    video: Path,
    outputs: Sequence[str],
    versions: Mapping[str, str],
) -> Path:
    """Record that ``episode_dir`` is complete for ``key``; call it last, after every output."""
    path = marker_path(episode_dir)
    atomic_write_json(
        path,
        {
            "format": MARKER_FORMAT,
            "key": dict(key),
            "video": str(video),
            "outputs": {name: _sha1(episode_dir / name) for name in outputs},
            "versions": dict(versions),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return path


def is_finished(episode_dir: Path, key: Mapping[str, Any]) -> bool:
    """True when ``episode_dir`` holds a complete import made with ``key``, untouched since."""
    try:
        marker = json.loads(marker_path(episode_dir).read_text(encoding="utf-8"))
        if marker.get("format") != MARKER_FORMAT or marker.get("key") != dict(key):
            return False
        outputs = marker["outputs"]
        return bool(outputs) and all(
            _sha1(episode_dir / name) == digest for name, digest in outputs.items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # no marker, or one we cannot read: redo the episode


def marker_tasks(episode_dir: Path) -> int:
    """How many tasks a finished episode holds (for the summary of a skipped one)."""
    try:
        return len(json.loads(tasks_path(episode_dir).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return 0


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Running


class EpisodeWorker(Protocol):
    """Imports one episode at a time and keeps what is expensive to load (models) between them.

    ``import_one`` never raises for a bad episode: it returns a failed `EpisodeOutcome`.
    """

    def import_one(self, video: Path) -> EpisodeOutcome: ...

    def close(self) -> None: ...


class EpisodeRunner(Protocol):
    """Runs episodes somewhere and yields their outcomes as they finish (any order)."""

    def run(
        self, videos: Sequence[Path], *, on_start: Callable[[Path], None] | None = None
    ) -> Iterator[EpisodeOutcome]: ...

    def close(self) -> None: ...


class SerialRunner:
    """One worker in this process, one episode after another."""

    def __init__(self, make_worker: Callable[[], EpisodeWorker]) -> None:
        self._make_worker = make_worker
        self._worker: EpisodeWorker | None = None

    def run(
        self, videos: Sequence[Path], *, on_start: Callable[[Path], None] | None = None
    ) -> Iterator[EpisodeOutcome]:
        for video in videos:
            if self._worker is None:  # built only when there is work: it loads models
                self._worker = self._make_worker()
            if on_start is not None:
                on_start(video)
            yield self._worker.import_one(video)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


@dataclass(frozen=True)
class SeasonPlan:
    """The videos to import, and the ones found finished (as skipped outcomes)."""

    todo: list[Path]
    finished: list[EpisodeOutcome]


def plan_season(
    videos: Sequence[Path],
    *,
    out_dir: Path,
    settings: Mapping[str, Any],
    subtitles: Path | None = None,
    force: bool = False,
) -> SeasonPlan:
    """Split ``videos`` into work and finished episodes (all work with ``force``).

    Two arguments with the same content (same episode id) would write one folder twice, at the
    same time under Ray, so the second is skipped. A video whose key cannot be computed (it
    vanished, it is unreadable) is left in the work list, where it fails with its reason.
    """
    todo: list[Path] = []
    finished: list[EpisodeOutcome] = []
    first_with_id: dict[str, Path] = {}
    for video in videos:
        try:
            key = completion_key(video, settings, subtitles=subtitles)
        except OSError:
            todo.append(video)
            continue
        episode_id = key["episode"]
        episode_dir = out_dir / episode_id
        if episode_id in first_with_id:
            detail = f"same file as {first_with_id[episode_id]}"
            finished.append(EpisodeOutcome(video, "skipped", episode_id, episode_dir, 0, detail))
            continue
        first_with_id[episode_id] = video
        if not force and is_finished(episode_dir, key):
            tasks = marker_tasks(episode_dir)
            finished.append(EpisodeOutcome(video, "skipped", episode_id, episode_dir, tasks))
        else:
            todo.append(video)
    return SeasonPlan(todo, finished)


def import_season(
    plan: SeasonPlan,
    runner: EpisodeRunner,
    *,
    hook: Hook | None = None,
    on_start: Callable[[Path], None] | None = None,
    on_outcome: Callable[[EpisodeOutcome], None] | None = None,
) -> SeasonSummary:
    """Run the plan's work on ``runner``; every episode ends in the summary, failed or not.

    hook : step ``episodes``, completed = episodes done (finished ones count at once), total =
    all episodes of the plan.
    on_start, on_outcome : when an episode starts and ends (for the terminal).
    """
    summary = SeasonSummary()
    total = len(plan.todo) + len(plan.finished)

    def record(outcome: EpisodeOutcome) -> None:
        summary.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
        if hook is not None:
            hook("episodes", completed=len(summary.outcomes), total=total)

    if hook is not None:
        hook("episodes", completed=0, total=total)
    for outcome in plan.finished:
        record(outcome)
    if plan.todo:
        for outcome in runner.run(plan.todo, on_start=on_start):
            record(outcome)
    return summary
