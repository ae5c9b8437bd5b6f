"""How far do the embeddings themselves go? Leave-one-out 1-NN accuracy in several spaces.

The grouping can only be as sure as its evidence. This measures that evidence on the imported
benchmark episodes, with the vectors the product uses (``features.npz``), before any clustering:
each line takes the character of its most similar other line, and the share taken right is
reported per space:

- ``voice``: the stored voice vectors as they are;
- ``voice centred``: minus the episode's mean (what the name model uses);
- ``voice adapted``: centred, then whitened by the within-cluster spread of our own cold-start
  clusters of 3 or more lines (a label-free adaptation the grouping could do by itself);
- ``voice oracle``: centred, then whitened by the within-speaker spread of the *true*
  speakers: an upper bound for any linear re-weighting of these vectors, optimistic since the
  line's own label is in it;
- ``image``, ``voice + image``: centred image vectors, and both modalities averaged.

Lines of a character who speaks only once cannot have a right neighbour and are not scored.

Usage: ``python -m bench.ceiling [--episodes hard-seed1 ...] [--out bench/results/ceiling.json]``;
``--real-voices evaluation`` measures the real-voice episodes (:mod:`bench.real_voices`) instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.atomic import atomic_write_json
from ml_backend.grouping.knn_graph import ABSENT, knn
from ml_backend.grouping.name_model import centred, whitened

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results" / "ceiling.json"
REAL_RESULTS = RESULTS.with_name("real_voices_ceiling.json")
ADAPT_MIN_CLUSTER = 3
"""Smallest cold-start cluster that counts as one pseudo-speaker for ``voice adapted``."""
SPACES = ("voice", "voice centred", "voice adapted", "voice oracle", "image", "voice + image")


def nn_accuracy(vectors: np.ndarray, codes: np.ndarray) -> float:
    """Share of scorable lines whose most similar other line has the same code.

    vectors : (n, d) float32 unit rows (zero = no vector, never right); codes : (n,) int.
    A line is scorable when its code occurs at least twice. NaN when none is.
    """
    counts = np.bincount(codes)
    scorable = counts[codes] >= 2
    if not scorable.any():
        return float("nan")
    nearest = knn(vectors, 1)[0][:, 0]
    right = (nearest != ABSENT) & (codes[np.maximum(nearest, 0)] == codes)
    return float(right[scorable].mean())


def spaces(
    voice: np.ndarray,
    image: np.ndarray | None,
    episode: np.ndarray,
    codes: np.ndarray,
    clusters: np.ndarray,
) -> dict[str, np.ndarray]:
    """The vectors of each space in `SPACES` (``image`` ones only with an image model).

    clusters : (n,) our cold-start cluster per line, -1 unassigned.
    """
    centred_voice = centred(voice, episode)
    _, inverse, size = np.unique(clusters, return_inverse=True, return_counts=True)
    rows = np.flatnonzero((clusters >= 0) & (size[inverse.reshape(-1)] >= ADAPT_MIN_CLUSTER))
    pseudo_codes = np.unique(clusters[rows], return_inverse=True)[1].reshape(-1)
    out = {
        "voice": voice.astype(np.float32),
        "voice centred": centred_voice,
        "voice adapted": whitened(centred_voice, rows, pseudo_codes),
        "voice oracle": whitened(centred_voice, np.arange(len(codes)), codes),
    }
    if image is not None:
        centred_image = centred(image, episode)
        out["image"] = centred_image
        both = np.hstack([centred_voice, centred_image]) / np.sqrt(2.0)
        norm = np.linalg.norm(both, axis=1, keepdims=True)
        out["voice + image"] = np.where(norm > 1e-9, both / np.maximum(norm, 1e-9), 0.0)
    return out


def measure(names: Sequence[str]) -> list[dict]:
    """One row per built single-episode evaluation set (a season is several episodes)."""
    from bench.episode_cache import CACHE, EVALUATION, READY, episodes

    chosen = []
    for preset, seed in EVALUATION:
        name = f"{preset}-seed{seed}"
        if preset == "season" or (names and name not in names):
            continue
        if not (CACHE / name / READY).is_file():
            logger.warning("%s is not built; skipped (python -m bench.episode_cache)", name)
            continue
        chosen.append(episodes(preset, seed)[0])
    return measure_episodes(chosen)


def measure_episodes(cached: Sequence) -> list[dict]:
    """One row per imported episode (:class:`bench.episode_cache.CachedEpisode`)."""
    from bench.train_priors import read_episode
    from ml_backend.grouping import SpeakerGrouper

    rows = []
    for one in cached:
        episode = read_episode(one.name, one.folder, one.imported)
        proposals = SpeakerGrouper().propose(episode.lines).proposals
        clusters = np.array([p.cluster for p in proposals])
        lines = episode.lines
        vectors = spaces(lines.voice, lines.image, episode.context.episode, episode.codes, clusters)
        row = {
            "episode": one.name,
            "lines": len(lines),
            "speakers": int(episode.codes.max()) + 1,
            "accuracy": {space: nn_accuracy(v, episode.codes) for space, v in vectors.items()},
        }
        logger.info("%s: %s", one.name, row["accuracy"])
        rows.append(row)
    return rows


def table(rows: Sequence[dict]) -> str:
    header = ["episode", "lines", "speakers", *SPACES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["episode"], str(row["lines"]), str(row["speakers"])]
        cells += [f"{row['accuracy'].get(name, float('nan')):.3f}" for name in SPACES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ceiling", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--episodes", nargs="*", default=[], help="names (default: every built one)"
    )
    parser.add_argument(
        "--real-voices",
        choices=("evaluation", "training", "all"),
        help="measure the real-voice episodes of this split instead (bench.real_voices; "
        "built, imported and embedded on first use)",
    )
    parser.add_argument("--out", type=Path, help=f"JSON results file (default {RESULTS.name})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.real_voices:
        from bench.real_voices.episodes import built_episodes

        rows = measure_episodes(list(built_episodes(args.real_voices, names=args.episodes)))
        out = args.out or REAL_RESULTS
    else:
        rows = measure(args.episodes)
        out = args.out or RESULTS
    if not rows:
        print(
            "no built evaluation episode; build them with python -m bench.episode_cache",
            file=sys.stderr,
        )
        return 1
    atomic_write_json(out, {"episodes": rows, "spaces": list(SPACES)})
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
