"""Import one episode: video + subtitles → clips, frames, tasks.json and a report.

The audio is decoded once and sliced; the frames come from one sequential decode
(DESIGN.md §6: per-clip processes and per-frame seeks are 10–20× slower). The two decodes run
side by side, one per core. A `MediaSink` (``sink=``) is given every clip and frame in memory
as its file is written, so that features are computed during the media pass, not after it by
reading everything back. Everything written is atomic, so an import that dies half-way
leaves the previous tasks.json and report readable, and re-running it is always safe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
from importers.subtitles import (
    ParsedSubtitles,
    SubtitleError,
    SubtitleLine,
    SubtitleOptions,
    find_subtitles_for,
    parse_subtitles,
)
from importers.tasks import LineMedia, MediaUrls, build_tasks, episode_id_for, line_id
from speaker_grouping.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
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
    sink: MediaSink | None = None,
) -> ImportResult:
    """Cut ``video`` into one task per dialogue line under ``out_dir/<episode_id>/``.

    sink : also given every clip and frame in memory as its file is written (see
        `importers.sink`), e.g. to compute features while the frame walk runs.

    Raises `MediaError` or `SubtitleError` (one line, naming the file) when a whole input is
    unusable; single bad cues are skipped and listed in the report instead. An exception
    raised by ``sink`` stops the media work and is raised here.
    """
    options = ImportOptions.coerce(options)
    video = Path(video)
    out_dir = Path(out_dir)
    subtitle_path = Path(subtitles) if subtitles is not None else find_subtitles_for(video)
    if subtitle_path is None:
        raise SubtitleError(
            f"{video}: no subtitles given and none found beside it "
            "(looked for the same name with .ass, .ssa, .srt or .vtt)"
        )
    info = probe_media(video)
    parsed = parse_subtitles(subtitle_path, options=options.subtitles, media_duration=info.duration)
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
        ids = {line.index: line_id(episode_id, line.index) for line in parsed.lines}
        sink.begin(episode_dir, ids, options.frames_per_line)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clips") as audio_worker:
        audio_done = audio_worker.submit(
            _write_clips, video, parsed.lines, media, episode_dir, options.clips, hook, sink
        )
        _write_frames(video, parsed.lines, media, episode_dir, options, hook, sink)
        audio_done.result()
    urls = MediaUrls(
        document_root=None if options.url_prefix else (options.document_root or out_dir),
        url_prefix=f"{options.url_prefix.rstrip('/')}/{episode_id}" if options.url_prefix else None,
    )
    tasks = build_tasks(episode_id, parsed.lines, media, out_dir=episode_dir, urls=urls)
    tasks_path = episode_dir / "tasks.json"
    report_path = episode_dir / "report.json"
    atomic_write_json(tasks_path, tasks)
    atomic_write_json(report_path, _report(video, info.duration, episode_id, parsed))
    atomic_write_text(episode_dir / "report.txt", "\n".join(parsed.report_lines()) + "\n")
    return ImportResult(episode_id, episode_dir, tasks_path, report_path, tasks, parsed)


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
    sink: MediaSink | None,
) -> None:
    audio = decode_audio(video, sample_rate=clip_options.sample_rate)
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
