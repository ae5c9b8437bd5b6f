"""Build the real-voice benchmark episodes from Flight of the Amazon Queen's game data.

Usage: ``python -m bench.real_voices build --out DIR [--episodes NAME ...] [--max-lines N]``,
or ``python -m bench.real_voices prepare [--split evaluation]`` to build, import and embed them
under ``.cache/real_voices/episodes/`` for the benchmarks
(also ``speaker-grouping bench real-episodes build ...``). The game is downloaded once with
``apt-get download flight-of-the-amazon-queen`` into ``--cache``; its audio is never committed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.real_voices.episodes import CACHE, EPISODES, BuildOptions, build_episode, game_data
from bench.real_voices.queen import GameDataError, ResourceFile
from speaker_grouping.progress import ProgressBars


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.real_voices", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write episodes (mp4, srt, truth.csv, spec.json)")
    build.add_argument("--out", type=Path, required=True, help="folder; one sub-folder per episode")
    build.add_argument(
        "--episodes",
        nargs="*",
        default=[],
        choices=sorted(EPISODES),
        metavar="NAME",
        help=f"which episodes (default all: {', '.join(EPISODES)})",
    )
    build.add_argument(
        "--split",
        choices=("training", "evaluation", "all"),
        default="all",
        help="only the episodes of this split (default all)",
    )
    build.add_argument(
        "--max-lines", type=int, help="stop each episode after the dialogue reaching N lines"
    )
    build.add_argument("--seed", type=int, default=1, help="gaps, beds and pictures (default 1)")
    build.add_argument(
        "--cache", type=Path, default=CACHE, help=f"where the game is downloaded (default {CACHE})"
    )
    build.add_argument("-v", "--verbose", action="store_true", help="log each episode")
    prepare = commands.add_parser(
        "prepare",
        help="build, import and embed (default models) the episodes under the cache, for the "
        "benchmarks (python -m bench.ceiling --real-voices ...)",
    )
    prepare.add_argument(
        "--split",
        choices=("training", "evaluation", "all"),
        default="all",
        help="which episodes (default all)",
    )
    args = parser.parse_args(argv)
    if args.command == "prepare":
        from bench.real_voices.episodes import built_episodes

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        try:
            for episode in built_episodes(args.split):
                print(f"{episode.name}: {episode.imported}", flush=True)
        except (GameDataError, RuntimeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    names = [
        name
        for name, definition in EPISODES.items()
        if (not args.episodes or name in args.episodes) and args.split in ("all", definition.split)
    ]
    began = time.monotonic()
    try:
        resources = ResourceFile(game_data(args.cache))
        with ProgressBars() as bars:
            for name in names:
                files = build_episode(
                    resources,
                    name,
                    args.out / name,
                    options=BuildOptions(max_lines=args.max_lines),
                    seed=args.seed,
                    hook=bars,
                )
                print(
                    f"{files.folder}: {files.lines} lines, {files.characters} characters, "
                    f"{files.duration_s / 60:.1f} min ({EPISODES[name].split})",
                    flush=True,
                )
    except (GameDataError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"done in {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
