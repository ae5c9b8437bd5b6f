"""Import one episode: video + subtitles → clips, frames, tasks.json and a report.

The audio is decoded once and sliced; the frames come from one sequential decode
(DESIGN.md §6: per-clip processes and per-frame seeks are 10–20× slower). The two decodes run
side by side, one per core. Everything written is atomic, so an import that dies half-way
leaves the previous tasks.json and report readable, and re-running it is always safe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from importers.media import ClipOptions, decode_audio, extract_frames, probe_media, slice_clip
from importers.media import write_wav as write_clip
from importers.subtitles import ParsedSubtitles, SubtitleLine, SubtitleOptions
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
from speaker_grouping.atomic import atomic_write_json, atomic_write_text
from speaker_grouping.options import coerce_options
from speaker_grouping.progress import Hook

logger = logging.getLogger(__name__)


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

    def __post_init__(self) -> None:
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
) -> ImportResult:
    """Cut ``video`` into one task per dialogue line under ``out_dir/<episode_id>/``.

    ``subtitles`` is a file; None takes a file beside the video, else the video's own text
    subtitle track (``options.tracks`` chooses tracks; see importers/tracks.py).

    Raises `MediaError` or `SubtitleError` (one line, naming the file) when a whole input is
    unusable; single bad cues are skipped and listed in the report instead.
    """
    options = ImportOptions.coerce(options)
    video = Path(video)
    out_dir = Path(out_dir)
    # Tracks: which audio track, and subtitles from --subs, beside the video or inside it.
    tracks = list_tracks(video)
    audio_track = choose_audio_track(video, tracks, options.tracks)
    audio_index = audio_track.index if audio_track is not None else None
    source = choose_subtitles(video, tracks, given=subtitles, choice=options.tracks)
    info = probe_media(video, audio_track=audio_index)
    parsed = read_subtitles(video, source, options=options.subtitles, media_duration=info.duration)
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
    with ThreadPoolExecutor(max_workers=1) as audio_worker:
        audio_done = audio_worker.submit(
            _write_clips, video, parsed.lines, media, episode_dir, options.clips, hook, audio_index
        )
        _write_frames(video, parsed.lines, media, episode_dir, options, hook)
        audio_done.result()
    urls = MediaUrls(
        document_root=None if options.url_prefix else (options.document_root or out_dir),
        url_prefix=f"{options.url_prefix.rstrip('/')}/{episode_id}" if options.url_prefix else None,
    )
    track_data = {"audio_track": audio_track.record() if audio_track is not None else None}
    tasks = build_tasks(
        episode_id, parsed.lines, media, out_dir=episode_dir, urls=urls, extra_data=track_data
    )
    tasks_path = episode_dir / "tasks.json"
    report_path = episode_dir / "report.json"
    report = _report(video, info.duration, episode_id, parsed)
    report.update(track_data, subtitle_track=source.record())
    atomic_write_json(tasks_path, tasks)
    atomic_write_json(report_path, report)
    atomic_write_text(episode_dir / "report.txt", "\n".join(parsed.report_lines()) + "\n")
    return ImportResult(
        episode_id, episode_dir, tasks_path, report_path, tasks, parsed, audio_track, source
    )


def _line_media(line: SubtitleLine, frames_per_line: int) -> LineMedia:
    stem = f"{line.index:04d}"
    if frames_per_line == 1:
        frames: tuple[Path, ...] = (Path("frames") / f"{stem}.jpg",)
    else:
        frames = tuple(
            Path("frames") / f"{stem}_{position}.jpg" for position in range(frames_per_line)
        )
    return LineMedia(audio=Path("audio") / f"{stem}.wav", frames=frames)


def _write_clips(
    video: Path,
    lines: list[SubtitleLine],
    media: list[LineMedia],
    episode_dir: Path,
    clip_options: ClipOptions,
    hook: Hook | None,
    audio_track: int | None = None,
) -> None:
    audio = decode_audio(video, sample_rate=clip_options.sample_rate, audio_track=audio_track)
    for done, (line, line_media) in enumerate(zip(lines, media, strict=True), start=1):
        clip = slice_clip(audio, line.start, line.end, options=clip_options)
        write_clip(episode_dir / line_media.audio, clip, clip_options.sample_rate)
        if hook is not None:
            hook("clips", completed=done, total=len(lines))


def _write_frames(
    video: Path,
    lines: list[SubtitleLine],
    media: list[LineMedia],
    episode_dir: Path,
    options: ImportOptions,
    hook: Hook | None,
) -> None:
    positions = FRAME_POSITIONS[options.frames_per_line]
    requests = [
        (line.start + fraction * (line.end - line.start), episode_dir / frame)
        for line, line_media in zip(lines, media, strict=True)
        for fraction, frame in zip(positions, line_media.frames, strict=True)
    ]

    def frames_hook(_step: str, *, completed: int, total: int) -> None:
        if hook is not None:
            hook("frames", completed=completed, total=total)

    extract_frames(
        video,
        requests,
        jpeg_quality=options.jpeg_quality,
        max_width=options.max_frame_width,
        hook=frames_hook,
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
