"""The per-episode work of a season import: media and features, then the completion marker.

This sits in ``speaker_grouping`` because it joins two layers: the importer (which must not know
about models) and the feature extractor of ``speaker-grouping features``, which holds the
embedders. `importers.season` plans and runs; it gets a `SeasonWorker` through a factory, and
`importers.season_ray` builds the same factory inside each Ray actor, so the models load once per
worker and stay loaded for every episode that worker imports.

Everything here is plain, picklable data or built from it, so a `SeasonJob` can be shipped to a
Ray actor on another machine; the output folder must then be one the workers share.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation.layout import REPORT_FILE, TASKS_FILE
from importers.pipeline import ImportOptions
from importers.season import (
    EpisodeOutcome,
    clear_marker,
    completion_key,
    one_line,
    write_marker,
)
from ml_backend.features.prepare import prepare_episode

if TYPE_CHECKING:
    from ml_backend.features.extractor import FeatureExtractor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeasonJob:
    """Everything a worker needs, the same for every episode of the run."""

    out_dir: Path
    options: ImportOptions
    subtitles: Path | None = None
    """One subtitle file for all (only meaningful with one video); None: found beside each."""
    features: bool = True
    voice_model: str | None = None
    image_model: str | None = None
    settings: dict[str, Any] | None = None
    """The run's settings as recorded in each episode's completion key; see `season_settings`."""
    asr: str | None = None
    """``ENGINE:PATH`` of a speech recogniser for lines cut from speech (``import --asr``)."""
    asr_language: str | None = None


def season_settings(
    options: ImportOptions, extractor: FeatureExtractor | None, asr: str | None = None
) -> dict[str, Any]:
    """The settings part of the completion key: import options and the feature models' identity.

    The models are named by their `ModelInfo` (name, version, dim), so a new model release or a
    different ``--voice-model`` makes finished episodes stale, while the same model chosen by
    another spelling (default vs. explicit name) does not.
    """
    features = None
    if extractor is not None:
        features = {
            kind: asdict(model.info) if model is not None else None
            for kind, model in (
                ("voice", extractor.voice),
                ("image", extractor.image),
                ("quality", extractor.quality),
            )
        }
    return {"import": asdict(options), "features": features, "asr": asr}


def build_extractor(job: SeasonJob) -> FeatureExtractor | None:
    """The job's feature extractor, or None with ``features=False``; names are checked here."""
    if not job.features:
        return None
    from ml_backend.features.extractor import FeatureExtractor

    return FeatureExtractor.build(job.voice_model, job.image_model)


def versions() -> dict[str, str]:
    """Recorded in each marker, for whoever wonders later what made a folder."""
    found = {}
    for package in ("speaker-grouping", "av", "resemblyzer", "silero-vad"):
        try:
            found[package] = package_version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


class SeasonWorker:
    """Imports episodes one after another with one set of loaded models.

    Each episode goes through `prepare_episode`, as ``speaker-grouping import`` runs one
    episode: the features are computed from the clips and frames in memory during the media
    work. The models load with the first episode and then stay loaded.
    """

    def __init__(self, job: SeasonJob) -> None:
        self.job = job
        self._extractor = build_extractor(job)
        self._settings = job.settings or season_settings(job.options, self._extractor, job.asr)
        self._transcriber = None
        if job.asr:
            from importers.asr import load_transcriber

            self._transcriber = load_transcriber(job.asr, language=job.asr_language)

    def import_one(self, video: Path) -> EpisodeOutcome:
        """Import ``video`` into ``job.out_dir``; any error becomes a failed outcome."""
        episode_id = episode_dir = None
        try:
            key = completion_key(video, self._settings, subtitles=self.job.subtitles)
            episode_id = key["episode"]
            episode_dir = self.job.out_dir / episode_id
            clear_marker(episode_dir)
            done = prepare_episode(
                video,
                self.job.out_dir,
                self.job.subtitles,
                self.job.options,
                self._extractor,
                transcriber=self._transcriber,
            )
            result, extraction = done.media, done.features
            outputs = [TASKS_FILE, REPORT_FILE]
            notes = [f"{len(result.problems)} cues reported"] if result.problems else []
            if extraction is not None:
                outputs.append(extraction.store_path.name)
                notes.append(
                    "features "
                    + ("computed" if any(extraction.computed.values()) else "up to date")
                )
            write_marker(result.episode_dir, key, video=video, outputs=outputs, versions=versions())
        except Exception as error:  # reported as data: the season goes on without this episode
            logger.debug("%s failed", video, exc_info=True)
            return EpisodeOutcome(
                video, "failed", episode_id, episode_dir, 0, one_line(error), _worker_name()
            )
        return EpisodeOutcome(
            video,
            "imported",
            result.episode_id,
            result.episode_dir,
            len(result.tasks),
            "; ".join(notes),
            _worker_name(),
        )

    def close(self) -> None:
        if self._extractor is not None:
            self._extractor.close()


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_factory(job: SeasonJob) -> functools.partial[SeasonWorker]:
    """A picklable ``() -> SeasonWorker``: what a runner (or a Ray actor) calls to get one."""
    return functools.partial(SeasonWorker, job)
