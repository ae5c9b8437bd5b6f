"""resemblyzer's GE2E speaker encoder, batched across lines: the offline default voice embedder.

``VoiceEncoder.embed_utterance`` runs the network once per clip. On short subtitle lines that
per-call overhead dominates, while the network itself is cheap when
it sees many 1.6 s partial windows at once. So this module cuts every clip of a batch into
the same partial windows ``embed_utterance`` would, runs all the windows of all the clips
through the encoder in shared batches, and averages them back per clip exactly as it does;
the result matches ``embed_utterance`` to float rounding (tests pin it to 1e-5). The speed-ups
of this module are measured in bench/README.md, "Measurements behind code choices".
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING

import numpy as np

from ml_backend.features.base import ModelUnavailableError, check_batch, normalise_rows
from ml_backend.features.store import ModelInfo

if TYPE_CHECKING:
    import torch

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
    workers : threads that compute mel spectrograms and run network calls side by side.

    Both cores are used by running ``workers`` network calls at once with one torch thread
    each, rather than one call with two torch (OpenMP) threads: on a busy machine OpenMP's
    spinning barriers made the latter many times slower, and on an idle one the two are on a
    par. torch's thread count is restored after each call.
    """

    def __init__(
        self,
        *,
        trim_silences: bool = True,
        batch_size: int = 64,
        workers: int = 2,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.trim_silences = trim_silences
        self.batch_size = batch_size
        self.workers = workers
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
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="resemblyzer") as pool:
                windows_per_clip = list(pool.map(self._partial_mels, batch))
                owner = np.repeat(np.arange(len(batch)), [len(w) for w in windows_per_clip])
                windows = np.concatenate(windows_per_clip)
                # Every worker gets a share: 70 windows in calls of 64 and 6 would leave one
                # core idle for most of the batch.
                size = min(self.batch_size, -(-len(windows) // self.workers))
                starts = range(0, len(windows), size)

                def run(start: int) -> np.ndarray:
                    chunk = torch.from_numpy(windows[start : start + size])
                    with torch.inference_mode():
                        return encoder(chunk.to(encoder.device)).cpu().numpy()

                sums = np.zeros((len(batch), RESEMBLYZER_DIM), dtype=np.float64)
                for start, partials in zip(starts, pool.map(run, starts), strict=True):
                    np.add.at(sums, owner[start : start + size], partials)
                    if hook is not None:
                        done = min(start + size, len(windows))
                        hook("voice", completed=done, total=len(windows))
        finally:
            torch.set_num_threads(previous_threads)
        # The mean of the partials, L2-normalised: the mean's scale cancels, so the sum will do.
        return normalise_rows(np.nan_to_num(sums))

    def embed_unbatched(
        self, batch: Sequence[np.ndarray], *, torch_threads: int | None = None
    ) -> np.ndarray:
        """One ``embed_utterance`` call per clip: the reference the batched path must match.

        torch_threads : torch's intra-op threads for the calls (None: leave torch's setting).
        """
        import torch

        check_batch(batch, kind="voice")
        encoder = _encoder(self.device)
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(torch_threads or previous_threads)
        try:
            rows = [
                encoder.embed_utterance(
                    self.prepare(clip, reference=True),
                    rate=PARTIAL_RATE,
                    min_coverage=PARTIAL_MIN_COVERAGE,
                )
                for clip in batch
            ]
        finally:
            torch.set_num_threads(previous_threads)
        return normalise_rows(np.nan_to_num(np.asarray(rows, dtype=np.float32)))

    def prepare(self, clip: np.ndarray, *, reference: bool = False) -> np.ndarray:
        """resemblyzer's ``preprocess_wav`` for a 16 kHz clip, made safe for silent clips.

        reference : trim with resemblyzer's own ``trim_long_silences`` (the unbatched baseline)
            rather than `trim_long_silences`, its equal that is 3-4x cheaper.
        """
        from resemblyzer.audio import audio_norm_target_dBFS

        wav = np.asarray(clip, dtype=np.float32)
        rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
        if rms > 0:  # resemblyzer divides by it: an all-zero clip would turn into NaN
            gain_db = audio_norm_target_dBFS - 20 * np.log10(rms)
            if gain_db > 0:
                wav = (wav * 10 ** (gain_db / 20)).astype(np.float32)
        if self.trim_silences:
            if reference:
                from resemblyzer.audio import trim_long_silences as trim
            else:
                trim = trim_long_silences
            trimmed = trim(wav)
            if len(trimmed) >= MIN_TRIMMED_SAMPLES:
                wav = trimmed
        return wav

    def _partial_mels(self, clip: np.ndarray) -> np.ndarray:
        """(num_windows, 160, 40) float32: the windows ``embed_utterance`` would feed the net."""
        from resemblyzer import VoiceEncoder

        wav = self.prepare(clip)
        wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(
            len(wav), PARTIAL_RATE, PARTIAL_MIN_COVERAGE
        )
        needed = wav_slices[-1].stop
        if needed >= len(wav):
            wav = np.pad(wav, (0, needed - len(wav)))
        mel = mel_spectrogram(wav)
        return np.stack([mel[window] for window in mel_slices])


def trim_long_silences(wav: np.ndarray) -> np.ndarray:
    """resemblyzer's ``trim_long_silences``, to the sample, without its per-sample Python call.

    resemblyzer packs the PCM with ``struct.pack(*samples)``, which was most of the call's
    time; the VAD, the smoothing and the dilation are the same code.
    """
    import webrtcvad
    from resemblyzer.audio import int16_max
    from resemblyzer.hparams import (
        vad_max_silence_length,
        vad_moving_average_width,
        vad_window_length,
    )
    from scipy.ndimage import binary_dilation

    samples_per_window = (vad_window_length * SAMPLE_RATE) // 1000
    wav = wav[: len(wav) - (len(wav) % samples_per_window)]
    pcm = np.round(wav * int16_max).astype(np.int16).tobytes()
    vad = webrtcvad.Vad(mode=3)
    step = 2 * samples_per_window
    flags = np.array(
        [
            vad.is_speech(pcm[start : start + step], SAMPLE_RATE)
            for start in range(0, len(pcm), step)
        ]
    )
    width = vad_moving_average_width
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    sums = np.cumsum(padded, dtype=float)
    sums[width:] = sums[width:] - sums[:-width]
    mask = np.round(sums[width - 1 :] / width).astype(bool)
    mask = binary_dilation(mask, np.ones(vad_max_silence_length + 1))
    return wav[np.repeat(mask, samples_per_window)]


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(num_frames, 40) float32: resemblyzer's ``wav_to_mel_spectrogram``, much faster.

    resemblyzer calls ``librosa.feature.melspectrogram``, which cost more per line than the
    network itself. This is the same computation (centred 25 ms Hann frames every 10 ms, zero
    padding, power spectrum, the same Slaney mel filters) done with torch's single-precision
    FFT, faster again than numpy's double-precision one; it agrees to about 1e-6 of the
    largest value.
    """
    import torch

    window, basis = _mel_constants()
    n_fft = len(window)
    padded = np.pad(np.asarray(wav, dtype=np.float32), n_fft // 2)
    with torch.inference_mode():
        frames = torch.from_numpy(padded).unfold(0, n_fft, _hop_length()) * window
        spectrum = torch.fft.rfft(frames, dim=1)
        power = spectrum.real.square() + spectrum.imag.square()
        return (power @ basis).numpy()


def _hop_length() -> int:
    from resemblyzer.hparams import mel_window_step

    return int(SAMPLE_RATE * mel_window_step / 1000)


@functools.cache
def _mel_constants() -> tuple[torch.Tensor, torch.Tensor]:
    """resemblyzer's analysis window and mel filterbank (transposed, (n_fft // 2 + 1, 40)),
    built by librosa once per process."""
    import librosa
    import torch
    from resemblyzer.hparams import mel_n_channels, mel_window_length

    n_fft = int(SAMPLE_RATE * mel_window_length / 1000)
    window = librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=n_fft, n_mels=mel_n_channels)
    return torch.from_numpy(window), torch.from_numpy(basis.T.astype(np.float32).copy())


def _resemblyzer_version() -> str:
    try:
        return package_version("resemblyzer")
    except Exception:  # not installed: the version only labels vectors, loading reports it
        return "unknown"
