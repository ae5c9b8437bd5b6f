"""The audio pass: one decode of the whole track to 16 kHz mono, then every line's clip as a
slice of that array, written as 16-bit WAV."""

from __future__ import annotations

import io
import logging
import math
import wave
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import av
import numpy as np

from foundation.atomic import atomic_write_bytes
from foundation.options import coerce_options
from importers.media.container import (
    MediaError,
    audio_stream,
    count_bad_packet,
    demux,
    discard_other_streams,
    frame_seconds,
    media_duration,
    open_media,
    require_decoder,
    timeline_origin,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipOptions:
    """How each line's clip is cut.

    pad_ms : silence-safe margin added before and after each line, because subtitle timing
    is loose and clipping the first syllable hurts speaker embeddings more than a little
    extra context.
    """

    pad_ms: int = 150
    sample_rate: int = 16000


RESAMPLE_BLOCK_S = 1
"""Resampled audio comes out in blocks this long: per-frame output costs more CPU
(bench/README.md, "Measurements behind code choices")."""


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
    with open_media(path) as container:
        stream = audio_stream(path, container, audio_track)
        if stream is None:
            raise MediaError(path, "no audio stream")
        require_decoder(path, stream, "audio")
        discard_other_streams(container, stream)
        origin = timeline_origin(container)
        limit = _silence_limit(path, container, stream, sample_rate)
        time_base = stream.time_base
        pieces: list[np.ndarray] = []
        placed = 0  # timeline samples covered by pieces (negative: audio before the origin)
        resampler: _MonoResampler | None = None
        bad_packets = 0
        packets = chain(demux(path, container, stream), [None])  # None flushes the decoder
        for packet in packets:
            try:
                frames = stream.codec_context.decode(packet)
            except av.FFmpegError as error:
                bad_packets = count_bad_packet(path, error, bad_packets)
                continue
            for frame in frames:
                seconds = frame_seconds(frame, time_base, origin)
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
        expected_s = media_duration(container, (stream,))
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
    probed = media_duration(container, (stream,))
    end_s = probed + 60.0 if probed > 0 else UNPROBED_LIMIT_S

    def check(at: int, gap: int) -> None:
        if at > end_s * rate or gap > MAX_SILENCE_GAP_S * rate:
            raise MediaError(
                path,
                f"audio timestamps jump to {at / rate:.0f} s (a {gap / rate:.0f} s gap) in a file "
                f"of {probed:.0f} s; refusing to fill it with silence (damaged timestamps?)",
            )

    return check


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
