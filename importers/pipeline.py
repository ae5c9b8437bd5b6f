"""Import one episode: video + subtitles → clips, frames, tasks.json and a report.

The audio is decoded once and sliced; the frames come from one sequential decode
(docs/architecture.md §6: per-clip processes and per-frame seeks are an order of magnitude
slower). The two decodes run side by side, one per core. A `MediaSink` (``sink=``) is given
every clip and frame in memory as its file is written, so that features are computed during
the media pass, not after it by reading everything back. Everything written is atomic, so an
import that dies half-way leaves the previous tasks.json and report readable, and re-running
it is always safe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foundation.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from foundation.hook import Hook
from foundation.layout import (
    clip_file,
    frame_file,
    make_line_id,
    report_path,
    report_text_path,
    tasks_path,
)
from foundation.options import coerce_options
from importers.asr import Transcriber, transcribe_lines
from importers.media import (
    ClipOptions,
    decode_audio,
    extract_frames,
    from_pcm16,
    probe_media,
    slice_clip,
    to_pcm16,
    wav_bytes,
)
from importers.sink import MediaSink
from importers.speech_segments import SpeechSegmentOptions, speech_lines, speech_report
from importers.subtitles import ParsedSubtitles, SubtitleError, SubtitleLine, SubtitleOptions
from importers.tasks import LineMedia, MediaUrls, build_tasks, episode_id_for
from importers.tracks import (
    SubtitleSource,
    Track,
    TrackChoice,
    choose_audio_track,
    choose_subtitles,
    list_tracks,
    read_subtitles,
)

logger = logging.getLogger(__name__)


LINE_SOURCES = ("subtitles", "speech", "subtitles-or-speech")
"""Where lines come from: the subtitles (an error when there are none); detected speech, ignoring
any subtitles (``--no-subtitles``); or the subtitles, and detected speech only when none are
given or found (``--fallback-to-speech``)."""

FRAME_POSITIONS = {1: (0.5,), 3: (0.25, 0.5, 0.75)}
"""Where in a line its frames are taken, as fractions of the line: the midpoint is the frame
most likely to show the speaker; three frames survive a cut in the middle of a line."""


@dataclass(frozen=True)
class ImportOptions:
    subtitles: SubtitleOptions = field(default_factory=SubtitleOptions)
    clips: ClipOptions = field(default_factory=ClipOptions)
    frames_per_line: int = 1
    jpeg_quality: int = 85
    max_frame_width: int | None = 1280
    url_prefix: str | None = None
    """Media URLs as ``<url_prefix>/<episode>/audio/0001.wav``; when None, Label Studio
    local-files URLs relative to ``document_root``."""
    document_root: Path | None = None
    """Label Studio's LOCAL_FILES_DOCUMENT_ROOT; defaults to the import's output folder."""
    tracks: TrackChoice = field(default_factory=TrackChoice)
    """Which audio and subtitle track of the video to use (importers/tracks.py)."""
    line_source: str = "subtitles"
    """One of `LINE_SOURCES`."""
    speech: SpeechSegmentOptions = field(default_factory=SpeechSegmentOptions)
    """How detected speech is cut into lines, when lines come from speech."""

    def __post_init__(self) -> None:
        if self.line_source not in LINE_SOURCES:
            raise ValueError(f"line_source must be one of {LINE_SOURCES}, not {self.line_source!r}")
        if self.frames_per_line not in FRAME_POSITIONS:
            raise ValueError(
                f"frames_per_line must be one of {sorted(FRAME_POSITIONS)}, "
                f"not {self.frames_per_line}"
            )

    @classmethod
    def coerce(cls, options: ImportOptions | Mapping[str, Any] | None) -> ImportOptions:
        if isinstance(options, Mapping):
            options = dict(options)
            for name, nested, what in (
                ("subtitles", SubtitleOptions, "subtitle"),
                ("clips", ClipOptions, "clip"),
                ("tracks", TrackChoice, "track"),
                ("speech", SpeechSegmentOptions, "speech segment"),
            ):
                if name in options:
                    options[name] = coerce_options(nested, options[name], what=what)
        return coerce_options(cls, options, what="import")


@dataclass(frozen=True)
class ImportResult:
    episode_id: str
    episode_dir: Path
    tasks_path: Path
    report_path: Path
    tasks: list[dict]
    subtitles: ParsedSubtitles
    audio_track: Track | None = None
    subtitle_source: SubtitleSource | None = None

    @property
    def problems(self) -> list[str]:
        return self.subtitles.report_lines()


def import_episode(
    video: str | Path,
    *,
    out_dir: str | Path,
    subtitles: str | Path | None = None,
    options: ImportOptions | Mapping[str, Any] | None = None,
    hook: Hook | None = None,
    transcriber: Transcriber | None = None,
    sink: MediaSink | None = None,
) -> ImportResult:
    """Cut ``video`` into one task per dialogue line under ``out_dir/<episode_id>/``.

    ``subtitles`` is a file; None takes a file beside the video, else the video's own text
    subtitle track (``options.tracks`` chooses tracks; see importers/tracks.py). Lines come
    from detected speech instead when ``options.line_source`` says so (see `LINE_SOURCES`);
    then ``transcriber``, if given, fills their text.

    sink : also given every clip and frame in memory as its file is written (see
        `importers.sink`), e.g. to compute features while the frame walk runs.

    Raises `MediaError` or `SubtitleError` (one line, naming the file) when a whole input is
    unusable; single bad cues are skipped and listed in the report instead. An exception
    raised by ``sink`` stops the media work and is raised here.
    """
    options = ImportOptions.coerce(options)
    video = Path(video)
    out_dir = Path(out_dir)
    # Tracks: which audio track, and subtitles from --subs, beside the video or inside it.
    tracks = list_tracks(video)
    audio_track = choose_audio_track(video, tracks, options.tracks)
    audio_index = audio_track.index if audio_track is not None else None
    source = _subtitle_source(video, tracks, subtitles, options)
    info = probe_media(video, audio_track=audio_index)
    audio: np.ndarray | None = None
    speech: dict[str, Any] | None = None
    if source is None:
        audio, parsed, speech = _lines_from_speech(video, audio_index, options, transcriber, hook)
    else:
        parsed = read_subtitles(
            video, source, options=options.subtitles, media_duration=info.duration
        )
    episode_id = episode_id_for(video)
    episode_dir = out_dir / episode_id
    logger.info(
        "%s: %d dialogue lines, %d skipped, %d signs/songs left out",
        video,
        len(parsed.lines),
        len(parsed.skipped),
        len(parsed.non_dialogue),
    )
    media = [_line_media(line, options.frames_per_line) for line in parsed.lines]
    if sink is not None:
        ids = {line.index: make_line_id(episode_id, line.index) for line in parsed.lines}
        sink.begin(episode_dir, ids, options.frames_per_line)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clips") as audio_worker:
        audio_done = audio_worker.submit(
            _write_clips,
            video,
            parsed.lines,
            media,
            episode_dir,
            options.clips,
            hook,
            sink,
            audio_index,
            audio,
        )
        _write_frames(video, parsed.lines, media, episode_dir, options, hook, sink)
        audio_done.result()
    urls = MediaUrls(
        document_root=None if options.url_prefix else (options.document_root or out_dir),
        url_prefix=f"{options.url_prefix.rstrip('/')}/{episode_id}" if options.url_prefix else None,
    )
    track_data = {"audio_track": audio_track.record() if audio_track is not None else None}
    tasks = build_tasks(
        episode_id, parsed.lines, media, out_dir=episode_dir, urls=urls, extra_data=track_data
    )
    tasks_file = tasks_path(episode_dir)
    report_file = report_path(episode_dir)
    report = _report(video, info.duration, episode_id, parsed)
    report.update(track_data, subtitle_track=source.record() if source is not None else None)
    atomic_write_json(tasks_file, tasks)
    report_text = parsed.report_lines()
    if speech is not None:  # every line is flagged no_subtitles: say it once, not per line
        report.update(subtitles=None, encoding=None, flagged=[], speech=speech)
        report_text.insert(0, f"{video}: {len(parsed.lines)} lines cut from detected speech")
    atomic_write_json(report_file, report)
    atomic_write_text(report_text_path(episode_dir), "\n".join(report_text) + "\n")
    return ImportResult(
        episode_id, episode_dir, tasks_file, report_file, tasks, parsed, audio_track, source
    )


def _subtitle_source(
    video: Path,
    tracks: list[Track],
    subtitles: str | Path | None,
    options: ImportOptions,
) -> SubtitleSource | None:
    """Where the lines' subtitles come from; None when the lines come from detected speech.

    With ``subtitles-or-speech``, speech is the fallback only when nothing was asked for and
    nothing usable was found (no file beside the video, no readable embedded track): a file or
    track the user named that cannot be had is still an error.
    """
    if options.line_source == "speech":
        if subtitles is not None or options.tracks.picks_subtitles:
            raise ValueError("lines from speech (--no-subtitles) take no subtitle file or track")
        return None
    try:
        return choose_subtitles(video, tracks, given=subtitles, choice=options.tracks)
    except SubtitleError as error:
        asked = subtitles is not None or options.tracks.picks_subtitles
        if options.line_source != "subtitles-or-speech" or asked:
            raise
        logger.info("%s; cutting lines from detected speech instead", error)
        return None


def _lines_from_speech(
    video: Path,
    audio_track: int | None,
    options: ImportOptions,
    transcriber: Transcriber | None,
    hook: Hook | None,
) -> tuple[np.ndarray | None, ParsedSubtitles, dict[str, Any]]:
    """Lines cut from detected speech (text from ``transcriber``, else empty), and the report's
    record of how. The decoded audio (of ``audio_track``) is returned for the clips when it is
    at their rate."""
    vad_rate = 16000
    if hook is not None:  # decoding and the VAD take seconds: show that they started
        hook("speech", completed=0, total=1)
    audio = decode_audio(video, sample_rate=vad_rate, audio_track=audio_track)
    parsed = speech_lines(video, audio, sample_rate=vad_rate, options=options.speech)
    if hook is not None:
        hook("speech", completed=1, total=1)
    record = speech_report(options.speech)
    if transcriber is not None:
        parsed.lines = transcribe_lines(parsed.lines, audio, vad_rate, transcriber, hook=hook)
        record["asr"] = transcriber.name
    return (audio if options.clips.sample_rate == vad_rate else None), parsed, record


def _line_media(line: SubtitleLine, frames_per_line: int) -> LineMedia:
    stem = f"{line.index:04d}"
    if frames_per_line == 1:
        frames: tuple[Path, ...] = (Path(frame_file(stem)),)
    else:
        frames = tuple(
            Path(frame_file(f"{stem}_{position}")) for position in range(frames_per_line)
        )
    return LineMedia(audio=Path(clip_file(stem)), frames=frames)


def _write_clips(
    video: Path,
    lines: list[SubtitleLine],
    media: list[LineMedia],
    episode_dir: Path,
    clip_options: ClipOptions,
    hook: Hook | None,
    sink: MediaSink | None,
    audio_track: int | None = None,
    audio: np.ndarray | None = None,
) -> None:
    if audio is None:  # decoded already when lines came from speech
        audio = decode_audio(video, sample_rate=clip_options.sample_rate, audio_track=audio_track)
    for done, (line, line_media) in enumerate(zip(lines, media, strict=True), start=1):
        pcm = to_pcm16(slice_clip(audio, line.start, line.end, options=clip_options))
        data = wav_bytes(pcm, clip_options.sample_rate)
        atomic_write_bytes(episode_dir / line_media.audio, data)
        if sink is not None:
            sink.clip(line.index, from_pcm16(pcm), data)
        if hook is not None:
            hook("clips", completed=done, total=len(lines))


def _write_frames(
    video: Path,
    lines: list[SubtitleLine],
    media: list[LineMedia],
    episode_dir: Path,
    options: ImportOptions,
    hook: Hook | None,
    sink: MediaSink | None,
) -> None:
    positions = FRAME_POSITIONS[options.frames_per_line]
    requests = [
        (line.start + fraction * (line.end - line.start), episode_dir / frame)
        for line, line_media in zip(lines, media, strict=True)
        for fraction, frame in zip(positions, line_media.frames, strict=True)
    ]
    owners = [(line.index, position) for line in lines for position in range(len(positions))]

    def frames_hook(_step: str, *, completed: int, total: int) -> None:
        if hook is not None:
            hook("frames", completed=completed, total=total)

    def on_frame(request: int, rgb: np.ndarray, jpeg: bytes) -> None:
        index, position = owners[request]
        sink.frame(index, position, rgb, jpeg)  # type: ignore[union-attr]

    extract_frames(
        video,
        requests,
        jpeg_quality=options.jpeg_quality,
        max_width=options.max_frame_width,
        hook=frames_hook,
        on_frame=on_frame if sink is not None else None,
    )


def _report(
    video: Path, duration: float, episode_id: str, parsed: ParsedSubtitles
) -> dict[str, Any]:
    """What the import did with every cue, so nothing is dropped without a trace."""
    return {
        "episode": episode_id,
        "video": str(video),
        "duration": round(duration, 3),
        "subtitles": str(parsed.path),
        "format": parsed.format,
        "encoding": parsed.encoding,
        "lines": len(parsed.lines),
        "duplicates_merged": parsed.duplicates_merged,
        "skipped": [asdict(cue) for cue in parsed.skipped],
        "non_dialogue": [
            {"source_line": line.source_line, "style": line.style, "text": line.text}
            for line in parsed.non_dialogue
        ],
        "flagged": [
            {"index": line.index, "source_line": line.source_line, "flags": sorted(line.flags)}
            for line in parsed.lines
            if line.flags
        ],
    }
