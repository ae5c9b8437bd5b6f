"""Generated benchmark episodes, imported and with default features, built once and reused.

Every quality benchmark and the prior training need the same few dozen episodes, each costing
minutes of speech synthesis, import and embedding on 2 cores; they are built on first use under
``.cache/episodes/<preset>-seed<N>/`` (a season under ``season-seed<N>/epNN/``) and reused. An
episode counts as built only once ``ready.json`` exists, which is written last, so an
interrupted build is redone rather than half-used.

Run ``python -m bench.episode_cache --split all`` to build everything ahead of time.

Seeds are split once here, so that priors are never trained on an evaluation episode.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from foundation.atomic import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "episodes"
READY = "ready.json"

EVALUATION = (
    ("standard", 1),
    ("standard", 2),
    ("standard", 3),
    ("hard", 1),
    ("hard", 2),
    ("hard", 3),
    ("season", 1),
)
"""The held-out episodes every quality table reports on."""

TRAINING = (
    ("standard", 101),
    ("hard", 101),
    ("standard", 102),
    ("hard", 102),
    ("hard", 103),
    ("season", 101),
)
"""The episodes the cold-start priors are trained on; disjoint seeds from `EVALUATION`. The
season (six episodes with recurring characters, grouped as one) is there because a season's
neighbourhoods are denser than an episode's: priors trained on single episodes alone chose a
merge threshold that split the season's lead in five (bench/README.md)."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedEpisode:
    """One generated episode: its source files, ground truth and imported folder."""

    name: str
    folder: Path

    @property
    def video(self) -> Path:
        return self.folder / "episode.mp4"

    @property
    def subtitles(self) -> Path:
        return self.folder / "episode.srt"

    @property
    def truth(self) -> Path:
        return self.folder / "truth.csv"

    @property
    def imported(self) -> Path:
        """The importer's episode folder (``tasks.json``, media, ``features.npz``)."""
        record = json.loads((self.folder / READY).read_text())
        return self.folder / record["episode_dir"]


def episodes(preset: str, seed: int, *, cache: Path = CACHE) -> list[CachedEpisode]:
    """The episodes of one (preset, seed): one, or a season's several, built on first use."""
    folder = cache / f"{preset}-seed{seed}"
    if preset == "season":
        if not (folder / READY).is_file():
            from bench.make_episode import make_season

            made = make_season("season", seed=seed, out_dir=folder)
            for files in made:
                _import(files.video.parent, name=f"season-seed{seed}-{files.video.parent.name}")
            atomic_write_json(folder / READY, {"episodes": [f.video.parent.name for f in made]})
        names = json.loads((folder / READY).read_text())["episodes"]
        return [_import(folder / name, name=f"season-seed{seed}-{name}") for name in sorted(names)]
    return [_import(folder, name=f"{preset}-seed{seed}", preset=preset, seed=seed)]


def _import(
    folder: Path, *, name: str, preset: str | None = None, seed: int | None = None
) -> CachedEpisode:
    episode = CachedEpisode(name=name, folder=folder)
    if (folder / READY).is_file() and "episode_dir" in json.loads((folder / READY).read_text()):
        return episode
    from bench.make_episode import make_episode
    from ml_backend.features.extractor import FeatureExtractor
    from ml_backend.features.prepare import prepare_episode

    began = time.monotonic()
    if not episode.truth.is_file():
        if preset is None or seed is None:
            raise FileNotFoundError(f"{episode.truth}: season episode missing, delete {folder}")
        make_episode(preset, seed=seed, out_dir=folder)
    made_s = time.monotonic() - began
    extractor = FeatureExtractor.build(None, None)
    try:
        imported = prepare_episode(
            episode.video, folder / "import", episode.subtitles, None, extractor, overlap=False
        ).media
    finally:
        extractor.close()
    atomic_write_json(
        folder / READY,
        {
            "episode_dir": str(imported.episode_dir.relative_to(folder)),
            "generated_in_s": round(made_s, 1),
            "imported_in_s": round(time.monotonic() - began - made_s, 1),
        },
    )
    logger.info("built %s in %.0f s", name, time.monotonic() - began)
    return episode


def split(name: str) -> list[CachedEpisode]:
    """All episodes of a named split: ``evaluation``, ``training`` or ``all``."""
    chosen = {
        "evaluation": EVALUATION,
        "training": TRAINING,
        "all": TRAINING + EVALUATION,
    }[name]
    return [episode for preset, seed in chosen for episode in episodes(preset, seed)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.episode_cache", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--split", choices=("evaluation", "training", "all"), default="all")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for episode in split(args.split):
        print(f"{episode.name}: {episode.imported}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
