"""What every media module shares: opening a file, choosing its streams, reading packets.

Every failure becomes a `MediaError` with one line naming the file and the reason, FFmpeg's own
last logged error included where it has one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import av.logging

logger = logging.getLogger(__name__)

MAX_BAD_PACKETS = 50
"""Corrupt packets tolerated (logged and skipped) before a file is declared unreadable."""


class MediaError(RuntimeError):
    """A media file cannot be used; ``str(error)`` is one line: ``"<file>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")


_ffmpeg_log_lock = threading.Lock()


@contextmanager
def _ffmpeg_error_details() -> Iterator[None]:
    """Record FFmpeg's last logged error while opening, so MediaError can quote its reason.

    PyAV leaves FFmpeg's log off by default; then an unreadable MP4 only says "Invalid data
    found when processing input", while FFmpeg's log says "moov atom not found". Level
    PANIC keeps the last error for the exception without printing anything. It is switched
    on only around ``av.open``: PyAV warns that its log callback, which takes the GIL from
    FFmpeg's threads, does not mix well with threaded decoding. An application that set
    its own level keeps it.
    """
    with _ffmpeg_log_lock:
        switch = av.logging.get_level() is None
        if switch:
            av.logging.set_level(av.logging.PANIC)
        try:
            yield
        finally:
            if switch:
                av.logging.set_level(None)


def ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's message plus its last logged error line, e.g. "...: moov atom not found"."""
    if not isinstance(error, av.FFmpegError):
        return str(error)
    reason = error.strerror or str(error)
    log = getattr(error, "log", None)  # (level, component, message) of FFmpeg's last error
    if isinstance(log, tuple) and len(log) == 3 and isinstance(log[2], str):
        _level, component, message = log
        detail = message.strip()
        if detail and detail not in reason:
            reason = f"{reason} ({component}: {detail})" if component else f"{reason} ({detail})"
    return reason


@contextmanager
def open_media(path: str | Path) -> Iterator[av.container.InputContainer]:
    """Open a media file for reading, turning every failure into a one-line MediaError."""
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "no such file")
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    try:
        with _ffmpeg_error_details():
            container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise MediaError(path, f"cannot open as media: {ffmpeg_reason(error)}") from error
    try:
        yield container
    finally:
        container.close()


def decodable(stream: av.stream.Stream) -> bool:
    context = stream.codec_context
    return context is not None and context.codec is not None and context.codec.is_decoder


def codec_name(stream: av.stream.Stream) -> str:
    """The codec's name even when this FFmpeg has no decoder for it."""
    context = stream.codec_context
    if context is not None and context.name:
        return context.name
    return "unknown"  # FFmpeg does not even know the codec's name


def pick_stream(streams: Sequence[av.stream.Stream]) -> av.stream.Stream | None:
    """The stream a player would play: the default-flagged one, else the first."""
    if not streams:
        return None
    for stream in streams:
        if stream.disposition & av.stream.Disposition.default:
            return stream
    return streams[0]


def video_stream(container: av.container.InputContainer) -> av.stream.Stream | None:
    """The picture track, ignoring cover art that MP4/MKV files store as one-frame video."""
    moving = [
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    return pick_stream(moving)


def audio_stream(
    path: Path, container: av.container.InputContainer, index: int | None = None
) -> av.stream.Stream | None:
    """Stream ``index`` (it must be audio), else what a player plays: the default-flagged
    audio track this FFmpeg can decode, else the first decodable one, else the first (whose
    codec error then names the problem). `importers.tracks` chooses by language the same way.
    """
    if index is not None:
        if not 0 <= index < len(container.streams) or container.streams[index].type != "audio":
            audio = ", ".join(str(stream.index) for stream in container.streams.audio) or "none"
            raise MediaError(path, f"stream {index} is not an audio track (audio tracks: {audio})")
        return container.streams[index]
    streams = list(container.streams.audio)
    return pick_stream([stream for stream in streams if decodable(stream)]) or pick_stream(streams)


def require_decoder(path: Path, stream: av.stream.Stream, kind: str) -> None:
    if not decodable(stream):
        raise MediaError(
            path,
            f"unsupported {kind} codec {codec_name(stream)!r}: "
            "the bundled FFmpeg has no decoder for it",
        )


def timeline_origin(container: av.container.InputContainer) -> float:
    """Seconds at which the file's timeline starts; subtitles count from here."""
    start = container.start_time
    return start / av.time_base if start is not None else 0.0


def media_duration(
    container: av.container.InputContainer, streams: Sequence[av.stream.Stream | None]
) -> float:
    """Container duration, else the longest stream's; 0.0 when the file does not say."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    spans = [
        float(stream.duration * stream.time_base)
        for stream in streams
        if stream is not None and stream.duration and stream.time_base
    ]
    return max(spans, default=0.0)


def frame_seconds(frame: av.frame.Frame, time_base: Fraction | None, origin: float) -> float | None:
    """A decoded frame's time on the file's timeline, or None when it has no timestamp.

    From ``frame.pts`` in the stream's time base (``stream.time_base``, read once per stream
    by the caller), not ``frame.time``: PyAV gives frames that come out of the final flush
    (``decode(None)``) no time base, so their ``time`` is NaN, and the last few frames of a
    video with B-frames come out of that flush. Integer true division is correctly rounded,
    so this is ``float(pts * time_base)`` without building three Fractions per frame, which
    was a large share of the audio decode's CPU
    (bench/README.md, "Measurements behind code choices").
    """
    if frame.pts is None or not time_base:
        return None
    return frame.pts * time_base.numerator / time_base.denominator - origin


def discard_other_streams(container: av.container.InputContainer, keep: av.stream.Stream) -> None:
    """Let the demuxer drop other streams' packets early instead of handing them to us."""
    for stream in container.streams:
        if stream.index != keep.index:
            stream.discard = av.stream.Discard.all


def demux(
    path: Path, container: av.container.InputContainer, stream: av.stream.Stream
) -> Iterator[av.Packet]:
    """Packets of one stream, ending cleanly at a damaged tail instead of raising mid-file."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as error:
            logger.warning("%s: stopped reading at a damaged spot: %s", path, ffmpeg_reason(error))
            return
        if packet.size:  # skip the empty end-of-stream packet: callers flush explicitly
            yield packet


def count_bad_packet(path: Path, error: BaseException, bad_packets: int) -> int:
    bad_packets += 1
    if bad_packets > MAX_BAD_PACKETS:
        raise MediaError(
            path, f"too many undecodable packets ({bad_packets}): {ffmpeg_reason(error)}"
        ) from error
    logger.warning("%s: skipped an undecodable packet: %s", path, ffmpeg_reason(error))
    return bad_packets
