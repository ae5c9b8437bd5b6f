"""How usable each line's clip is for telling voices apart: duration, speech share, loudness, SNR.

The confidence model (docs/architecture.md §4) learns from these which lines' embeddings to trust: a
0.4 s line, a clip that is mostly music, or a whisper under a noise bed gives a voice vector
that says little about the speaker.

Stats, per clip (all finite, so models can use them without special cases):

- ``duration``: seconds.
- ``speech_ratio``: share of 32 ms frames the silero VAD calls speech (probability >= 0.5).
- ``snr_db``: speech-to-background ratio. Background power is the median power of the frames
  the VAD calls non-speech when there are enough of them (the importer's padding and the pauses
  between phrases give most lines some); otherwise the 10th percentile of all frames (the gaps
  between syllables). Speech power is the mean over speech frames, less that background. Clipped
  to [-30, 100] dB; a clip with no speech frames gets -30.
- ``rms_dbfs``: RMS level of the whole clip, floored at -120 dBFS.

The VAD is silero-vad's ONNX "sequence" model when onnxruntime is installed: it runs a whole
clip in one call on its own single thread, so it can run beside a torch voice encoder without
fighting over torch's threads, and it needs less CPU than the batched TorchScript model
(bench/README.md, "Measurements behind code choices"). Without onnxruntime the TorchScript
model runs instead, many clips per call. Both give the same probabilities (to 1e-7).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import numpy as np

from foundation.hook import Hook
from ml_backend.features.store import ModelInfo

logger = logging.getLogger(__name__)

QUALITY_KEYS = ("duration", "speech_ratio", "snr_db", "rms_dbfs")
SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
"""silero-vad's frame at 16 kHz (32 ms): every stat is counted in these frames."""
SPEECH_THRESHOLD = 0.5
MIN_BACKGROUND_FRAMES = 8
"""Non-speech frames (about 0.25 s) needed before their median is trusted as the background."""
BACKGROUND_PERCENTILE = 10.0
SNR_RANGE_DB = (-30.0, 100.0)
POWER_FLOOR = 1e-12
"""-120 dBFS: digital silence gets a finite level."""
ESTIMATOR_VERSION = "1"
"""Bump when the stats' definitions change, so stored stats are recomputed."""
VAD_BACKENDS = ("onnx", "torchscript")
_JIT_BATCH_SAMPLES = 128 * 5 * SAMPLE_RATE
"""Padded samples per TorchScript call: about 128 five-second clips."""


def frame_powers(clip: np.ndarray) -> np.ndarray:
    """(num_frames,) float64 mean square of each VAD frame; the last frame over its own samples."""
    clip = np.asarray(clip, dtype=np.float64).reshape(-1)
    num_frames = -(-len(clip) // FRAME_SAMPLES)
    padded = np.zeros(num_frames * FRAME_SAMPLES)
    padded[: len(clip)] = clip
    sums = (padded.reshape(num_frames, FRAME_SAMPLES) ** 2).sum(axis=1)
    counts = np.full(num_frames, FRAME_SAMPLES, dtype=np.float64)
    if num_frames:
        counts[-1] = len(clip) - (num_frames - 1) * FRAME_SAMPLES
    return np.maximum(sums / counts, POWER_FLOOR)


def clip_quality(
    clip: np.ndarray, speech_probs: np.ndarray, *, sample_rate: int = SAMPLE_RATE
) -> dict[str, float]:
    """The stats of one clip from its samples and its per-frame VAD probabilities."""
    clip = np.asarray(clip, dtype=np.float32).reshape(-1)
    powers = frame_powers(clip)
    if len(speech_probs) != len(powers):
        raise ValueError(f"{len(speech_probs)} VAD frames for a clip of {len(powers)} frames")
    duration = len(clip) / sample_rate
    if not len(clip):
        return {"duration": 0.0, "speech_ratio": 0.0, "snr_db": SNR_RANGE_DB[0], "rms_dbfs": -120.0}
    speech = np.asarray(speech_probs) >= SPEECH_THRESHOLD
    rms_dbfs = 10.0 * np.log10(max(float(np.mean(clip.astype(np.float64) ** 2)), POWER_FLOOR))
    return {
        "duration": duration,
        "speech_ratio": float(speech.mean()),
        "snr_db": _snr_db(powers, speech),
        "rms_dbfs": float(rms_dbfs),
    }


def _snr_db(powers: np.ndarray, speech: np.ndarray) -> float:
    low, high = SNR_RANGE_DB
    if not speech.any():
        return low
    if (~speech).sum() >= MIN_BACKGROUND_FRAMES:
        background = float(np.median(powers[~speech]))
    else:
        background = float(np.percentile(powers, BACKGROUND_PERCENTILE))
    # Speech frames hold speech plus background; take the background out to estimate the speech.
    excess = float(np.mean(powers[speech])) / background - 1.0
    return float(np.clip(10.0 * np.log10(max(excess, 10.0 ** (low / 10.0))), low, high))


class QualityMeter:
    """Quality stats for batches of 16 kHz clips; loads the VAD once per process, on first use.

    backend : ``"onnx"`` or ``"torchscript"``; None picks onnx when onnxruntime is installed.
    """

    def __init__(self, *, backend: str | None = None) -> None:
        if backend not in (None, *VAD_BACKENDS):
            raise ValueError(f"unknown VAD backend {backend!r}; expected one of {VAD_BACKENDS}")
        self.backend = backend

    @property
    def info(self) -> ModelInfo:
        """What the stats depend on: the VAD release and the definitions above."""
        return ModelInfo(
            name="silero-vad+frame-energy",
            version=f"{_silero_version()}/{ESTIMATOR_VERSION}",
            dim=len(QUALITY_KEYS),
        )

    @property
    def uses_torch_threads(self) -> bool:
        """True for the TorchScript VAD; the ONNX one keeps to its own thread, so it can run
        beside a torch encoder without oversubscribing the cores."""
        return self._vad().backend == "torchscript"

    def load(self) -> None:
        """Load the VAD now (importing silero-vad changes torch's thread count; this restores
        it), so that callers can do it on their own thread before starting workers."""
        self._vad()

    def measure(
        self, clips: Sequence[np.ndarray], *, hook: Hook | None = None
    ) -> dict[str, np.ndarray]:
        """Stat name -> (len(clips),) float32, for (num_samples,) float32 clips at 16 kHz."""
        clips = [np.ascontiguousarray(clip, dtype=np.float32).reshape(-1) for clip in clips]
        probabilities = self._vad().probabilities(clips, hook=hook)
        rows = [clip_quality(clip, p) for clip, p in zip(clips, probabilities, strict=True)]
        return {key: np.array([row[key] for row in rows], dtype=np.float32) for key in QUALITY_KEYS}

    def _vad(self) -> _Vad:
        backend = self.backend
        if backend is None:
            has_onnx = importlib.util.find_spec("onnxruntime") is not None
            backend = "onnx" if has_onnx else "torchscript"
        with _vad_lock:
            if backend not in _vads:
                _vads[backend] = _Vad(backend)
            return _vads[backend]


class _Vad:
    """silero-vad's per-frame speech probabilities, whichever runtime is available."""

    def __init__(self, backend: str) -> None:
        import torch

        self._lock = threading.Lock()
        threads = torch.get_num_threads()
        self.backend = backend
        try:
            from silero_vad import load_silero_vad

            with warnings.catch_warnings():  # its resource lookup and torch.jit.load warn
                warnings.simplefilter("ignore", DeprecationWarning)
                if backend == "onnx":
                    self._model: Any = load_silero_vad(sequence=True)
                else:
                    self._model = load_silero_vad(onnx=False)
        except ImportError as error:
            raise RuntimeError(
                f"the {backend} VAD cannot load ({error}); install silero-vad "
                + ("and onnxruntime" if backend == "onnx" else "")
            ) from None
        finally:
            torch.set_num_threads(threads)  # silero-vad's import sets it to 1
        logger.info("silero-vad loaded (%s)", self.backend)

    def probabilities(self, clips: Sequence[np.ndarray], *, hook: Hook | None) -> list[np.ndarray]:
        if self.backend == "onnx":
            return self._sequence(clips, hook)
        return self._batched(clips, hook)

    def _sequence(self, clips: Sequence[np.ndarray], hook: Hook | None) -> list[np.ndarray]:
        results = []
        for done, clip in enumerate(clips, start=1):
            frames = -(-len(clip) // FRAME_SAMPLES)
            probs = self._model.audio_forward(clip) if frames else np.zeros(0, np.float32)
            results.append(np.asarray(probs, dtype=np.float32)[:frames])
            if hook is not None:
                hook("quality", completed=done, total=len(clips))
        return results

    def _batched(self, clips: Sequence[np.ndarray], hook: Hook | None) -> list[np.ndarray]:
        """Clips of similar length share one padded call: the model is causal, so padding after
        a clip's end does not change its frames, and the per-frame Python loop runs once per
        batch instead of once per clip. The lock is there because the model keeps state
        between calls."""
        import torch

        results: list[np.ndarray] = [np.zeros(0, np.float32)] * len(clips)
        order = sorted((i for i in range(len(clips)) if len(clips[i])), key=lambda i: len(clips[i]))
        batches: list[list[int]] = [[]]
        for index in order:  # shortest first, so a batch's padding is its last clip's length
            if batches[-1] and (len(batches[-1]) + 1) * len(clips[index]) > _JIT_BATCH_SAMPLES:
                batches.append([])
            batches[-1].append(index)
        done = len(clips) - len(order)
        for batch in filter(None, batches):
            padded = np.zeros((len(batch), len(clips[batch[-1]])), dtype=np.float32)
            for row, index in enumerate(batch):
                padded[row, : len(clips[index])] = clips[index]
            with self._lock, torch.no_grad(), _one_torch_thread():
                probs = self._model.audio_forward(torch.from_numpy(padded), SAMPLE_RATE).numpy()
            for row, index in enumerate(batch):
                results[index] = probs[row, : -(-len(clips[index]) // FRAME_SAMPLES)].copy()
            done += len(batch)
            if hook is not None:
                hook("quality", completed=done, total=len(clips))
        return results


@functools.cache
def _silero_version() -> str:
    try:
        return package_version("silero-vad")
    except PackageNotFoundError:
        return "not-installed"  # loading the VAD then says how to install it


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The TorchScript VAD's ops are tiny: with 2 intra-op threads it ran 17-30x slower than
    with 1 here (thread hand-offs dominate). The setting is process-wide, which is why
    `QualityMeter.uses_torch_threads` tells callers not to run it beside a torch encoder."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_vad_lock = threading.Lock()
_vads: dict[str, _Vad] = {}
