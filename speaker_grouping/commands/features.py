"""Compute the voice, image and quality features of imported episode folders.

Each folder made by ``speaker-grouping import`` (it holds ``tasks.json``, ``audio/`` and
``frames/``) gets, or brings up to date, its ``features.npz``. A folder holding several such
folders (an import's ``--out``) does all of them. Only lines whose clip or frames changed, or
whose model changed, are computed again: a second run over the same folders does no work.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from foundation.layout import TASKS_FILE, is_imported
from ml_backend.features.extractor import (  # noqa: F401 (re-exported for callers)
    COMPUTED_STEPS,
    ExtractionReport,
    FeatureExtractor,
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folders",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="an imported episode folder (with tasks.json), or a folder holding several",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--batch-size", type=int, default=32, help="clips or frames per encoder call"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--voice-model`` and ``--image-model``, shared with ``import``."""
    parser.add_argument(
        "--voice-model",
        metavar="NAME",
        help="voice embedder: resemblyzer, ecapa, ecapa:<hub id or folder>, anime-ecapa, "
        "anime-ecapa:va, anime-ecapa:<folder or weights file> "
        "(default: $SG_VOICE_MODEL, else resemblyzer)",
    )
    parser.add_argument(
        "--image-model",
        metavar="NAME",
        help="image embedder: anime-colour, clip, clip:<arch>/<tag>, clip:<checkpoint> "
        "(default: $SG_IMAGE_MODEL, else anime-colour)",
    )


def run(args: argparse.Namespace) -> int:
    from speaker_grouping.progress import ProgressBars

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    folders = episode_folders(args.folders)

    extractor = FeatureExtractor.build(args.voice_model, args.image_model)
    # No loading ahead here: a run over folders that are up to date loads no model at all.
    try:
        with ProgressBars(disable=True if args.quiet else None) as bars:
            for folder in folders:
                done = extractor.extract(folder, batch_size=args.batch_size, hook=bars)
                print(done.summary())
    finally:
        extractor.close()
    return 0


def episode_folders(paths: Sequence[Path]) -> list[Path]:
    """The imported episode folders ``paths`` name: each one itself, or the ones directly in it.

    Raises FileNotFoundError naming a path that is neither.
    """
    folders: list[Path] = []
    for path in paths:
        if is_imported(path):
            folders.append(path)
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder")
        inside = sorted(child for child in path.iterdir() if is_imported(child))
        if not inside:
            raise FileNotFoundError(
                f"{path}: no {TASKS_FILE} in it or in its folders; import the episode first"
            )
        folders += inside
    return list(dict.fromkeys(folders))
