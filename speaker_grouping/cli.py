"""The ``speaker-grouping`` command: parses arguments and calls into the packages.

Heavy modules are imported inside each command, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line for the user; --verbose shows the traceback
        if args.verbose or not _is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _is_user_error(error: Exception) -> bool:
    from importers.media import MediaError
    from importers.push import LabelStudioError
    from importers.subtitles import SubtitleError
    from ml_backend.features.embedder import ModelUnavailableError
    from speaker_grouping.local_label_studio import LabelStudioStartError

    user_errors = (
        MediaError,
        SubtitleError,
        LabelStudioError,
        LabelStudioStartError,
        ModelUnavailableError,
    )
    return isinstance(error, (*user_errors, FileNotFoundError, ValueError))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speaker-grouping",
        description="Find who speaks each subtitle line of an episode, with Label Studio.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = commands.add_parser(
        "import",
        help="video + subtitles → clips, frames and Label Studio tasks",
        description="Cut an episode into one Label Studio task per spoken subtitle line.",
    )
    imp.add_argument("episode", type=Path, help="the video (.mkv, .mp4, ...)")
    imp.add_argument(
        "--subs", type=Path, help="subtitle file (default: found beside the video by name)"
    )
    imp.add_argument("--out", type=Path, required=True, help="output folder")
    imp.add_argument("--frames-per-line", type=int, choices=(1, 3), default=1)
    imp.add_argument("--pad-ms", type=int, default=150, help="audio padding around each line")
    imp.add_argument("--max-frame-width", type=int, default=1280, help="downscale wider frames")
    imp.add_argument("--encoding", help="subtitle encoding (default: detected)")
    imp.add_argument(
        "--import-non-dialogue",
        action="store_true",
        help="also import sign/song lines (flagged non_dialogue) instead of leaving them out",
    )
    where = imp.add_mutually_exclusive_group()
    where.add_argument(
        "--document-root",
        type=Path,
        help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (default: --out); media URLs are "
        "/data/local-files/?d=<path under it>",
    )
    where.add_argument("--url-prefix", help="serve media from this URL prefix instead")
    imp.add_argument("--push", metavar="URL", help="also import the tasks into Label Studio here")
    imp.add_argument(
        "--api-key",
        default=os.environ.get("LABEL_STUDIO_API_KEY"),
        help="Label Studio API token (default: $LABEL_STUDIO_API_KEY)",
    )
    imp.add_argument("--project", default="Speaker Grouping", help="project title for --push")
    imp.add_argument(
        "--no-features",
        action="store_true",
        help="cut media and write tasks only; compute features later with `features`",
    )
    from speaker_grouping.commands.features import add_model_arguments

    add_model_arguments(imp)
    imp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    imp.set_defaults(run=_run_import)

    bench = commands.add_parser(
        "bench",
        help="benchmarks and benchmark episodes (see bench/README.md)",
        description="Benchmark tools; arguments after the tool name (--help too) go to the tool.",
        add_help=False,
    )
    bench.add_argument("tool", choices=sorted(_BENCH_TOOLS), help="which benchmark tool")
    bench.add_argument("tool_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    bench.set_defaults(run=_run_bench)

    demo = commands.add_parser(
        "demo",
        help="local Label Studio with the bundled sample episode imported",
        description="Start Label Studio on 127.0.0.1, import the sample episode, wait for Ctrl-C.",
    )
    demo.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    demo.add_argument("--port", type=int, help="Label Studio port (default: a free one)")
    demo.add_argument("--episode", type=Path, help="another episode instead of the sample")
    demo.add_argument("--subs", type=Path, help="its subtitles (default: found beside it)")
    demo.add_argument(
        "--check", action="store_true", help="verify every line became a task, then stop"
    )
    demo.set_defaults(run=_run_demo)

    for name, (module_name, summary) in _COMMAND_MODULES.items():
        _add_module_command(commands, name, module_name, summary)
    return parser


_COMMAND_MODULES: dict[str, tuple[str, str]] = {
    # command name: (module with add_arguments(parser) and run(args) -> int, one-line help)
    "features": (
        "speaker_grouping.commands.features",
        "compute (or bring up to date) the features of imported episode folders",
    ),
    "serve": ("speaker_grouping.commands.serve", "run the ML backend Label Studio talks to"),
    "report": (
        "speaker_grouping.commands.report",
        "a project's operation log: accepted and corrected lines, as a table and a chart",
    ),
    "group": (
        "speaker_grouping.commands.group",
        "offline: episode(s) + subtitles → speaker-tagged CSV and subtitles, no Label Studio",
    ),
    "eval": ("speaker_grouping.commands.eval", "score predicted speakers against ground truth"),
    "export": (
        "speaker_grouping.commands.export",
        "Label Studio project → speaker-tagged SRT/ASS, CSV, per-speaker clips",
    ),
}
"""Commands that live in a module of their own, so that each stays small and the parser
only imports the module (not its heavy dependencies) to build ``--help``."""


def _add_module_command(
    commands: argparse._SubParsersAction, name: str, module_name: str, summary: str
) -> None:
    import importlib

    module = importlib.import_module(module_name)
    parser = commands.add_parser(
        name, help=summary, description=(module.__doc__ or summary).split("\n")[0]
    )
    module.add_arguments(parser)
    parser.set_defaults(run=module.run)


_BENCH_TOOLS = {
    "make-episode": "bench.make_episode",
    "voice-accuracy": "bench.voice_accuracy",
    "import-speed": "bench.bench_import",
    "quality": "bench.bench_quality",
    "loop": "bench.bench_loop",
    "latency": "bench.bench_latency",
}


def _run_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(_BENCH_TOOLS[args.tool])
    return int(module.main(args.tool_args) or 0)


def _run_import(args: argparse.Namespace) -> int:
    from importers.media import ClipOptions
    from importers.pipeline import ImportOptions
    from importers.subtitles import SubtitleOptions
    from speaker_grouping.episode_import import import_with_features
    from speaker_grouping.progress import ProgressBars

    if args.push and not args.api_key:
        raise ValueError("--push needs --api-key (or LABEL_STUDIO_API_KEY)")
    options = ImportOptions(
        subtitles=SubtitleOptions(
            import_non_dialogue=args.import_non_dialogue, encoding=args.encoding
        ),
        clips=ClipOptions(pad_ms=args.pad_ms),
        frames_per_line=args.frames_per_line,
        max_frame_width=args.max_frame_width,
        url_prefix=args.url_prefix,
        document_root=args.document_root,
    )
    extractor = None
    if not args.no_features:
        from speaker_grouping.commands.features import FeatureExtractor

        # Model names are checked before any work; the features are computed during the
        # media work, from the clips and frames in memory.
        extractor = FeatureExtractor.build(args.voice_model, args.image_model)
    try:
        with ProgressBars(disable=True if args.quiet else None) as bars:
            done = import_with_features(
                args.episode, args.out, args.subs, options, extractor, hook=bars
            )
            result = done.media
            for problem in result.problems:
                print(problem, file=sys.stderr)
            print(f"{len(result.tasks)} tasks written to {result.tasks_path}")
            print(f"report: {result.report_path}")
            if done.features is not None:
                print(done.features.summary())
    finally:
        if extractor is not None:
            extractor.close()
    if args.push:
        from importers.push import push_tasks

        pushed = push_tasks(
            result.tasks,
            url=args.push,
            api_key=args.api_key,
            project=args.project,
            document_root=(args.document_root or args.out) if not args.url_prefix else None,
            media_dir=result.episode_dir if not args.url_prefix else None,
        )
        print(
            f"Label Studio project {pushed.project_id}: {pushed.tasks_created} tasks created, "
            f"{pushed.tasks_already_present} already there"
        )
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from speaker_grouping.demo import DOUBT_VIEW, DemoOptions, start_demo, summarise_predictions
    from speaker_grouping.progress import ProgressBars

    options = DemoOptions(data_dir=args.data_dir, port=args.port, subtitles=args.subs)
    if args.episode:
        options = DemoOptions(
            data_dir=args.data_dir, port=args.port, episode=args.episode, subtitles=args.subs
        )
    with ProgressBars() as bars:
        session = start_demo(options, hook=bars)
    try:
        studio = session.label_studio
        summary = summarise_predictions(session)
        lines = len(session.imported.tasks)
        print(f"Label Studio:  {studio.url}   (log: {studio.log_path})")
        print(f"login:         {studio.username} / {studio.password}")
        print(f"API token:     {studio.token}")
        print(f"project:       {session.project_url}   (view “{DOUBT_VIEW}”: lowest score first)")
        print(f"ML backend:    {session.backend.url}   (log: {session.backend.log_path})")
        print(
            f"episode:       {session.imported.episode_id}: {lines} lines, "
            f"{len(session.imported.subtitles.skipped)} cues skipped; {summary.tasks} tasks in "
            f"the project ({session.pushed.tasks_created} new), {summary.predicted} with a "
            "proposed speaker"
        )
        print("proposed:      " + ", ".join(f"{n} ×{c}" for n, c in summary.speakers.items()))
        print("most doubtful lines (fix these first):")
        for score, index, speaker, text in summary.doubtful:
            print(f"  {score:5.2f}  #{index:<4} {speaker:<12} {text[:60]}")
        if args.check:
            problems = []
            if summary.tasks != lines:
                problems.append(f"{summary.tasks} tasks in Label Studio, {lines} lines imported")
            if summary.predicted != summary.tasks:
                problems.append(f"{summary.tasks - summary.predicted} tasks have no prediction")
            if problems:
                print("check failed: " + "; ".join(problems), file=sys.stderr)
                return 1
            print("check passed: every line is a task, and every task has a proposed speaker")
            return 0
        print("Press Ctrl-C to stop.")
        _wait_for_interrupt()
        return 0
    finally:
        session.stop()


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()


if __name__ == "__main__":
    sys.exit(main())
