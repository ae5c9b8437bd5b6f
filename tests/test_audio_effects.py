import numpy as np
import pytest

from bench.audio_effects import (
    active_mask,
    mix_at_snr,
    music_bed,
    normalise_loudness,
    pink_noise,
    reverberate,
    shout,
    whisper,
)

SR = 16000


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _bursts(seconds: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic bursts (a crude vowel at 140 Hz) separated by digital silence, and their mask."""
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    on = (t % 0.6) < 0.35
    return (0.2 * tone * on).astype(np.float32), on


def _power_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2))


def test_pink_noise_has_a_1_over_f_spectrum_and_fixed_level():
    noise = pink_noise(SR * 8, _rng())
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / SR)
    band = (freqs > 50) & (freqs < 6000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(spectrum[band]), 1)[0]
    assert -1.15 < slope < -0.85
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(0.1, rel=1e-3)
    assert noise.dtype == np.float32


def test_pink_noise_and_music_are_deterministic_given_the_rng():
    assert np.array_equal(pink_noise(1000, _rng(3)), pink_noise(1000, _rng(3)))
    assert not np.array_equal(pink_noise(1000, _rng(3)), pink_noise(1000, _rng(4)))
    assert np.array_equal(music_bed(SR * 3, SR, _rng(3)), music_bed(SR * 3, SR, _rng(3)))


def test_music_bed_is_harmonic_and_rhythmic():
    bed = music_bed(SR * 12, SR, _rng(1))
    assert bed.shape == (SR * 12,) and bed.dtype == np.float32
    assert np.abs(bed).max() <= 1.0
    # Tonal: most energy sits in the voice range, not spread like noise.
    spectrum = np.abs(np.fft.rfft(bed)) ** 2
    freqs = np.fft.rfftfreq(len(bed), 1 / SR)
    assert spectrum[(freqs > 80) & (freqs < 1200)].sum() > 0.6 * spectrum.sum()
    # Peaky: a few strong partials, unlike white or pink noise.
    voice_band = spectrum[(freqs > 100) & (freqs < 1000)]
    assert np.sort(voice_band)[-200:].sum() > 0.3 * voice_band.sum()
    # Rhythmic: the level changes from one 50 ms frame to the next (drums, note onsets).
    frames = bed[: len(bed) // 800 * 800].reshape(-1, 800)
    level = np.sqrt(np.mean(frames**2, axis=1))
    assert level.std() / level.mean() > 0.2


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 5.0, 20.0])
@pytest.mark.parametrize("bed_kind", ["pink", "music"])
def test_mix_at_snr_reaches_the_requested_snr_over_the_speech(snr_db, bed_kind):
    speech, on = _bursts()
    bed = (
        pink_noise(len(speech) + 500, _rng())
        if bed_kind == "pink"
        else music_bed(len(speech) + 500, SR, _rng())
    )
    mixed = mix_at_snr(speech, bed, snr_db)
    assert mixed.shape == speech.shape
    added = mixed.astype(np.float64) - speech
    measured = _power_db(speech[on]) - _power_db(added[on])
    assert measured == pytest.approx(snr_db, abs=0.5)


def test_mix_at_snr_rejects_a_short_bed_and_silent_speech():
    speech, _ = _bursts(1.0)
    with pytest.raises(ValueError, match="fewer than the speech"):
        mix_at_snr(speech, np.ones(len(speech) - 1, np.float32), 5.0)
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(np.zeros(1000, np.float32), np.ones(1000, np.float32), 5.0)


def test_active_mask_finds_the_bursts():
    speech, on = _bursts()
    mask = active_mask(speech)
    assert (mask == on).mean() > 0.97


def _schroeder_rt60(response: np.ndarray) -> float:
    """RT60 extrapolated from the -5 to -25 dB part of the backward-integrated energy decay."""
    energy = np.cumsum(response[::-1].astype(np.float64) ** 2)[::-1]
    decay_db = 10 * np.log10(energy / energy[0])
    start, end = np.argmax(decay_db < -5), np.argmax(decay_db < -25)
    return (end - start) / SR * 60 / 20


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_reverberate_adds_a_tail_that_decays_at_rt60(rt60):
    impulse = np.zeros(SR // 10, np.float32)
    impulse[0] = 1.0
    response = reverberate(impulse, SR, rt60=rt60, rng=_rng())
    assert len(response) == len(impulse) + round(rt60 * SR) - 1
    assert _schroeder_rt60(response) == pytest.approx(rt60, rel=0.25)
    speech, _ = _bursts(1.0)
    wet = reverberate(speech, SR, rt60=rt60, rng=_rng())
    tail = wet[len(speech) : len(speech) + SR // 20]
    assert np.sqrt(np.mean(tail**2)) > 1e-3  # it rings on after the speech ends
    assert np.array_equal(wet, reverberate(speech, SR, rt60=rt60, rng=_rng()))


def test_reverberate_with_zero_rt60_is_dry_and_negative_is_an_error():
    speech, _ = _bursts(0.5)
    assert np.array_equal(reverberate(speech, SR, rt60=0.0, rng=_rng()), speech)
    with pytest.raises(ValueError, match="rt60"):
        reverberate(speech, SR, rt60=-0.1, rng=_rng())


@pytest.mark.parametrize("target", [-30.0, -20.0, -12.0])
def test_normalise_loudness_sets_the_level_of_the_active_part(target):
    speech, on = _bursts()
    out = normalise_loudness(speech, target)
    assert _power_db(out[on]) == pytest.approx(target, abs=0.2)
    silence = np.zeros(100, np.float32)
    assert np.array_equal(normalise_loudness(silence), silence)


def _periodicity(x: np.ndarray) -> float:
    """Height of the autocorrelation peak in the 70-400 Hz lag range (1.0 = perfectly periodic)."""
    frame = x[SR // 10 : SR // 10 + 1024].astype(np.float64)
    ac = np.correlate(frame, frame, "full")[len(frame) - 1 :]
    return float(ac[SR // 400 : SR // 70].max() / ac[0])


def test_whisper_removes_the_pitch_but_keeps_the_envelope_and_level():
    speech, on = _bursts()
    whispered = whisper(speech, SR, _rng())
    assert whispered.shape == speech.shape
    assert _periodicity(speech) > 0.8
    assert _periodicity(whispered) < 0.5
    assert abs(_power_db(whispered[on]) - _power_db(speech[on])) < 4.0
    # Pauses stay quiet away from the onsets (a frame, 32 ms, may smear).
    t = np.arange(len(speech)) / SR
    gap_middle = ((t % 0.6) > 0.4) & ((t % 0.6) < 0.55)
    assert np.sqrt(np.mean(whispered[gap_middle] ** 2)) < 0.01 * np.sqrt(
        np.mean(whispered[on] ** 2)
    )


def test_shout_brightens_and_keeps_the_rms():
    speech, _ = _bursts()
    shouted = shout(speech, SR)

    def high_share(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        return spectrum[np.fft.rfftfreq(len(x), 1 / SR) > 2000].sum() / spectrum.sum()

    assert high_share(shouted) > 2 * high_share(speech)
    assert _power_db(shouted) == pytest.approx(_power_db(speech), abs=0.1)
