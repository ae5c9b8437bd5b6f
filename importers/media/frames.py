"""The frame pass: every requested frame from forward walks over the video, one per usable
core, each decoding its keyframe intervals once; JPEG encoding beside the decoding."""

from __future__ import annotations

import io
import logging
import math
import os
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from PIL import Image

from foundation.atomic import atomic_write_bytes
from foundation.hook import Hook
from importers.media.container import (
    MediaError,
    count_bad_packet,
    demux,
    discard_other_streams,
    frame_seconds,
    media_duration,
    open_media,
    require_decoder,
    timeline_origin,
    video_stream,
)

logger = logging.getLogger(__name__)


FRAME_TIME_TOLERANCE_S = 1e-3
"""A frame counts as "at" t when it is at most this early: Matroska rounds times to 1 ms."""

FULL_DECODE_MARGIN_S = 0.1
"""Decode every frame from this long before a requested time; skip unreferenced ones earlier.

Frames are skipped per packet, by the packet's own presentation time, so the frame at or after
a request is decoded whatever the reordering; the margin only covers timestamp jitter (1 ms in
Matroska). A longer margin decodes the unreferenced B-frames before every request for
nothing (bench/README.md, "Measurements behind code choices")."""

END_DECODE_MARGIN_S = 0.5
"""Everything this close to the end of the file is decoded in full: requests past the end get
the last frame, and the container's duration can run a little past the video's."""

SEEK_MIN_GAIN_S = 1.0
"""Seek only when it skips at least this much video; a seek restarts the decoder's threads."""

PENDING_JPEGS = 6
"""Frames queued for JPEG encoding at once; bounds memory at a few raw frames."""


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
    with open_media(path) as container:
        stream = video_stream(container)
        if stream is None:
            raise MediaError(path, "no video stream")
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        keyframes = _keyframe_times(container, stream, timeline_origin(container))
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
    # to_ndarray + fromarray, not to_image: the faster of the two
    # (bench/README.md, "Measurements behind code choices").
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
"""Exact up to unreferenced frames. "all" is cheaper still but lets a served frame fall under
the 35 dB luma-PSNR floor against the exact decode (bench/README.md, "Import speed", loop
filter)."""


DECODER_THREADS = 0
"""Threads per walk's decoder; 0 lets FFmpeg choose (about cores + 1). One thread per walk
needs a little less CPU, but cannot use a core that a walk which finished early leaves idle
(bench/README.md, "Import speed")."""

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
    with open_media(path) as container:
        stream = video_stream(container)
        if stream is None:
            raise MediaError(path, "no video stream")
        require_decoder(path, stream, "video")
        discard_other_streams(container, stream)
        if not wanted:
            return
        progress = _Progress(hook, len(wanted))
        keyframes = _keyframe_times(container, stream, timeline_origin(container))
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
            with open_media(path) as own:
                own_stream = own.streams[stream.index]
                discard_other_streams(own, own_stream)
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
        self.origin = timeline_origin(container)
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
        self.end_time = media_duration(container, (stream,)) or math.inf
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
        packets = demux(self.path, self.container, self.stream)
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
                bad_packets = count_bad_packet(self.path, error, bad_packets)
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
        seconds = frame_seconds(frame, self.exact_time_base, self.origin)
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
