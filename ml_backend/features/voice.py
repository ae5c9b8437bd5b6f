"""resemblyzer's GE2E speaker encoder, batched across lines: the offline default voice embedder.

``VoiceEncoder.embed_utterance`` runs the network once per clip. On short subtitle lines that
per-call overhead dominates (about 70 ms a line here), while the network itself is cheap when
it sees many 1.6 s partial windows at once. So this module cuts every clip of a batch into
the same partial windows ``embed_utterance`` would, runs all the windows of all the clips
through the encoder in shared batches, and averages them back per clip exactly as it does;
the result matches ``embed_utterance`` to float rounding (tests pin it to 1e-5).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version as package_version

import numpy as np

from ml_backend.features.embedder import ModelUnavailableError, check_batch, normalise_rows
from ml_backend.features.store import ModelInfo

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
RESEMBLYZER_DIM = 256
PARTIAL_RATE = 1.3
"""Partial windows per second, and the share of a window the last one must cover to count:
``embed_utterance``'s defaults, kept so that batched and unbatched embeddings agree."""
PARTIAL_MIN_COVERAGE = 0.75
MIN_TRIMMED_SAMPLES = SAMPLE_RATE // 10
"""Below this much audio left after silence trimming the VAD has eaten the line (a whisper or a
one-word line under music): embed the untrimmed clip instead of a few milliseconds."""

_load_lock = threading.Lock()
_encoders: dict[str, object] = {}


def _encoder(device: str) -> object:
    """One VoiceEncoder per process and device: the backend builds embedders per request."""
    with _load_lock:
        if device not in _encoders:
            try:
                from resemblyzer import VoiceEncoder
            except ImportError as error:
                raise ModelUnavailableError(
                    f"resemblyzer cannot be imported ({error}); install the project with "
                    "`pip install -e .[bench]` (it needs setuptools<81 or webrtcvad-wheels)"
                ) from None
            _encoders[device] = VoiceEncoder(device, verbose=False)
        return _encoders[device]


class ResemblyzerEmbedder:
    """256-d GE2E embeddings of 16 kHz clips, many clips per network call.

    trim_silences : apply resemblyzer's VAD trimming of long silences (``preprocess_wav``)
        before embedding, as its README does.
    batch_size : partial windows per network call; bounds memory (each window is 160x40 floats).
    num_threads : torch intra-op threads, and threads computing the mel spectrograms.
    """

    def __init__(
        self,
        *,
        trim_silences: bool = True,
        batch_size: int = 128,
        num_threads: int = 2,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.trim_silences = trim_silences
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.device = device
        self.info = ModelInfo(
            name="resemblyzer",
            version=f"{_resemblyzer_version()}-ge2e{'-vad' if trim_silences else ''}",
            dim=RESEMBLYZER_DIM,
        )

    def embed(
        self, batch: Sequence[np.ndarray], *, hook: Callable[..., None] | None = None
    ) -> np.ndarray:
        """(len(batch), 256) float32 unit rows; each item is (num_samples,) float32 at 16 kHz."""
        check_batch(batch, kind="voice")
        if not batch:
            return np.zeros((0, RESEMBLYZER_DIM), dtype=np.float32)
        import torch

        encoder = _encoder(self.device)
        torch.set_num_threads(self.num_threads)
        with ThreadPoolExecutor(max_workers=max(1, self.num_threads)) as pool:
            windows_per_clip = list(pool.map(self._partial_mels, batch))
        owner = np.repeat(np.arange(len(batch)), [len(w) for w in windows_per_clip])
        windows = np.concatenate(windows_per_clip)
        sums = np.zeros((len(batch), RESEMBLYZER_DIM), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(windows), self.batch_size):
                chunk = torch.from_numpy(windows[start : start + self.batch_size])
                partials = encoder(chunk.to(encoder.device)).cpu().numpy()
                np.add.at(sums, owner[start : start + self.batch_size], partials)
                if hook is not None:
                    done = min(start + self.batch_size, len(windows))
                    hook("voice", completed=done, total=len(windows))
        # The mean of the partials, L2-normalised: the mean's scale cancels, so the sum will do.
        return normalise_rows(np.nan_to_num(sums))

    def embed_unbatched(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """One ``embed_utterance`` call per clip: the reference the batched path must match."""
        import torch

        check_batch(batch, kind="voice")
        encoder = _encoder(self.device)
        torch.set_num_threads(self.num_threads)
        rows = [
            encoder.embed_utterance(
                self.prepare(clip), rate=PARTIAL_RATE, min_coverage=PARTIAL_MIN_COVERAGE
            )
            for clip in batch
        ]
        return normalise_rows(np.nan_to_num(np.asarray(rows, dtype=np.float32)))

    def prepare(self, clip: np.ndarray) -> np.ndarray:
        """resemblyzer's ``preprocess_wav`` for a 16 kHz clip, made safe for silent clips."""
        from resemblyzer.audio import audio_norm_target_dBFS, trim_long_silences

        wav = np.asarray(clip, dtype=np.float32)
        rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
        if rms > 0:  # resemblyzer divides by it: an all-zero clip would turn into NaN
            gain_db = audio_norm_target_dBFS - 20 * np.log10(rms)
            if gain_db > 0:
                wav = (wav * 10 ** (gain_db / 20)).astype(np.float32)
        if self.trim_silences:
            trimmed = trim_long_silences(wav)
            if len(trimmed) >= MIN_TRIMMED_SAMPLES:
                wav = trimmed
        return wav

    def _partial_mels(self, clip: np.ndarray) -> np.ndarray:
        """(num_windows, 160, 40) float32: the windows ``embed_utterance`` would feed the net."""
        from resemblyzer import VoiceEncoder
        from resemblyzer.audio import wav_to_mel_spectrogram

        wav = self.prepare(clip)
        wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(
            len(wav), PARTIAL_RATE, PARTIAL_MIN_COVERAGE
        )
        needed = wav_slices[-1].stop
        if needed >= len(wav):
            wav = np.pad(wav, (0, needed - len(wav)))
        mel = wav_to_mel_spectrogram(wav)
        return np.stack([mel[window] for window in mel_slices])


def _resemblyzer_version() -> str:
    try:
        return package_version("resemblyzer")
    except Exception:  # not installed: the version only labels vectors, loading reports it
        return "unknown"
