"""``speaker-grouping import`` over many episodes: a season, serially or on Ray.

The ``import`` command hands over here when it is given more than one video, a folder, a glob
or ``--ray``; one video file keeps the single-episode path of ``cli.py`` and its exact output.
Planning, resume and the summary live in `importers.season`, the per-episode work in
`speaker_grouping.season_worker`, Ray in `importers.season_ray`; this module only wires them to
the command line and draws the overall progress bar.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from foundation.layout import tasks_path

if TYPE_CHECKING:
    from importers.pipeline import ImportOptions
    from importers.season import EpisodeOutcome, EpisodeRunner, SeasonSummary


def add_season_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray``, ``--workers`` and ``--force`` of ``import``."""
    parser.add_argument(
        "--ray",
        metavar="local|auto|ADDRESS",
        help="import the episodes on Ray workers: 'local' starts a private Ray on this machine "
        "(127.0.0.1 only), 'auto' joins the cluster this machine is part of, HOST:6379 or "
        "ray://HOST:10001 joins that head; the output folder must be shared by all workers",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="Ray workers, each keeping its models loaded (default: 2 with --ray local, one "
        "per CPU of the cluster otherwise)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-import episodes already imported with the same file and settings "
        "(they are skipped otherwise)",
    )


def is_season_import(args: argparse.Namespace) -> bool:
    """Several videos, a folder, a glob or Ray; one existing (or plainly missing) file is not."""
    if len(args.episode) > 1 or args.ray:
        return True
    only = args.episode[0]
    return only.is_dir() or (not only.exists() and glob.has_magic(str(only)))


def run_season_import(args: argparse.Namespace, options: ImportOptions) -> int:
    """Exit 0 when every episode imported or was already done, 1 when any failed."""
    from importers.season import SerialRunner, find_videos, import_season, plan_season
    from speaker_grouping.season_worker import (
        SeasonJob,
        build_extractor,
        season_settings,
        worker_factory,
    )

    if args.workers is not None and not args.ray:
        raise ValueError("--workers needs --ray (without it episodes import one after another)")
    videos = find_videos(args.episode)
    if args.subs is not None and len(videos) > 1:
        raise ValueError(
            f"--subs names one subtitle file, so it takes one video, not {len(videos)}; "
            "put each episode's subtitles beside it with the same name instead"
        )
    job = SeasonJob(
        out_dir=args.out,
        options=options,
        subtitles=args.subs,
        features=not args.no_features,
        voice_model=args.voice_model,
        image_model=args.image_model,
        asr=args.asr,
        asr_language=args.asr_language,
    )
    if args.asr:  # a bad model path is one line before any work, as for one episode
        from importers.asr import load_transcriber

        load_transcriber(args.asr, language=args.asr_language)
    extractor = build_extractor(job)  # model names are checked before any work
    try:
        settings = season_settings(options, extractor, args.asr)
    finally:
        if extractor is not None:
            extractor.close()
    job = dataclasses.replace(job, settings=settings)
    plan = plan_season(
        videos, out_dir=args.out, settings=settings, subtitles=args.subs, force=args.force
    )
    runner: EpisodeRunner
    if args.ray:
        from importers.season_ray import RayRunner

        runner = RayRunner(
            worker_factory(job), address=args.ray, workers=args.workers, verbose=args.verbose
        )
    else:
        runner = SerialRunner(worker_factory(job))
    try:
        with SeasonBar(len(videos), disable=True if args.quiet else None) as bar:
            summary = import_season(
                plan, runner, hook=bar, on_start=bar.started, on_outcome=bar.finished
            )
    finally:
        runner.close()
    if args.push:
        _push(args, summary)
    for line in summary.lines():
        print(line)
    return summary.exit_code


class SeasonBar:
    """One bar for the season: episodes done of all, with the episode that started last.

    A `foundation.hook.Hook` for step ``episodes``; each finished episode's line is
    written above the bar so that the bar stays at the bottom.
    """

    def __init__(self, total: int, *, disable: bool | None = None) -> None:
        # tqdm's own rule: disable=None hides the bar when stderr is not a terminal.
        self._bar = tqdm(total=total, desc="episodes", unit="ep", file=sys.stderr, disable=disable)

    def __call__(self, step: str, *, completed: int, total: int) -> None:
        self._bar.total = total
        self._bar.update(completed - self._bar.n)

    def started(self, video: Path) -> None:
        self._bar.set_postfix_str(video.name, refresh=True)

    def finished(self, outcome: EpisodeOutcome) -> None:
        failed = outcome.status == "failed"
        self._bar.write(outcome.line(), file=sys.stderr if failed else sys.stdout)

    def __enter__(self) -> SeasonBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._bar.close()


def _push(args: argparse.Namespace, summary: SeasonSummary) -> None:
    """Push every imported or already finished episode; Label Studio keeps what it has."""
    for outcome in summary.outcomes:
        if outcome.status == "failed" or outcome.episode_dir is None or not outcome.tasks:
            continue
        tasks = json.loads(tasks_path(outcome.episode_dir).read_text(encoding="utf-8"))
        print(f"{outcome.episode_id}: {push_episode(args, tasks, outcome.episode_dir)}")


def push_episode(args: argparse.Namespace, tasks: list[dict], episode_dir: Path) -> str:
    """``import --push`` for one imported episode folder; the line that says what happened."""
    from importers.push import push_tasks

    pushed = push_tasks(
        tasks,
        url=args.push,
        api_key=args.api_key,
        project=args.project,
        document_root=(args.document_root or args.out) if not args.url_prefix else None,
        media_dir=episode_dir if not args.url_prefix else None,
    )
    return (
        f"Label Studio project {pushed.project_id}: {pushed.tasks_created} tasks created, "
        f"{pushed.tasks_already_present} already there"
    )
