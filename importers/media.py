"""One-pass media cutting: every line's clip and frames from one decode of the episode.

An episode has hundreds of subtitle lines. Starting FFmpeg once per line, or seeking once per
frame, costs a process start or a keyframe-to-target decode for every line; decoding the file
once and cutting in memory costs one decode in all (docs/architecture.md §6; the figures are in
bench/README.md, "Import speed"). So:

- :func:`decode_audio` decodes the whole audio track once to 16 kHz mono float32, and
  :func:`slice_clip` cuts each line's clip out of that array;
- :func:`extract_frames` walks the video stream once, in order, and keeps the frames the
  caller asked for. Between requests it skips decoding frames nothing depends on, and it
  seeks over stretches longer than a keyframe interval instead of decoding through them.

Everything decodes with PyAV's bundled FFmpeg, so no system ffmpeg is needed. Times are in
seconds from the start of the file's timeline (the container's start time), which is what
subtitle timestamps are relative to.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import wave
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate, chain
from pathlib import Path
from typing import NamedTuple

import av
import av.logging
import numpy as np
from PIL import Image

from foundation.atomic import atomic_write_bytes
from foundation.hook import Hook
from foundation.options import coerce_options

logger = logging.getLogger(__name__)


FRAME_TIME_TOLERANCE_S = 1e-3
"""A frame counts as "at" t when it is at most this early: Matroska rounds times to 1 ms."""

FULL_DECODE_MARGIN_S = 0.1
"""Decode every frame from this long before a requested time; skip unreferenced ones earlier.

Frames are skipped per packet, by the packet's own presentation time, so the frame at or after
a request is decoded whatever the reordering; the margin only covers timestamp jitter (1 ms in
Matroska). 0.5 s also decoded the unreferenced B-frames of the half second before every
request, for nothing: 0.1 s cut the benchmark episode's frame-pass CPU by about 13 % with
byte-identical JPEGs (bench/README.md, "Features during the media pass")."""

END_DECODE_MARGIN_S = 0.5
"""Everything this close to the end of the file is decoded in full: requests past the end get
the last frame, and the container's duration can run a little past the video's."""

SEEK_MIN_GAIN_S = 1.0
"""Seek only when it skips at least this much video; a seek restarts the decoder's threads."""

MAX_BAD_PACKETS = 50
"""Corrupt packets tolerated (logged and skipped) before a file is declared unreadable."""

PENDING_JPEGS = 6
"""Frames queued for JPEG encoding at once; bounds memory at a few raw frames."""


class MediaError(RuntimeError):
    """A media file cannot be used; ``str(error)`` is one line: ``"<file>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")


@dataclass(frozen=True)
class MediaInfo:
    """What the pipeline needs to know about a file before cutting it."""

    path: Path
    duration: float
    has_audio: bool
    has_video: bool
    width: int | None
    height: int | None
    fps: float | None
    audio_codec: str | None
    video_codec: str | None


@dataclass(frozen=True)
class ClipOptions:
    """How each line's clip is cut.

    pad_ms : silence-safe margin added before and after each line, because subtitle timing
    is loose and clipping the first syllable hurts speaker embeddings more than a little
    extra context.
    """

    pad_ms: int = 150
    sample_rate: int = 16000


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


def _ffmpeg_reason(error: BaseException) -> str:
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
def _open(path: str | Path) -> Iterator[av.container.InputContainer]:
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
        raise MediaError(path, f"cannot open as media: {_ffmpeg_reason(error)}") from error
    try:
        yield container
    finally:
        container.close()


def _decodable(stream: av.stream.Stream) -> bool:
    context = stream.codec_context
    return context is not None and context.codec is not None and context.codec.is_decoder


def _codec_name(stream: av.stream.Stream) -> str:
    """The codec's name even when this FFmpeg has no decoder for it."""
    context = stream.codec_context
    if context is not None and context.name:
        return context.name
    return "unknown"  # FFmpeg does not even know the codec's name


def _pick(streams: Sequence[av.stream.Stream]) -> av.stream.Stream | None:
    """The stream a player would play: the default-flagged one, else the first."""
    if not streams:
        return None
    for stream in streams:
        if stream.disposition & av.stream.Disposition.default:
            return stream
    return streams[0]


def _video_stream(container: av.container.InputContainer) -> av.stream.Stream | None:
    """The picture track, ignoring cover art that MP4/MKV files store as one-frame video."""
    moving = [
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    return _pick(moving)


def _audio_stream(
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
    return _pick([stream for stream in streams if _decodable(stream)]) or _pick(streams)


def _require_decoder(path: Path, stream: av.stream.Stream, kind: str) -> None:
    if not _decodable(stream):
        raise MediaError(
            path,
            f"unsupported {kind} codec {_codec_name(stream)!r}: "
            "the bundled FFmpeg has no decoder for it",
        )


def _timeline_origin(container: av.container.InputContainer) -> float:
    """Seconds at which the file's timeline starts; subtitles count from here."""
    start = container.start_time
    return start / av.time_base if start is not None else 0.0


def probe_media(path: str | Path, *, audio_track: int | None = None) -> MediaInfo:
    """Read a file's streams and duration without decoding it.

    audio_track : the stream index of the audio track to use (see :func:`decode_audio`);
        None: the default one.
    Raises MediaError for a missing file, one FFmpeg cannot parse, one without audio or
    video, and one whose chosen audio or video stream this FFmpeg cannot decode.
    """
    path = Path(path)
    with _open(path) as container:
        video = _video_stream(container)
        audio = _audio_stream(path, container, audio_track)
        if video is None and audio is None:
            raise MediaError(path, "no audio or video stream")
        for stream, kind in ((video, "video"), (audio, "audio")):
            if stream is not None:
                _require_decoder(path, stream, kind)
        duration = _duration(container, (video, audio))
        fps = None
        if video is not None:
            rate = video.average_rate or video.guessed_rate or video.base_rate
            fps = float(rate) if rate else None
        return MediaInfo(
            path=path,
            duration=duration,
            has_audio=audio is not None,
            has_video=video is not None,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            fps=fps,
            audio_codec=_codec_name(audio) if audio is not None else None,
            video_codec=_codec_name(video) if video is not None else None,
        )


def _duration(
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


RESAMPLE_BLOCK_S = 1
"""Resampled audio comes out in blocks this long: per-frame output cost a third more CPU."""


class _MonoResampler:
    """FFmpeg's resampler (downmix + rate change), fed decoded frames, giving float32 blocks.

    Output is batched into RESAMPLE_BLOCK_S blocks, and FFmpeg pads the last block with
    zeros, so :meth:`finish` trims the output to exactly the input's length at the new rate.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.resampler = av.AudioResampler(
            format="flt", layout="mono", rate=sample_rate, frame_size=sample_rate * RESAMPLE_BLOCK_S
        )
        self.input_seconds = 0.0
        self.emitted = 0

    @property
    def length(self) -> int:
        """Output samples this resampler owes for the input so far."""
        return round(self.input_seconds * self.sample_rate)

    def push(self, frame: av.AudioFrame) -> list[np.ndarray]:
        blocks = self.resampler.resample(frame)
        self.input_seconds += frame.samples / frame.sample_rate
        return self._arrays(blocks)

    def finish(self) -> list[np.ndarray]:
        arrays = self._arrays(self.resampler.resample(None))
        excess = self.emitted - self.length
        if excess > 0 and arrays:
            arrays[-1] = arrays[-1][: max(0, len(arrays[-1]) - excess)]
        return arrays

    def _arrays(self, blocks: list[av.AudioFrame]) -> list[np.ndarray]:
        arrays = [block.to_ndarray()[0] for block in blocks]
        self.emitted += sum(len(array) for array in arrays)
        return arrays


def decode_audio(
    path: str | Path, *, sample_rate: int = 16000, audio_track: int | None = None
) -> np.ndarray:
    """Decode the whole audio track once into (num_samples,) float32 mono in [-1, 1].

    audio_track : stream index of the track to decode (a fan release has Japanese and
    English ones); None: the default-flagged decodable track, else the first decodable.

    Sample 0 is the start of the file's timeline, so line times index the array directly:
    audio that starts late is preceded by silence, audio that starts early is trimmed, and
    gaps in the track (lost packets) are filled with silence instead of shifting what
    follows. A truncated file gives what could be decoded, with a warning.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _audio_stream(path, container, audio_track)
        if stream is None:
            raise MediaError(path, "no audio stream")
        _require_decoder(path, stream, "audio")
        _discard_other_streams(container, stream)
        origin = _timeline_origin(container)
        limit = _silence_limit(path, container, stream, sample_rate)
        time_base = stream.time_base
        pieces: list[np.ndarray] = []
        placed = 0  # timeline samples covered by pieces (negative: audio before the origin)
        resampler: _MonoResampler | None = None
        bad_packets = 0
        packets = chain(_demux(path, container, stream), [None])  # None flushes the decoder
        for packet in packets:
            try:
                frames = stream.codec_context.decode(packet)
            except av.FFmpegError as error:
                bad_packets = _count_bad_packet(path, error, bad_packets)
                continue
            for frame in frames:
                seconds = _frame_seconds(frame, time_base, origin)
                at = None if seconds is None else round(seconds * sample_rate)
                if resampler is None:
                    if at is not None:
                        # Leading silence when the audio starts late; a negative start is
                        # audio before the timeline, trimmed below.
                        if at > 0:
                            limit(at, at)
                            pieces.append(np.zeros(at, dtype=np.float32))
                        placed = at
                    resampler = _MonoResampler(sample_rate)
                elif at is not None and at - (placed + resampler.length) > sample_rate // 50:
                    # A gap of over 20 ms: close the run before it, then fill with silence.
                    pieces += resampler.finish()
                    placed += resampler.length
                    limit(at, at - placed)
                    pieces.append(np.zeros(at - placed, dtype=np.float32))
                    placed = at
                    resampler = _MonoResampler(sample_rate)
                try:
                    pieces += resampler.push(frame)
                except ValueError:  # the track changed rate or layout mid-stream
                    pieces += resampler.finish()
                    placed += resampler.length
                    resampler = _MonoResampler(sample_rate)
                    pieces += resampler.push(frame)
        if resampler is not None:
            pieces += resampler.finish()
            placed += resampler.length
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        if len(audio) > placed:  # the audio started before the timeline: drop that part
            audio = audio[len(audio) - max(placed, 0) :]
        if not len(audio):
            raise MediaError(path, "the audio stream has no decodable samples")
        expected_s = _duration(container, (stream,))
        decoded_s = len(audio) / sample_rate
        if expected_s and decoded_s < expected_s - 1.0:
            logger.warning(
                "%s: audio ends at %.1f s but the file says %.1f s (truncated or damaged?)",
                path,
                decoded_s,
                expected_s,
            )
        return np.ascontiguousarray(audio, dtype=np.float32)


MAX_SILENCE_GAP_S = 600.0
"""Longest gap in an audio track filled with silence; lost packets leave seconds, not hours."""
UNPROBED_LIMIT_S = 6 * 3600.0
"""Timeline bound when the file states no duration."""


def _silence_limit(
    path: Path, container: av.container.InputContainer, stream: av.stream.Stream, rate: int
) -> Callable[[int, int], None]:
    """A check that raises `MediaError` before silence is allocated past what the file can be.

    A timestamp jump (a damaged or hostile file) once asked for 59.6 GiB of zeros. The
    timeline may reach the probed duration plus a minute, and one gap at most
    `MAX_SILENCE_GAP_S`.
    """
    probed = _duration(container, (stream,))
    end_s = probed + 60.0 if probed > 0 else UNPROBED_LIMIT_S

    def check(at: int, gap: int) -> None:
        if at > end_s * rate or gap > MAX_SILENCE_GAP_S * rate:
            raise MediaError(
                path,
                f"audio timestamps jump to {at / rate:.0f} s (a {gap / rate:.0f} s gap) in a file "
                f"of {probed:.0f} s; refusing to fill it with silence (damaged timestamps?)",
            )

    return check


def _frame_seconds(
    frame: av.frame.Frame, time_base: Fraction | None, origin: float
) -> float | None:
    """A decoded frame's time on the file's timeline, or None when it has no timestamp.

    From ``frame.pts`` in the stream's time base (``stream.time_base``, read once per stream
    by the caller), not ``frame.time``: PyAV gives frames that come out of the final flush
    (``decode(None)``) no time base, so their ``time`` is NaN, and the last few frames of a
    video with B-frames come out of that flush. Integer true division is correctly rounded,
    so this is ``float(pts * time_base)`` without building three Fractions per frame, which
    cost a third of the audio decode's CPU (67,500 AAC frames in a 24-minute episode).
    """
    if frame.pts is None or not time_base:
        return None
    return frame.pts * time_base.numerator / time_base.denominator - origin


def _discard_other_streams(container: av.container.InputContainer, keep: av.stream.Stream) -> None:
    """Let the demuxer drop other streams' packets early instead of handing them to us."""
    for stream in container.streams:
        if stream.index != keep.index:
            stream.discard = av.stream.Discard.all


def _demux(
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
            logger.warning("%s: stopped reading at a damaged spot: %s", path, _ffmpeg_reason(error))
            return
        if packet.size:  # skip the empty end-of-stream packet: callers flush explicitly
            yield packet


def _count_bad_packet(path: Path, error: BaseException, bad_packets: int) -> int:
    bad_packets += 1
    if bad_packets > MAX_BAD_PACKETS:
        raise MediaError(
            path, f"too many undecodable packets ({bad_packets}): {_ffmpeg_reason(error)}"
        ) from error
    logger.warning("%s: skipped an undecodable packet: %s", path, _ffmpeg_reason(error))
    return bad_packets


def slice_clip(
    audio: np.ndarray,
    start: float,
    end: float,
    *,
    options: ClipOptions | dict | None = None,
) -> np.ndarray:
    """The samples of [start - pad, end + pad] seconds, clamped to the array: a view, no copy.

    audio : (num_samples,) float32 at ``options.sample_rate``, as from :func:`decode_audio`.
    A span entirely outside the audio gives an empty array.
    """
    options = coerce_options(ClipOptions, options, what="clip")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"clip times must be finite, got start={start} end={end}")
    if end < start:
        raise ValueError(f"clip ends before it starts: start={start} end={end}")
    pad = options.pad_ms / 1000.0
    rate = options.sample_rate
    first = max(0, math.floor((start - pad) * rate))
    last = min(len(audio), math.ceil((end + pad) * rate))
    return audio[first : max(first, last)]


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """(num_samples,) int16: float samples in [-1, 1] (clipped) as a 16-bit WAV stores them;
    int16 samples as they are."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected (num_samples,) mono audio, got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples
    scaled = np.clip(samples.astype(np.float32, copy=False), -1.0, 1.0) * 32767.0
    return np.rint(scaled).astype(np.int16)


def from_pcm16(pcm: np.ndarray) -> np.ndarray:
    """(num_samples,) float32: 16-bit samples as any WAV reader returns them (divided by
    32768), so that a clip handed on in memory equals the one read back from its file."""
    return np.asarray(pcm, dtype=np.int16).astype(np.float32) / 32768.0


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A 16-bit PCM mono WAV file of ``samples`` (float in [-1, 1], clipped; or int16)."""
    samples = to_pcm16(samples)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(samples.astype("<i2", copy=False).tobytes())
    return buffer.getvalue()


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write a 16-bit PCM mono WAV atomically (temporary file, then rename)."""
    atomic_write_bytes(path, wav_bytes(samples, sample_rate))


def _keyframe_times(
    container: av.container.InputContainer, stream: av.stream.Stream, origin: float
) -> list[tuple[float, int]]:
    """Sorted (seconds, timestamp) of the keyframes the demuxer's index knows; [] if none.

    Matroska reads its index (Cues) lazily, on the first seek, so seek to the start once.
    MP4 indexes by decode time, a few frames before the presentation time; that only makes
    a seek land slightly early, which costs a few frames, never a wrong frame.
    """
    entries = stream.index_entries
    if len(entries) < 2:
        try:
            container.seek(stream.start_time or 0, stream=stream, backward=True)
        except av.FFmpegError:
            return []
        entries = stream.index_entries
    time_base = float(stream.time_base)
    return [
        (entry.timestamp * time_base - origin, entry.timestamp)
        for entry in entries
        if entry.is_keyframe
    ]


def keyframe_index(path: str | Path) -> tuple[list[float], float]:
    """(sorted keyframe seconds on the subtitle timeline, frame rate) of a file's video stream,
    from the demuxer's index that `extract_frames` plans its walks with; no frame is decoded.

    Raises MediaError for a file that cannot be opened or has no video stream.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            raise MediaError(path, "no video stream")
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        keyframes = _keyframe_times(container, stream, _timeline_origin(container))
    return [seconds for seconds, _ in keyframes], rate


FrameCallback = Callable[[int, np.ndarray, bytes], None]
"""``on_frame(request, rgb, jpeg)`` of `extract_frames`: the request's position in the
``requests`` given, the (h, w, 3) uint8 RGB frame that was encoded (after any downscale),
and the JPEG file's bytes as written."""


def _frame_jpeg(
    frame: av.VideoFrame, jpeg_quality: int, max_width: int | None
) -> tuple[np.ndarray, bytes]:
    """One frame as (h, w, 3) uint8 RGB (shrunk when wider than max_width) and its JPEG."""
    size: dict[str, object] = {}
    if max_width is not None and frame.width > max_width:
        height = max(2, round(frame.height * max_width / frame.width / 2) * 2)
        size = {"width": max_width, "height": height, "interpolation": "AREA"}
    # to_ndarray + fromarray, not to_image: measured 6 ms against 16 ms per 720p frame.
    rgb = frame.to_ndarray(format="rgb24", **size)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=jpeg_quality)
    return rgb, buffer.getvalue()


def _save_frame(frame: av.VideoFrame, requests: list[_Request], settings: _WalkSettings) -> None:
    rgb, data = _frame_jpeg(frame, settings.jpeg_quality, settings.max_width)
    for request in requests:
        atomic_write_bytes(request.path, data)
    if settings.on_frame is not None:
        for request in requests:
            settings.on_frame(request.number, rgb, data)


LOOP_FILTER_SKIPS = ("default", "noref", "bidir", "nokey", "all")
"""Values of ``skip_loop_filter``: which frames FFmpeg decodes without its deblocking filter.

FFmpeg's discard levels, named as its ``-skip_loop_filter`` option names them: "default"
deblocks every frame (the exact decode); "noref" skips it on frames no other frame
references, so the error stays in that one frame; "bidir" on all B-frames; "nokey" on all
but keyframes; "all" everywhere. From "bidir" on, the error carries through reference
frames to the next keyframe. H.264 and HEVC honour it; other decoders ignore it.
"""

DEFAULT_SKIP_LOOP_FILTER = "noref"
"""Exact up to unreferenced frames: on the benchmark episode the served frames (first 80)
kept a luma PSNR of at least 56 dB against the exact decode. "all" cut the frame pass's CPU by a
further ~15%, but one of those 400 frames fell to 34.2 dB (median 48.7; the JPEG at
quality 85 itself is at 38-41 dB), under the 35 dB floor; bench/README.md."""


DECODER_THREADS = 0
"""Threads per walk's decoder; 0 lets FFmpeg choose (about cores + 1). One thread per walk
needed 8% less CPU on the loaded machine, but cannot use a core that a walk which finished
early leaves idle; see bench/README.md."""

WALK_SETUP_COST_S = 0.5
"""Planning cost of starting on a keyframe interval, in seconds of video decoded: a seek,
the decoder's restart and the frames decoded in full before a request."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_walks(times: Sequence[float], key_seconds: Sequence[float], walks: int) -> list[int]:
    """Split sorted request times into at most ``walks`` runs of about equal decoding work.

    times : (n,) seconds, sorted. key_seconds : sorted keyframe times (the demuxer's index).
    Returns the index into ``times`` where each run starts (the first is 0). Runs only break
    between keyframe intervals, so no two walks decode the same frames; without a keyframe
    index a later walk could not seek to its start, so there is one run. The work of an
    interval is the video decoded from its keyframe to its last request, plus
    WALK_SETUP_COST_S.
    """
    if walks < 1:
        raise ValueError(f"walks must be at least 1, got {walks}")
    if walks == 1 or len(key_seconds) < 2 or len(times) < 2:
        return [0]
    # Runs of requests that start decoding from the same keyframe, with their cost.
    group_starts: list[int] = []
    costs: list[float] = []
    previous = None
    for i, seconds in enumerate(times):
        key = bisect_right(key_seconds, seconds - FULL_DECODE_MARGIN_S) - 1
        if key != previous:
            group_starts.append(i)
            costs.append(WALK_SETUP_COST_S)
            key_start = key_seconds[key] if key >= 0 else 0.0
            previous = key
        costs[-1] = WALK_SETUP_COST_S + max(0.0, seconds - key_start)
    if len(group_starts) == 1:
        return [0]
    walks = min(walks, len(group_starts))
    cumulative = list(accumulate(costs))
    cuts: list[int] = []  # the group each later walk starts with
    for k in range(1, walks):
        share = cumulative[-1] * k / walks
        # Leave at least one group to this walk and to each one after it.
        candidates = range(cuts[-1] + 1 if cuts else 1, len(costs) - (walks - k) + 1)
        cuts.append(min(candidates, key=lambda cut: abs(cumulative[cut - 1] - share)))
    return [0, *(group_starts[cut] for cut in cuts)]


def extract_frames(
    path: str | Path,
    requests: Sequence[tuple[float, Path]],
    *,
    jpeg_quality: int = 85,
    max_width: int | None = None,
    hook: Hook | None = None,
    walks: int | None = None,
    skip_loop_filter: str = DEFAULT_SKIP_LOOP_FILTER,
    decoder_threads: int | None = None,
    on_frame: FrameCallback | None = None,
) -> None:
    """Write one JPEG per (seconds, out_path) request, from forward passes over the video.

    Each request gets the first frame shown at or after its time (the last frame when the
    time is past the end). Requests may come in any order and may share times. Frames far
    from every request are not decoded when nothing depends on them, and stretches longer
    than a keyframe interval are skipped by seeking. JPEG encoding runs beside decoding.

    walks : independent passes, each with its own decoder and a contiguous share of the
        requests (see :func:`plan_walks`), run in parallel; None = one per usable core.
        One H.264 decoder keeps only about 1.4 of 2 cores busy, so two walks finish sooner.
    skip_loop_filter : one of LOOP_FILTER_SKIPS; "default" decodes every frame exactly.
    decoder_threads : threads per walk's decoder; None = DECODER_THREADS (FFmpeg's choice).
    on_frame : given each request's frame in memory once its JPEG is written (see
        `FrameCallback`), so a consumer need not read and decode the file again. It is
        called from the JPEG threads (one per walk) in no particular order across walks, so
        it must be thread-safe; an exception it raises stops every walk and is raised here.
    hook : called as ``hook("frames", completed=k, total=n)`` as JPEGs are written.
    """
    path = Path(path)
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if max_width is not None and max_width < 2:
        raise ValueError(f"max_width must be at least 2, got {max_width}")
    if walks is not None and walks < 1:
        raise ValueError(f"walks must be at least 1, got {walks}")
    if decoder_threads is not None and decoder_threads < 0:
        raise ValueError(f"decoder_threads must be 0 (automatic) or more, got {decoder_threads}")
    if skip_loop_filter not in LOOP_FILTER_SKIPS:
        raise ValueError(
            f"skip_loop_filter must be one of {list(LOOP_FILTER_SKIPS)}, got {skip_loop_filter!r}"
        )
    wanted = sorted(
        (_Request(float(t), Path(p), number) for number, (t, p) in enumerate(requests)),
        key=lambda request: request.seconds,
    )
    for request in wanted:
        if not math.isfinite(request.seconds):
            raise ValueError(f"frame times must be finite, got {request.seconds}")
    settings = _WalkSettings(
        jpeg_quality,
        max_width,
        skip_loop_filter,
        DECODER_THREADS if decoder_threads is None else decoder_threads,
        on_frame,
    )
    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            raise MediaError(path, "no video stream")
        _require_decoder(path, stream, "video")
        _discard_other_streams(container, stream)
        if not wanted:
            return
        progress = _Progress(hook, len(wanted))
        keyframes = _keyframe_times(container, stream, _timeline_origin(container))
        starts = plan_walks(
            [request.seconds for request in wanted],
            [seconds for seconds, _ in keyframes],
            usable_cores() if walks is None else walks,
        )
        parts = [wanted[a:b] for a, b in zip(starts, [*starts[1:], len(wanted)], strict=True)]
        if len(parts) == 1:
            _FrameWalk(path, container, stream, wanted, settings, progress).run()
            return
        logger.debug("%s: %d walks starting at %s", path, len(parts), starts)
        _walk_in_parallel(path, container, stream, parts, settings, progress)


def _walk_in_parallel(
    path: Path,
    container: av.container.InputContainer,
    stream: av.stream.Stream,
    parts: list[list[_Request]],
    settings: _WalkSettings,
    progress: _Progress,
) -> None:
    """One walk per part: the first on ``container`` in this thread, each other one on its
    own container in a thread of its own. The first error stops every walk and is raised."""
    stop = threading.Event()
    leftovers: list[list[_Request]] = [[] for _ in parts]

    def walk(number: int) -> None:
        try:
            if number == 0:
                _FrameWalk(path, container, stream, parts[0], settings, progress).run(stop)
                return
            with _open(path) as own:
                own_stream = own.streams[stream.index]
                _discard_other_streams(own, own_stream)
                frame_walk = _FrameWalk(path, own, own_stream, parts[number], settings, progress)
                leftovers[number] = frame_walk.run(stop, first_walk=False)
        except BaseException:
            stop.set()  # the other walks give up at their next packet
            raise

    errors: list[BaseException] = []
    with ThreadPoolExecutor(len(parts) - 1, thread_name_prefix="frames") as pool:
        later = [pool.submit(walk, number) for number in range(1, len(parts))]
        try:
            walk(0)
        except BaseException as error:
            errors.append(error)
        errors += [error for job in later if (error := job.exception()) is not None]
    if errors:
        real = [error for error in errors if not isinstance(error, _Stopped)]
        raise (real or errors)[0]
    missed = [request for part in leftovers for request in part]
    if missed:
        # A later walk whose seek found no frames (an index that points past a damaged
        # tail): decode those requests from the start, as one walk without seeking.
        logger.warning(
            "%s: %d frame requests found no frames after seeking; decoding from the start",
            path,
            len(missed),
        )
        container.seek(stream.start_time or 0, stream=stream, backward=True)
        fallback = _FrameWalk(path, container, stream, missed, settings, progress)
        fallback.keyframes = fallback.key_seconds = []
        fallback.run()


class _Stopped(Exception):
    """A walk gave up because another walk failed."""


class _Request(NamedTuple):
    """One frame request: its time, its JPEG's path, and its position in the caller's list."""

    seconds: float
    path: Path
    number: int


@dataclass(frozen=True)
class _WalkSettings:
    jpeg_quality: int
    max_width: int | None
    skip_loop_filter: str
    decoder_threads: int
    on_frame: FrameCallback | None


class _Progress:
    """JPEGs written by all walks together, reported through one hook in rising order."""

    def __init__(self, hook: Hook | None, total: int) -> None:
        self.hook = hook
        self.total = total
        self.written = 0
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self.written += count
            if self.hook is not None:
                self.hook("frames", completed=self.written, total=self.total)


class _FrameWalk:
    """The state of one forward pass: which request is next, and what the decoder skips."""

    def __init__(
        self,
        path: Path,
        container: av.container.InputContainer,
        stream: av.stream.Stream,
        wanted: list[_Request],
        settings: _WalkSettings,
        progress: _Progress,
    ) -> None:
        self.path = path
        self.container = container
        self.stream = stream
        self.wanted = wanted
        self.next = 0  # index into wanted of the first request not yet served
        self.settings = settings
        self.progress = progress
        self.origin = _timeline_origin(container)
        self.time_base = float(stream.time_base)
        self.exact_time_base = stream.time_base
        self.context = stream.codec_context
        if not self.context.is_open:  # the fallback walk reuses an open decoder
            # Frame threads pipeline consecutive frames; slice threads split one. AUTO uses
            # both, which measured fastest for H.264 on 2 cores.
            stream.thread_type = "AUTO"
            stream.thread_count = settings.decoder_threads
            if settings.skip_loop_filter != "default":
                self.context.options = {
                    **self.context.options,
                    "skip_loop_filter": settings.skip_loop_filter,
                }
        # The last frame must not be skipped: requests past the end get it.
        self.end_time = _duration(container, (stream,)) or math.inf
        self.keyframes = _keyframe_times(container, stream, self.origin)
        self.key_seconds = [seconds for seconds, _ in self.keyframes]
        self.context.skip_frame = "DEFAULT"
        self.skipping = False
        # A seek that lands before its keyframe (a bad index, or a demuxer that seeks
        # coarsely) must not be repeated, or the walk would loop forever.
        self.last_seek_key = -math.inf
        self.last_frame: av.VideoFrame | None = None
        self.last_time = -math.inf
        self.jobs: deque[tuple[Future[None], int]] = deque()  # (JPEG job, paths it writes)
        self.decoded = self.seeks = self.served = 0  # for the debug log
        self.stop: threading.Event | None = None

    def run(
        self, stop: threading.Event | None = None, *, first_walk: bool = True
    ) -> list[_Request]:
        """Serve the requests; return those a later walk could not serve (see below).

        A walk that starts by seeking and then finds no frame at all cannot know the last
        frame before its start, which is what its requests should get; unless it is the
        first walk, it hands them back instead of failing.
        """
        self.stop = stop
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpeg") as pool:
            self.pool = pool
            try:
                self._walk()
                # Requests past the last frame get the last frame.
                if self.next < len(self.wanted):
                    if self.last_frame is None:
                        if not first_walk:
                            return self.wanted[self.next :]
                        raise MediaError(self.path, "the video stream has no decodable frames")
                    self._serve(self.last_frame, len(self.wanted))
                while self.jobs:
                    self._finish_oldest()
                logger.debug(
                    "%s: %d frames for %d requests from %.2f s; decoded %d frames, %d seeks",
                    self.path,
                    self.served,
                    len(self.wanted),
                    self.wanted[0].seconds,
                    self.decoded,
                    self.seeks,
                )
            finally:
                for job, _count in self.jobs:
                    job.cancel()
        return []

    def _walk(self) -> None:
        bad_packets = 0
        packets = _demux(self.path, self.container, self.stream)
        for packet in packets:
            if self.next >= len(self.wanted):
                return
            if self.stop is not None and self.stop.is_set():
                raise _Stopped
            timestamp = packet.pts if packet.pts is not None else packet.dts
            packet_time = (
                timestamp * self.time_base - self.origin if timestamp is not None else None
            )
            if packet_time is not None and self._seek_if_worth_it(packet_time):
                continue  # this packet is from before the seek; the next comes from after
            self._set_skipping(packet_time)
            try:
                frames = self.context.decode(packet)
            except av.FFmpegError as error:
                bad_packets = _count_bad_packet(self.path, error, bad_packets)
                continue
            for frame in frames:
                self._take(frame)
        try:
            self._set_skipping(None)
            for frame in self.context.decode(None):
                self._take(frame)
        except av.FFmpegError as error:
            logger.warning("%s: error while flushing the decoder: %s", self.path, error)

    def _set_skipping(self, packet_time: float | None) -> None:
        """Skip frames that no other frame references unless a requested time is near.

        Every packet at or past (next request - margin) is decoded in full, so the frame at
        or after a request is never skipped; nor is anything near the end, or whose time
        is unknown.
        """
        skip = (
            packet_time is not None
            and self.next < len(self.wanted)
            and packet_time < self.wanted[self.next].seconds - FULL_DECODE_MARGIN_S
            and packet_time < self.end_time - END_DECODE_MARGIN_S
        )
        if skip != self.skipping:
            self.context.skip_frame = "NONREF" if skip else "DEFAULT"
            self.skipping = skip

    def _seek_if_worth_it(self, packet_time: float) -> bool:
        """Jump to the last keyframe before the next request when that is well ahead."""
        if not self.keyframes:
            return False
        target = self.wanted[self.next].seconds - FULL_DECODE_MARGIN_S
        position = bisect_right(self.key_seconds, target) - 1
        if position < 0:
            return False
        key_seconds, key_timestamp = self.keyframes[position]
        if key_seconds < max(packet_time, self.last_time) + SEEK_MIN_GAIN_S:
            return False
        if key_seconds <= self.last_seek_key:
            logger.debug("%s: seek to %.2f s did not advance; decoding on", self.path, key_seconds)
            return False
        self.last_seek_key = key_seconds
        try:
            # Forward, onto the keyframe itself: MP4 indexes keyframes by decode time, which
            # is a little before their presentation time, and FFmpeg's MP4 seek compares
            # presentation times, so a backward seek would land a whole keyframe early.
            self.container.seek(key_timestamp, stream=self.stream, backward=False)
        except av.FFmpegError as error:
            logger.warning("%s: seek failed, decoding through: %s", self.path, error)
            self.keyframes = self.key_seconds = []
            return False
        logger.debug("%s: seeked from %.2f s to %.2f s", self.path, packet_time, key_seconds)
        self.seeks += 1
        return True

    def _take(self, frame: av.VideoFrame) -> None:
        """Serve every pending request this frame is the first at or after."""
        seconds = _frame_seconds(frame, self.exact_time_base, self.origin)
        if seconds is None:  # no timestamp: assume it follows the previous frame
            rate = self.stream.average_rate
            step = 1.0 / float(rate) if rate else 0.0
            seconds = self.last_time + step if math.isfinite(self.last_time) else 0.0
        self.last_frame = frame
        self.last_time = seconds
        self.decoded += 1
        end = self.next
        while (
            end < len(self.wanted) and seconds >= self.wanted[end].seconds - FRAME_TIME_TOLERANCE_S
        ):
            end += 1
        if end > self.next:
            self._serve(frame, end)

    def _serve(self, frame: av.VideoFrame, end: int) -> None:
        """Queue one JPEG of ``frame`` for requests [next, end)."""
        requests = self.wanted[self.next : end]
        self.next = end
        self.served += 1
        while len(self.jobs) >= PENDING_JPEGS:
            self._finish_oldest()
        job = self.pool.submit(_save_frame, frame, requests, self.settings)
        self.jobs.append((job, len(requests)))

    def _finish_oldest(self) -> None:
        job, count = self.jobs.popleft()
        job.result()  # re-raises a failed write here, in the caller's thread
        self.progress.add(count)
