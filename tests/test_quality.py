"""Per-clip quality stats on real signals: synthetic speech, silence, noise, speech in noise."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from bench import audio_effects
from bench.voices import Voice, available_voices, synthesize
from ml_backend.features.quality import (
    QUALITY_KEYS,
    QualityMeter,
    clip_quality,
    frame_powers,
)

RATE = 16000
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs away."
BACKENDS = [
    pytest.param(
        "onnx",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed"
        ),
    ),
    "torchscript",
]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """A sentence spoken by flite's kal16 with 0.3 s of silence either side, as the importer's
    padding leaves around a line."""
    voice = Voice("flite", "kal16")
    if voice not in available_voices(allow_mbrola=False):
        pytest.skip("flite's kal16 voice is not installed")
    pad = np.zeros(int(0.3 * RATE), np.float32)
    return np.concatenate([pad, synthesize(voice, SENTENCE), pad])


def _noise(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "white":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "pink":
        return audio_effects.pink_noise(n, rng)
    return audio_effects.music_bed(n, RATE, rng)


@pytest.mark.parametrize("backend", BACKENDS)
def test_speech_silence_and_noise_get_the_expected_speech_ratio(speech: np.ndarray, backend: str):
    clips = [
        speech,
        np.zeros(3 * RATE, np.float32),
        0.05 * _noise("white", 3 * RATE, 1),
        0.1 * _noise("pink", 3 * RATE, 2),
    ]
    stats = QualityMeter(backend=backend).measure(clips)
    assert list(stats) == list(QUALITY_KEYS)
    ratio = stats["speech_ratio"]
    assert ratio[0] > 0.7
    assert ratio[0] < 0.95  # the 0.6 s of padding is not speech
    assert ratio[1:].max() < 0.05
    np.testing.assert_allclose(stats["duration"], [len(c) / RATE for c in clips], rtol=1e-6)
    assert stats["snr_db"][0] > 60  # clean speech over digital silence
    np.testing.assert_array_equal(stats["snr_db"][1:], -30.0)  # no speech, no signal
    assert stats["rms_dbfs"][1] == -120.0


def test_both_vad_backends_agree(speech: np.ndarray):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    clips = [
        speech,
        speech[: RATE // 2],
        audio_effects.mix_at_snr(speech, _noise("pink", 99999, 3), 5),
    ]
    onnx = QualityMeter(backend="onnx").measure(clips)
    torchscript = QualityMeter(backend="torchscript").measure(clips)
    for key in QUALITY_KEYS:
        np.testing.assert_allclose(onnx[key], torchscript[key], atol=1e-3, err_msg=key)


@pytest.mark.parametrize("bed", ["white", "pink", "music"])
def test_snr_estimate_follows_the_mixing_snr(speech: np.ndarray, bed: str):
    noise = _noise(bed, len(speech), 4)
    levels = [0.0, 10.0, 20.0]
    clips = [audio_effects.mix_at_snr(speech, noise, snr) for snr in levels]
    estimate = QualityMeter().measure(clips)["snr_db"]
    assert estimate[0] < estimate[1] < estimate[2], estimate
    np.testing.assert_allclose(estimate, levels, atol=4.0)  # 32 ms frames, speech with gaps


def test_snr_estimate_without_padding_falls_back_to_quiet_frames(speech: np.ndarray):
    """A clip cut tight around the speech has too few non-speech frames for their median; the
    quietest frames (gaps between syllables) stand in for the background."""
    tight = speech[int(0.3 * RATE) : -int(0.3 * RATE)]
    noise = _noise("white", len(tight), 5)
    estimate = QualityMeter().measure([audio_effects.mix_at_snr(tight, noise, s) for s in (0, 20)])
    assert estimate["snr_db"][0] < 3.0
    assert 15.0 < estimate["snr_db"][1] < 25.0


def test_rms_dbfs_of_a_known_sine():
    t = np.arange(RATE) / RATE
    sine = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stats = clip_quality(sine, np.zeros(len(frame_powers(sine))))
    assert stats["rms_dbfs"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert stats["duration"] == 1.0


def test_frame_powers_count_the_last_partial_frame_over_its_own_samples():
    clip = np.concatenate([np.zeros(512), np.full(100, 0.5)])
    np.testing.assert_allclose(frame_powers(clip), [1e-12, 0.25])


def test_empty_clip_gets_finite_stats():
    [row] = [QualityMeter().measure([np.zeros(0, np.float32)])]
    assert {key: float(values[0]) for key, values in row.items()} == {
        "duration": 0.0,
        "speech_ratio": 0.0,
        "snr_db": -30.0,
        "rms_dbfs": -120.0,
    }


def test_vad_frame_count_must_match_the_clip():
    with pytest.raises(ValueError, match="3 VAD frames for a clip of 2 frames"):
        clip_quality(np.zeros(1000), np.zeros(3))


def test_loading_the_vad_keeps_torch_thread_count():
    """silero-vad's import sets torch to one thread; a fresh process shows it is restored."""
    code = (
        "import torch; torch.set_num_threads(2)\n"
        "from ml_backend.features.quality import QualityMeter\n"
        "QualityMeter().load(); print(torch.get_num_threads())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "2"


def test_model_info_names_the_vad_release():
    info = QualityMeter().info
    assert info.name == "silero-vad+frame-energy"
    assert info.version.startswith("6.")
    assert info.dim == len(QUALITY_KEYS)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown VAD backend 'cuda'"):
        QualityMeter(backend="cuda")
