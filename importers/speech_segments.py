"""Lines from detected speech, for episodes that have no subtitles at all.

Without subtitles a "line" has to come from the soundtrack. silero-vad gives a speech
probability per 32 ms frame; this module turns those probabilities into line-sized segments:

1. **Hysteresis**: a frame starts speech at ``threshold`` and speech lasts until the
   probability falls below ``neg_threshold`` (silero's own rule), so a dip inside a word does not
   end it.
2. **Pauses end lines**: speech runs closer together than ``min_pause_s`` are one line; a longer
   pause is where one speaker stops and the next starts (or a speaker starts a new line).
3. **Blips are dropped**: a run shorter than ``min_speech_s`` is a click, a breath or a drum hit.
4. **Lines are capped**: a stretch longer than ``max_line_s`` is not one line (two speakers with
   no pause between them, or a monologue), so it is split into as few pieces as the cap allows,
   each cut at the quietest point it may use (the lowest smoothed speech probability), and no
   piece shorter than ``min_line_s``.
5. **Padding**: each segment grows by ``pad_s`` either side (never into its neighbour), because
   VAD frames clip the soft onsets and tails of words.

The defaults were tuned on the benchmark's training episodes (``standard`` seeds 101 and 102,
``hard`` seed 101; ``python -m bench.bench_segmentation --tune``) and are reported on the
evaluation seeds in ``bench/README.md`` ("Lines without subtitles"). The pause is 0.3 s, not
silero's 0.1 s, because speakers pause 0.2-0.4 s at commas inside a line: with 0.1 s, silero's
own rules split 28-42 of every 100 lines of the standard training episodes. Turns taken
quicker than 0.3 s are then joined, and the 5 s cap cuts many of those apart again, at the
quiet point between the two voices. 0.4 s scored a little better on the training episodes
but merged about twice as many lines of the quick-fire `tiny` episode, so the shorter pause
was kept (bench/README.md, "Measurements behind code choices").

The segments become `SubtitleLine` s with empty text and the ``no_subtitles`` flag, so the rest
of the import (clips, frames, tasks, features) runs unchanged.

The VAD is silero-vad's "sequence" ONNX model (numpy + onnxruntime, one thread): one call per
16 s block, so a 20-minute episode takes a few seconds. Importing silero-vad sets torch's thread
count to 1; it is restored.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np

from foundation.options import coerce_options
from importers.subtitles import ParsedSubtitles, SubtitleLine

logger = logging.getLogger(__name__)

FLAG_NO_SUBTITLES = "no_subtitles"
"""On every line cut from detected speech: its text is empty (or came from ASR) and its times
are the VAD's, not a subtitler's."""

SPEECH_FORMAT = "speech"
"""`ParsedSubtitles.format` of lines that came from speech detection instead of a file."""

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
"""silero-vad's frame at 16 kHz: 32 ms."""
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
SPLIT_SMOOTHING_FRAMES = 3
"""The quietest point of a long stretch is found on a 3-frame (96 ms) moving average, so one
noisy frame does not pick the cut."""


class NoSpeechError(ValueError):
    """Speech detection found nothing to cut into lines; the message names the file."""


@dataclass(frozen=True)
class SpeechSegmentOptions:
    """How detected speech is cut into lines; a dataclass or a dict of its fields.

    Every duration is in seconds. Defaults: tuned on the training episodes (see the module doc).
    """

    threshold: float = 0.5
    """A frame at or above this speech probability starts (or continues) speech."""
    neg_threshold: float = 0.35
    """Speech ends only when the probability falls below this (hysteresis)."""
    min_pause_s: float = 0.3
    """A pause at least this long ends a line; shorter pauses stay inside it."""
    min_speech_s: float = 0.2
    """Speech shorter than this is dropped (clicks, breaths, hits)."""
    max_line_s: float = 5.0
    """No line is longer: longer stretches are split at their quietest point."""
    min_line_s: float = 1.5
    """When a long stretch is split, no piece is shorter than this."""
    pad_s: float = 0.1
    """Added before and after each line (never past the middle of the gap to a neighbour)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ValueError(
                "VAD thresholds need 0 < neg_threshold <= threshold < 1, got "
                f"neg_threshold={self.neg_threshold}, threshold={self.threshold}"
            )
        for name in ("min_pause_s", "min_speech_s", "pad_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.min_line_s > 0 and 2 * self.min_line_s <= self.max_line_s):
            raise ValueError(
                f"need 0 < min_line_s and 2 * min_line_s <= max_line_s, got "
                f"min_line_s={self.min_line_s}, max_line_s={self.max_line_s}"
            )

    @classmethod
    def coerce(
        cls, options: SpeechSegmentOptions | Mapping[str, Any] | None
    ) -> SpeechSegmentOptions:
        return coerce_options(cls, options, what="speech segment")


@dataclass(frozen=True)
class SpeechSegment:
    """One line-sized stretch of speech, padded, in seconds from the start of the audio."""

    start: float
    end: float
    speech_start: float
    """Where the VAD's speech starts, before padding."""
    speech_end: float
    mean_probability: float
    """Mean VAD probability over the unpadded segment: low means doubtful speech."""


# ---------------------------------------------------------------------------------------------
# Probabilities -> segments (pure functions)


def speech_runs(probabilities: np.ndarray, *, threshold: float, neg_threshold: float) -> np.ndarray:
    """(num_runs, 2) int64 [first, stop) frame ranges of speech, by silero's hysteresis rule.

    probabilities : (num_frames,) float32 per-frame speech probabilities.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    # Hysteresis as a scan would need a Python loop over every frame; instead: a frame is
    # speech when it is >= threshold, or >= neg_threshold and connected (through frames that
    # are all >= neg_threshold) to a frame >= threshold earlier in the same stretch.
    above_low = probabilities >= neg_threshold
    above_high = probabilities >= threshold
    runs = _true_runs(above_low)
    kept = []
    for first, stop in runs:
        highs = np.flatnonzero(above_high[first:stop])
        if len(highs):
            kept.append((first + int(highs[0]), stop))
    return np.array(kept, dtype=np.int64).reshape(-1, 2)


def _true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, stop) ranges where ``mask`` (num_frames,) bool is True."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def merge_close_runs(runs: np.ndarray, *, min_pause_frames: int) -> np.ndarray:
    """Join runs whose gap is shorter than ``min_pause_frames``: (num_runs, 2) -> (m, 2)."""
    if len(runs) < 2:
        return runs.copy()
    gaps = runs[1:, 0] - runs[:-1, 1]
    starts_new = np.concatenate(([True], gaps >= min_pause_frames))
    group = np.cumsum(starts_new) - 1
    merged = np.empty((int(group[-1]) + 1, 2), dtype=np.int64)
    merged[:, 0] = runs[starts_new, 0]
    merged[:, 1] = np.maximum.reduceat(runs[:, 1], np.flatnonzero(starts_new))
    return merged


def split_long_runs(
    runs: np.ndarray, probabilities: np.ndarray, *, max_frames: int, min_frames: int
) -> np.ndarray:
    """Split every run longer than ``max_frames`` into as few pieces as the cap allows, each
    cut at the quietest frame where it can go.

    A run of L frames becomes ceil(L / max_frames) pieces: the first cut may go anywhere that
    leaves a first piece within the cap and a rest that the remaining pieces can hold, and no
    piece shorter than ``min_frames``; within that window it takes the frame of lowest smoothed
    probability (the likeliest breath or turn change). The cut frame belongs to neither piece.
    runs : (num_runs, 2) [first, stop) frames; probabilities : (num_frames,) float32.
    """
    smoothed = np.convolve(
        np.asarray(probabilities, dtype=np.float32),
        np.full(SPLIT_SMOOTHING_FRAMES, 1.0 / SPLIT_SMOOTHING_FRAMES, dtype=np.float32),
        mode="same",
    )
    pieces: list[tuple[int, int]] = []
    pending = [(int(a), int(b)) for a, b in runs]
    pending.reverse()
    while pending:
        first, stop = pending.pop()
        if stop - first <= max_frames:
            pieces.append((first, stop))
            continue
        pieces_needed = -(-(stop - first) // max_frames)
        low = max(first + min_frames, stop - (pieces_needed - 1) * max_frames)
        high = min(first + max_frames, stop - min_frames)
        if high < low:  # only when 2 * min_frames > max_frames; cut in the middle
            low = high = (first + stop) // 2
        # The quietest frame; among equals, the one nearest the middle keeps pieces even.
        window = smoothed[low : high + 1]
        candidates = np.flatnonzero(window <= window.min() + 1e-6) + low
        cut = int(candidates[np.argmin(np.abs(candidates - (first + stop) / 2))])
        pending.append((cut + 1, stop))
        pending.append((first, cut))
    return np.array(pieces, dtype=np.int64).reshape(-1, 2)


def segments_from_probabilities(
    probabilities: np.ndarray,
    *,
    duration: float,
    options: SpeechSegmentOptions | Mapping[str, Any] | None = None,
) -> list[SpeechSegment]:
    """Line-sized speech segments from per-frame VAD probabilities.

    probabilities : (num_frames,) float32, one per 32 ms frame from the start of the audio.
    duration : seconds of audio (padding never goes past it).
    """
    options = SpeechSegmentOptions.coerce(options)
    probabilities = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    runs = speech_runs(
        probabilities, threshold=options.threshold, neg_threshold=options.neg_threshold
    )
    runs = merge_close_runs(runs, min_pause_frames=_frames(options.min_pause_s))
    runs = runs[(runs[:, 1] - runs[:, 0]) >= max(1, _frames(options.min_speech_s))]
    runs = split_long_runs(
        runs,
        probabilities,
        max_frames=max(1, int(options.max_line_s / FRAME_S)),  # floor: never over the cap
        min_frames=max(1, _frames(options.min_line_s)),
    )
    speech = [(first * FRAME_S, min(stop * FRAME_S, duration)) for first, stop in runs]
    segments = []
    for number, (begin, end) in enumerate(speech):
        before = speech[number - 1][1] if number else 0.0
        after = speech[number + 1][0] if number + 1 < len(speech) else duration
        first, stop = runs[number]
        segments.append(
            SpeechSegment(
                start=round(max(begin - options.pad_s, (before + begin) / 2, 0.0), 3),
                end=round(min(end + options.pad_s, (end + after) / 2, duration), 3),
                speech_start=round(begin, 3),
                speech_end=round(end, 3),
                mean_probability=round(float(probabilities[first:stop].mean()), 3),
            )
        )
    return segments


def _frames(seconds: float) -> int:
    return round(seconds / FRAME_S)


# ---------------------------------------------------------------------------------------------
# Audio -> probabilities (silero-vad)


def speech_probabilities(audio: np.ndarray, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(ceil(num_samples / 512),) float32 silero-vad speech probabilities of 32 ms frames.

    audio : (num_samples,) float32 mono at 16 kHz, as from `importers.media.decode_audio`.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"speech detection needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    if not len(audio):
        return np.zeros(0, dtype=np.float32)
    model = _vad_model()
    with _vad_lock:  # one ONNX session; its calls are independent, but keep memory bounded
        probabilities = model.audio_forward(audio, sampling_rate=SAMPLE_RATE)
    return np.asarray(probabilities, dtype=np.float32)[: -(-len(audio) // FRAME_SAMPLES)]


_vad_lock = threading.Lock()


@functools.cache
def _vad_model() -> Any:
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad

        with warnings.catch_warnings():  # its resource lookup warns
            warnings.simplefilter("ignore", DeprecationWarning)
            return load_silero_vad(sequence=True)
    except ImportError as error:
        raise RuntimeError(
            f"speech detection needs silero-vad and onnxruntime ({error}); "
            "install speaker-grouping's dependencies"
        ) from None
    finally:
        torch.set_num_threads(threads)  # silero-vad's import sets it to 1


@functools.cache
def silero_version() -> str:
    try:
        return package_version("silero-vad")
    except PackageNotFoundError:
        return "not-installed"


# ---------------------------------------------------------------------------------------------
# Segments -> lines


def detect_speech_segments(
    audio: np.ndarray,
    *,
    source: str | Path,
    sample_rate: int = SAMPLE_RATE,
    options: SpeechSegmentOptions | Mapping[str, Any] | None = None,
) -> list[SpeechSegment]:
    """Segments of ``audio`` (num_samples,) float32 at 16 kHz; `NoSpeechError` when none.

    ``source`` names the file in the error.
    """
    probabilities = speech_probabilities(audio, sample_rate=sample_rate)
    segments = segments_from_probabilities(
        probabilities, duration=len(audio) / sample_rate, options=options
    )
    if not segments:
        raise NoSpeechError(
            f"{source}: no speech found to cut into lines "
            f"({len(audio) / sample_rate:.1f} s of audio, VAD threshold "
            f"{SpeechSegmentOptions.coerce(options).threshold})"
        )
    logger.info("%s: %d speech segments", source, len(segments))
    return segments


def lines_from_segments(segments: list[SpeechSegment]) -> list[SubtitleLine]:
    """One empty-text `SubtitleLine` per segment, flagged ``no_subtitles``.

    ``source_line`` is 0: the line comes from no file.
    """
    return [
        SubtitleLine(
            index=number,
            start=segment.start,
            end=segment.end,
            text="",
            style=None,
            actor=None,
            source_line=0,
            flags=frozenset({FLAG_NO_SUBTITLES}),
        )
        for number, segment in enumerate(segments, start=1)
    ]


def speech_lines(
    video: str | Path,
    audio: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    options: SpeechSegmentOptions | Mapping[str, Any] | None = None,
) -> ParsedSubtitles:
    """Lines of ``video`` cut from its decoded ``audio``, as a `ParsedSubtitles` of format
    ``"speech"`` so that the import treats them like any subtitle file's lines."""
    segments = detect_speech_segments(audio, source=video, sample_rate=sample_rate, options=options)
    return ParsedSubtitles(
        path=Path(video),
        format=SPEECH_FORMAT,
        encoding="",
        lines=lines_from_segments(segments),
        non_dialogue=[],
        skipped=[],
        duplicates_merged=0,
    )


def speech_report(options: SpeechSegmentOptions | Mapping[str, Any] | None) -> dict[str, Any]:
    """What the import report records about lines from speech detection."""
    return {
        "lines_from": "speech detection (no subtitles)",
        "flag": f"{FLAG_NO_SUBTITLES} on every line; text empty unless speech recognition ran",
        "vad": f"silero-vad {silero_version()} (sequence ONNX)",
        "settings": asdict(SpeechSegmentOptions.coerce(options)),
    }
