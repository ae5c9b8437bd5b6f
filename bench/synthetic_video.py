"""Synthetic episodes whose every frame and every second of audio say where they are.

Tests and the import benchmark need real H.264 + AAC files, made here with PyAV's own
FFmpeg (the `av` wheel ships `libx264` and FFmpeg's native `aac` encoder), so no system
ffmpeg is needed. Two properties make them useful for checking media code:

- every video frame carries its own frame number as a black/white bar code along the
  top edge (:func:`read_frame_index` reads it back, robust to H.264 compression);
- every second ``s`` of audio is a pure tone of :func:`tone_frequency` ``(s)`` Hz, so the
  dominant frequency of a clip tells which second it was cut from.

Below the bar code the picture is made to cost what a real episode costs to decode:
scene cuts every few seconds, a panning textured background and moving blocks, encoded
with a realistic keyframe interval and B-frames.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

CODE_BITS = 20
"""Bits of the frame-number bar code: enough for 12 hours at 24 fps."""

AUDIO_RATE = 48000
AUDIO_CHUNK = 1024  # samples per AAC frame
TONE_BASE_HZ = 300.0
TONE_STEP_HZ = 50.0
TONE_CYCLE = 20  # the tone sequence repeats every 20 seconds

H264_ENCODER = "libx264"
"""The PyAV 18 wheel ships libx264 (and libx265, libsvtav1, libvpx-vp9); not libopenh264."""


def tone_frequency(second: int) -> float:
    """Frequency (Hz) of the tone that fills second ``second`` of every synthetic audio track."""
    return TONE_BASE_HZ + TONE_STEP_HZ * (second % TONE_CYCLE)


def exact_rate(fps: float | Fraction) -> Fraction:
    """23.976 and 29.97 mean the NTSC rates 24000/1001 and 30000/1001, as in real files."""
    if isinstance(fps, Fraction):
        return fps
    for ntsc in (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001)):
        if abs(float(ntsc) - fps) < 2e-3:
            return ntsc
    return Fraction(fps).limit_denominator(1000)


def code_strip_height(height: int) -> int:
    """Height (pixels, even) of the bar-code strip at the top of each frame."""
    return max(8, (height // 12) // 2 * 2)


def read_frame_index(luma: np.ndarray) -> int:
    """Read back the frame number from a decoded picture.

    luma : (height, width) uint8 (grey or the Y plane) or (height, width, 3) uint8 RGB,
    at any scale, since each bit is sampled at the centre of its cell.
    """
    if luma.ndim == 3:
        luma = luma.mean(axis=2)
    height, width = luma.shape
    strip = code_strip_height(height)
    cell = width / CODE_BITS
    row_lo, row_hi = strip // 4, max(strip // 4 + 1, 3 * strip // 4)
    value = 0
    for bit in range(CODE_BITS):
        col_lo = int(bit * cell + cell / 4)
        col_hi = max(col_lo + 1, int(bit * cell + 3 * cell / 4))
        if luma[row_lo:row_hi, col_lo:col_hi].mean() > 128:
            value |= 1 << (CODE_BITS - 1 - bit)
    return value


@dataclass
class _Block:
    """A moving rectangle: the "characters" of the synthetic scene."""

    x: float
    y: float
    vx: float
    vy: float
    w: int
    h: int
    luma: int
    cb: int
    cr: int


class _PictureMaker:
    """Builds yuv420p frames directly, skipping an RGB→YUV conversion per frame."""

    def __init__(self, width: int, height: int, rate: Fraction, seed: int) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
        self.width, self.height = width, height
        self.rate = rate
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.strip = code_strip_height(height)
        self.buffer = np.empty((height * 3 // 2, width), dtype=np.uint8)
        self.scene_end = 0
        self.scene_start = 0
        self.pan_speed = 0
        self.background: np.ndarray = np.empty(0)
        self.chroma_u = self.chroma_v = np.empty(0)
        self.blocks: list[_Block] = []
        code_cells = np.arange(width) * CODE_BITS // width
        self.bit_of_column = (CODE_BITS - 1 - code_cells).astype(np.int64)

    def _new_scene(self, frame_index: int) -> None:
        """A scene cut: new background texture, pan speed and cast of blocks."""
        rng = self.rng
        length = int(rng.uniform(2.0, 8.0) * float(self.rate))
        self.scene_start, self.scene_end = frame_index, frame_index + length
        self.pan_speed = rng.choice((0, 1, 2, 3))
        width = self.width + self.pan_speed * length + 2
        height = self.height
        ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
        xs = np.linspace(0.0, width / self.width, width, dtype=np.float32)[None, :]
        f1, f2, f3 = rng.uniform(2, 9), rng.uniform(2, 9), rng.uniform(10, 40)
        texture = (
            40 * np.sin(2 * np.pi * (f1 * xs + rng.random()))
            + 30 * np.cos(2 * np.pi * (f2 * ys + 0.5 * xs))
            + 10 * np.sin(2 * np.pi * f3 * (xs + ys))
        )
        base = rng.uniform(60, 170)
        # A little fixed grain keeps the bitrate near a real 720p encode (1-2 Mbit/s).
        grain = self.np_rng.integers(-6, 7, size=(height, width), dtype=np.int16)
        self.background = np.clip(base + texture + grain, 16, 235).astype(np.uint8)
        cw, ch = width // 2, height // 2
        gx = np.linspace(0.0, 1.0, cw, dtype=np.float32)[None, :]
        gy = np.linspace(0.0, 1.0, ch, dtype=np.float32)[:, None]
        u0, v0 = rng.uniform(90, 166), rng.uniform(90, 166)
        self.chroma_u = np.clip(u0 + 25 * (gx - gy), 16, 240).astype(np.uint8)
        self.chroma_v = np.clip(v0 + 25 * np.sin(3 * gx + 2 * gy), 16, 240).astype(np.uint8)
        self.blocks = []
        for _ in range(rng.randint(2, 5)):
            w = rng.randint(self.width // 12, self.width // 4) // 2 * 2
            h = rng.randint(self.height // 8, self.height // 3) // 2 * 2
            self.blocks.append(
                _Block(
                    x=rng.uniform(0, self.width - w),
                    y=rng.uniform(self.strip, self.height - h),
                    vx=rng.uniform(-6, 6) * self.width / 1280,
                    vy=rng.uniform(-4, 4) * self.height / 720,
                    w=w,
                    h=h,
                    luma=rng.randint(20, 230),
                    cb=rng.randint(40, 216),
                    cr=rng.randint(40, 216),
                )
            )

    def frame(self, index: int) -> np.ndarray:
        """The (height * 3 / 2, width) yuv420p picture of frame ``index``."""
        if index >= self.scene_end:
            self._new_scene(index)
        width, height = self.width, self.height
        offset = self.pan_speed * (index - self.scene_start)
        luma = self.buffer[:height]
        chroma = self.buffer[height:].reshape(2, height // 2, width // 2)
        luma[:] = self.background[:, offset : offset + width]
        chroma[0] = self.chroma_u[:, offset // 2 : offset // 2 + width // 2]
        chroma[1] = self.chroma_v[:, offset // 2 : offset // 2 + width // 2]
        for block in self.blocks:
            block.x += block.vx
            block.y += block.vy
            if not 0 <= block.x <= width - block.w:
                block.vx = -block.vx
                block.x = min(max(block.x, 0), width - block.w)
            if not self.strip <= block.y <= height - block.h:
                block.vy = -block.vy
                block.y = min(max(block.y, self.strip), height - block.h)
            x, y = int(block.x) // 2 * 2, int(block.y) // 2 * 2
            luma[y : y + block.h, x : x + block.w] = block.luma
            chroma[0, y // 2 : (y + block.h) // 2, x // 2 : (x + block.w) // 2] = block.cb
            chroma[1, y // 2 : (y + block.h) // 2, x // 2 : (x + block.w) // 2] = block.cr
        bits = (index >> self.bit_of_column) & 1
        luma[: self.strip] = np.where(bits, 235, 16).astype(np.uint8)[None, :]
        chroma[:, : self.strip // 2] = 128
        return self.buffer


def _tone_chunks(
    duration_s: float, start_s: float = 0.0, channels: int = 2
) -> Iterator[np.ndarray]:
    """(channels, AUDIO_CHUNK) float32 chunks from start_s on: each second's tone names it."""
    first = round(start_s * AUDIO_RATE)
    total = round(duration_s * AUDIO_RATE)
    phase = 0.0
    for start in range(first, total, AUDIO_CHUNK):
        count = min(AUDIO_CHUNK, total - start)
        samples = start + np.arange(count)
        seconds = samples // AUDIO_RATE
        freqs = TONE_BASE_HZ + TONE_STEP_HZ * (seconds % TONE_CYCLE)
        # Integrate the frequency so second boundaries are phase-continuous (no clicks).
        phases = phase + 2 * np.pi * np.cumsum(freqs) / AUDIO_RATE
        phase = float(phases[-1] % (2 * np.pi))
        chunk = np.zeros((channels, AUDIO_CHUNK), dtype=np.float32)
        chunk[:, :count] = (0.3 * np.sin(phases)).astype(np.float32)
        yield chunk


def make_test_video(
    path: str | Path,
    *,
    duration_s: float,
    width: int = 320,
    height: int = 240,
    fps: float | Fraction = 24,
    with_audio: bool = True,
    with_video: bool = True,
    gop: int | None = None,
    seed: int = 0,
    preset: str = "veryfast",
    crf: int = 23,
    audio_start_s: float = 0.0,
) -> Path:
    """Encode an H.264 + AAC (48 kHz stereo) file; the container follows the suffix.

    gop : keyframe interval in frames; None means 250, x264's default and what most
    episode encodes use. ``preset`` trades encode time for nothing that matters here;
    every preset above ``ultrafast`` keeps B-frames, which real episodes have.
    audio_start_s : the audio track starts this late (its tones still follow the timeline),
    as in files cut from broadcasts.
    The file appears atomically: it is written beside its target and renamed.
    """
    if not (with_audio or with_video):
        raise ValueError("a test video needs audio, video or both")
    path = Path(path)
    rate = exact_rate(fps)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        with av.open(str(temp), mode="w") as container:
            video = audio = None
            if with_video:
                video = container.add_stream(H264_ENCODER, rate=rate)
                video.width, video.height = width, height
                video.pix_fmt = "yuv420p"
                video.codec_context.gop_size = gop or 250
                video.options = {"preset": preset, "crf": str(crf)}
                video.thread_type = "AUTO"
            if with_audio:
                audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
                audio.bit_rate = 128_000
            _encode(container, video, audio, duration_s, rate, (width, height), seed, audio_start_s)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def _encode(
    container: av.container.OutputContainer,
    video: av.VideoStream | None,
    audio: av.AudioStream | None,
    duration_s: float,
    rate: Fraction,
    size: tuple[int, int],
    seed: int,
    audio_start_s: float,
) -> None:
    """Feed both encoders in presentation order so the muxer never buffers much."""
    num_frames = math.ceil(duration_s * rate) if video is not None else 0
    maker = _PictureMaker(*size, rate, seed) if video is not None else None
    chunks = _tone_chunks(duration_s, audio_start_s) if audio is not None else iter(())
    audio_pts = round(audio_start_s * AUDIO_RATE)
    next_chunk = next(chunks, None)
    for index in range(num_frames + 1):
        frame_time = index / rate if index < num_frames else math.inf
        while next_chunk is not None and audio_pts / AUDIO_RATE <= frame_time:
            frame = av.AudioFrame.from_ndarray(next_chunk, format="fltp", layout="stereo")
            frame.sample_rate = AUDIO_RATE
            frame.pts = audio_pts
            audio_pts += next_chunk.shape[1]
            container.mux(audio.encode(frame))
            next_chunk = next(chunks, None)
        if index < num_frames:
            picture = av.VideoFrame.from_ndarray(maker.frame(index), format="yuv420p")
            picture.pts = index
            picture.time_base = 1 / rate
            container.mux(video.encode(picture))
    for stream in (video, audio):
        if stream is not None:
            container.mux(stream.encode(None))


def make_cues(
    duration_s: float, count: int, *, seed: int = 0, min_s: float = 0.6, max_s: float = 5.0
) -> list[tuple[float, float]]:
    """``count`` non-overlapping (start, end) spans in seconds, spread over the whole video.

    Durations are drawn like subtitle lines (mostly 1-3 s); gaps are what is left,
    split at random, so some are long (like an opening song) and most are short.
    """
    rng = random.Random(seed)
    durations = [
        min(max_s, max(min_s, rng.lognormvariate(math.log(1.8), 0.5))) for _ in range(count)
    ]
    spare = duration_s - sum(durations) - 1.0
    if spare <= 0:
        raise ValueError(f"{count} cues do not fit in {duration_s:.0f} s")
    weights = [rng.expovariate(1.0) for _ in range(count + 1)]
    scale = spare / sum(weights)
    cues, cursor = [], 0.5
    for duration, weight in zip(durations, weights, strict=False):
        cursor += weight * scale
        cues.append((round(cursor, 3), round(cursor + duration, 3)))
        cursor += duration
    return cues


def srt_text(cues: list[tuple[float, float]]) -> str:
    """An SRT document with one numbered line per cue."""

    def stamp(seconds: float) -> str:
        millis = round(seconds * 1000)
        hours, millis = divmod(millis, 3_600_000)
        minutes, millis = divmod(millis, 60_000)
        secs, millis = divmod(millis, 1000)
        return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"

    blocks = [
        f"{number}\n{stamp(start)} --> {stamp(end)}\nLine {number}.\n"
        for number, (start, end) in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)
