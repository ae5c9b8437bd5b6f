"""Pytest plugin: the generated `tiny` episode, imported with default features, once a session;
and the builder behind it, for modules that need a bigger episode of their own.

Generating, importing and embedding it costs about 30 s on 2 cores; several test modules need
exactly this folder, so they share one read-only copy instead of building their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class GeneratedEpisode:
    """Where the generated episode and its import landed. Tests must not modify it."""

    made: Path
    imported: Path

    @property
    def truth(self) -> Path:
        return self.made / "truth.csv"


def generated_and_imported(preset: str, seed: int, made: Path) -> GeneratedEpisode:
    """Generate ``preset`` episode ``seed`` into ``made`` and import it with default features.

    Without MBROLA, so that every machine builds the same cast whatever voices it has.
    """
    from bench.make_episode import make_episode
    from importers.pipeline import import_episode
    from ml_backend.features.embedder import image_embedder, voice_embedder
    from ml_backend.features.extract import extract_features
    from ml_backend.features.quality import QualityMeter

    files = make_episode(preset, seed=seed, out_dir=made, allow_mbrola=False)
    result = import_episode(files.video, subtitles=files.subtitles, out_dir=made / "import")
    extract_features(
        result.episode_dir,
        voice_embedder=voice_embedder(),
        image_embedder=image_embedder(),
        quality_meter=QualityMeter(),
    )
    return GeneratedEpisode(made=made, imported=result.episode_dir)


@pytest.fixture(scope="session")
def tiny_episode(tmp_path_factory: pytest.TempPathFactory) -> GeneratedEpisode:
    return generated_and_imported("tiny", 1, tmp_path_factory.mktemp("tiny-episode"))
