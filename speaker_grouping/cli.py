"""The ``speaker-grouping`` command: parses arguments and calls into the packages.

Heavy modules are imported inside each command, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy modules load inside each command (see above)
    from importers.pipeline import ImportResult
    from importers.tracks import TrackChoice

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
    from foundation.label_studio import LabelStudioError
    from importers.media import MediaError
    from importers.subtitles import SubtitleError
    from ml_backend.features.base import ModelUnavailableError
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
    imp.add_argument(
        "episode",
        type=Path,
        nargs="+",
        help="the video (.mkv, .mp4, ...); several videos, folders of videos or globs ('s1/*.mkv') "
        "import a season, with one progress bar and a summary, skipping finished episodes",
    )
    imp.add_argument(
        "--subs",
        type=Path,
        help="subtitle file (default: one beside the video with its name, else the text "
        "subtitle track inside the video that a player would show)",
    )
    imp.add_argument("--out", type=Path, help="output folder (required unless --list-tracks)")
    _add_track_arguments(imp)
    imp.add_argument(
        "--frames-per-line",
        type=int,
        choices=(1, 3),
        default=1,
        help="frames per line: 1 (the midpoint) or 3 (at 25, 50 and 75 %% of the line)",
    )
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
    from speaker_grouping.commands.label_studio_options import add_api_key_option

    add_api_key_option(imp)
    imp.add_argument("--project", default="Speaker Grouping", help="project title for --push")
    imp.add_argument(
        "--no-features",
        action="store_true",
        help="cut media and write tasks only; compute features later with `features`",
    )
    from speaker_grouping.commands.features import add_model_arguments

    add_model_arguments(imp)
    _add_speech_arguments(imp)
    imp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    from speaker_grouping.commands.season import add_season_arguments

    add_season_arguments(imp)
    imp.set_defaults(run=_run_import)

    bench = commands.add_parser(
        "bench",
        help="benchmarks and benchmark episodes (see bench/README.md)",
        description="Benchmark tools; arguments after the tool name (--help too) go to the tool, "
        "so `speaker-grouping bench TOOL --help` shows that tool's options.",
        add_help=False,
    )
    # Our own -h: before the tool name it is bench's help; after it, the tool's (REMAINDER).
    bench.add_argument("-h", "--help", action="help", help="show this help message and exit")
    bench.add_argument("tool", choices=sorted(_BENCH_TOOLS), help="which benchmark tool")
    bench.add_argument("tool_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    bench.set_defaults(run=_run_bench)

    demo = commands.add_parser(
        "demo",
        help="local Label Studio with the bundled sample episode imported",
        description="Start Label Studio on 127.0.0.1, import the sample episode, wait for Ctrl-C.",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=Path("demo-data"),
        help="where the demo keeps Label Studio, the media and the backend state (reused)",
    )
    demo.add_argument(
        "--port",
        type=int,
        help="Label Studio port (default: $SG_DEMO_LABEL_STUDIO_PORT, else the last run's, "
        "kept in DATA_DIR/ports.json)",
    )
    demo.add_argument(
        "--backend-port",
        type=int,
        help="ML backend port (default: $SG_DEMO_BACKEND_PORT, else the last run's)",
    )
    demo.add_argument("--episode", type=Path, help="another episode instead of the sample")
    demo.add_argument("--subs", type=Path, help="its subtitles (default: found beside it)")
    demo.add_argument(
        "--check", action="store_true", help="verify every line became a task, then stop"
    )
    demo.set_defaults(run=_run_demo)

    for name, (module_name, summary) in _COMMAND_MODULES.items():
        _add_module_command(commands, name, module_name, summary)
    return parser


def _add_track_arguments(parser: argparse.ArgumentParser) -> None:
    """import's choice of the video's audio and subtitle tracks (importers/tracks.py)."""
    tracks = parser.add_argument_group(
        "tracks", "which of the video's audio and subtitle tracks to use; see --list-tracks"
    )
    tracks.add_argument(
        "--list-tracks",
        action="store_true",
        help="print the video's tracks and which ones the import would use, then exit",
    )
    audio = tracks.add_mutually_exclusive_group()
    audio.add_argument(
        "--audio-track",
        type=int,
        metavar="N",
        help="audio track by index as --list-tracks prints it (default: the default-flagged "
        "audio track, else the first decodable)",
    )
    audio.add_argument(
        "--audio-language",
        metavar="LANG",
        help="audio track by language, ISO 639-2 or 639-1 (jpn, eng, ja, en)",
    )
    subtitles = tracks.add_mutually_exclusive_group()
    subtitles.add_argument(
        "--subtitle-track",
        type=int,
        metavar="N",
        help="text subtitle track inside the video by index as --list-tracks prints it",
    )
    subtitles.add_argument(
        "--subtitle-language",
        metavar="LANG",
        help="text subtitle track inside the video by language (eng, en, ...); with several, "
        "full dialogue before signs/songs, then the default-flagged one",
    )


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
    "segmentation": "bench.bench_segmentation",
    "real-episodes": "bench.real_voices.__main__",
}


def _run_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(_BENCH_TOOLS[args.tool])
    return int(module.main(args.tool_args) or 0)


def _add_speech_arguments(imp: argparse.ArgumentParser) -> None:
    """Lines from detected speech, for episodes without subtitles (importers.speech_segments)."""
    from importers.speech_segments import SpeechSegmentOptions

    defaults = SpeechSegmentOptions()
    speech = imp.add_argument_group(
        "without subtitles",
        "cut lines from detected speech (silero-vad): tasks get empty text and the "
        "no_subtitles flag",
    )
    source = speech.add_mutually_exclusive_group()
    source.add_argument(
        "--no-subtitles",
        action="store_true",
        help="ignore any subtitles and cut lines from detected speech",
    )
    source.add_argument(
        "--fallback-to-speech",
        action="store_true",
        help="use the subtitles, but when none are given or found, cut lines from detected "
        "speech instead of failing",
    )
    speech.add_argument(
        "--vad-threshold",
        type=float,
        metavar="P",
        help=f"speech probability that starts speech (default {defaults.threshold}; speech "
        f"ends below {defaults.neg_threshold}, or 0.15 under P when P is given)",
    )
    speech.add_argument(
        "--min-pause",
        type=float,
        metavar="S",
        help=f"a pause of at least S seconds ends a line (default {defaults.min_pause_s})",
    )
    speech.add_argument(
        "--max-line",
        type=float,
        metavar="S",
        help=f"longest line in seconds; longer speech is split at its quietest point "
        f"(default {defaults.max_line_s})",
    )
    speech.add_argument(
        "--asr",
        metavar="ENGINE:PATH",
        help="fill each line's text with speech recognition, e.g. "
        "faster-whisper:/models/faster-whisper-small (a local CTranslate2 Whisper folder; "
        "needs speaker-grouping[asr]); only for lines cut from speech",
    )
    speech.add_argument(
        "--asr-language",
        metavar="CODE",
        help="language of the speech for --asr, e.g. ja (default: detected per line)",
    )


def _speech_options(args: argparse.Namespace) -> tuple[str, dict]:
    """The import's line source and speech segment options from the command line."""
    from importers.speech_segments import SpeechSegmentOptions

    if args.no_subtitles and args.subs:
        raise ValueError("--no-subtitles and --subs contradict each other; give one")
    if args.asr and not (args.no_subtitles or args.fallback_to_speech):
        raise ValueError(
            "--asr transcribes lines cut from speech: add --no-subtitles or --fallback-to-speech"
        )
    source = (
        "speech"
        if args.no_subtitles
        else "subtitles-or-speech"
        if args.fallback_to_speech
        else "subtitles"
    )
    speech: dict = {}
    if args.vad_threshold is not None:
        speech["threshold"] = args.vad_threshold
        speech["neg_threshold"] = max(0.01, round(args.vad_threshold - 0.15, 3))
    if args.min_pause is not None:
        speech["min_pause_s"] = args.min_pause
    if args.max_line is not None:
        if args.max_line <= 0:
            raise ValueError(f"--max-line must be > 0 seconds, got {args.max_line}")
        speech["max_line_s"] = args.max_line
        # A short cap needs short pieces: no piece may be forced under half the cap.
        speech["min_line_s"] = min(SpeechSegmentOptions().min_line_s, args.max_line / 2)
    return source, speech


def _run_import(args: argparse.Namespace) -> int:
    from importers.media import ClipOptions
    from importers.pipeline import ImportOptions
    from importers.speech_segments import SpeechSegmentOptions
    from importers.subtitles import SubtitleOptions
    from importers.tracks import TrackChoice
    from ml_backend.features.prepare import prepare_episode
    from speaker_grouping.progress import ProgressBars

    track_choice = TrackChoice(
        audio_track=args.audio_track,
        audio_language=args.audio_language,
        subtitle_track=args.subtitle_track,
        subtitle_language=args.subtitle_language,
    )
    if args.list_tracks:
        return _list_tracks(args.episode, args.subs, track_choice)
    if args.out is None:
        raise ValueError("import needs --out DIR (only --list-tracks does without)")
    if args.push and not args.api_key:
        raise ValueError("--push needs --api-key (or LABEL_STUDIO_API_KEY)")
    line_source, speech = _speech_options(args)
    options = ImportOptions(
        subtitles=SubtitleOptions(
            import_non_dialogue=args.import_non_dialogue, encoding=args.encoding
        ),
        clips=ClipOptions(pad_ms=args.pad_ms),
        frames_per_line=args.frames_per_line,
        max_frame_width=args.max_frame_width,
        url_prefix=args.url_prefix,
        document_root=args.document_root,
        tracks=track_choice,
        line_source=line_source,
        speech=SpeechSegmentOptions(**speech),
    )
    # A season (several videos, a folder, a glob, --ray) is speaker_grouping/commands/season.py;
    # above this line args.episode is a list of paths, below it the one video.
    from speaker_grouping.commands.season import is_season_import, run_season_import

    if is_season_import(args):
        return run_season_import(args, options)
    args.episode = args.episode[0]
    transcriber = None
    if args.asr:
        from importers.asr import load_transcriber

        transcriber = load_transcriber(args.asr, language=args.asr_language)  # fails before work
    extractor = None
    if not args.no_features:
        from ml_backend.features.extractor import FeatureExtractor

        # Model names are checked before any work; the features are computed during the
        # media work, from the clips and frames in memory.
        extractor = FeatureExtractor.build(args.voice_model, args.image_model)
    try:
        with ProgressBars(disable=True if args.quiet else None) as bars:
            done = prepare_episode(
                args.episode,
                args.out,
                args.subs,
                options,
                extractor,
                hook=bars,
                transcriber=transcriber,
            )
            result = done.media
            for problem in result.problems:
                print(problem, file=sys.stderr)
            print(_tracks_used(result))
            print(f"{len(result.tasks)} tasks written to {result.tasks_path}")
            print(f"report: {result.report_path}")
            if done.features is not None:
                print(done.features.summary())
    finally:
        if extractor is not None:
            extractor.close()
    if args.push:
        from speaker_grouping.commands.season import push_episode

        print(push_episode(args, result.tasks, result.episode_dir))
    return 0


def _list_tracks(inputs: Sequence[Path], subs: Path | None, choice: TrackChoice) -> int:
    """Every video's tracks (videos, folders or globs, as import takes them)."""
    from importers.season import find_videos
    from importers.tracks import list_tracks, track_table

    videos = find_videos(inputs)
    if subs is not None and len(videos) > 1:
        raise ValueError("--subs names one subtitle file, so it takes exactly one video")
    for number, video in enumerate(videos):
        if len(videos) > 1:
            print(("\n" if number else "") + f"{video}:")
        for row in track_table(video, list_tracks(video), given=subs, choice=choice):
            print(row)
    return 0


def _tracks_used(result: ImportResult) -> str:
    """One line: the audio track the clips come from and where the subtitles came from."""
    audio, source = result.audio_track, result.subtitle_source
    audio_text = f"audio track {audio.summary()}" if audio is not None else "no audio"
    if source is None:
        return f"{audio_text}; lines cut from detected speech"
    if source.track is not None:
        return f"{audio_text}; subtitles from track {source.track.summary()}"
    return f"{audio_text}; subtitles from {source.file}"


def _run_demo(args: argparse.Namespace) -> int:
    from speaker_grouping.demo import DOUBT_VIEW, DemoOptions, start_demo, summarise_predictions
    from speaker_grouping.progress import ProgressBars

    ports = {"port": args.port, "backend_port": args.backend_port}
    options = DemoOptions(data_dir=args.data_dir, subtitles=args.subs, **ports)
    if args.episode:
        options = DemoOptions(
            data_dir=args.data_dir, episode=args.episode, subtitles=args.subs, **ports
        )
    with ProgressBars() as bars:
        session = start_demo(options, hook=bars, on_progress=_say)
    try:
        studio = session.label_studio
        data_dir = options.data_dir.resolve()
        summary = summarise_predictions(session)
        lines = len(session.imported.tasks)
        print(f"Label Studio:  {studio.url}   (log: {studio.log_path})")
        print(f"login:         {studio.username} / {studio.password}")
        print(f"API token:     {studio.token}")
        print(f"project:       {session.project_url}   (view “{DOUBT_VIEW}”: lowest score first)")
        print(f"ML backend:    {session.backend.url}   (log: {session.backend.log_path})")
        print(f"data:          {data_dir}   (media: {session.imported.episode_dir})")
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


def _say(message: str) -> None:
    """A status line between progress bars (tqdm.write keeps bars intact)."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()


if __name__ == "__main__":
    sys.exit(main())
