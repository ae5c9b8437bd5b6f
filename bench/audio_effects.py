"""Acoustic conditions for benchmark episodes: noise and music beds, reverberation, levels.

Synthetic voices are far cleaner and more consistent than voice-acted dialogue, so speaker grouping
on them alone would look solved. These effects put back what makes real episodes hard: beds under
the speech at a chosen SNR, rooms that smear it, and delivery styles (shouting, whispering) that
change a voice's timbre. Every function is a pure function of its inputs and the ``rng`` passed in,
so an episode is reproducible from its seed.

All signals are ``(num_samples,) float32`` mono.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_toeplitz
from scipy.signal import fftconvolve, lfilter

# Frames for "where is the speech": 20 ms at 16 kHz. Beds and SNRs do not need finer resolution.
_ACTIVITY_FRAME = 320
# A frame counts as speech when it is within this many dB of the loudest frame. TTS pauses are
# digital silence, so the exact value matters little; 40 dB keeps soft consonants in.
_ACTIVITY_RANGE_DB = 40.0
_BED_RMS = 0.1  # beds come out at about -20 dBFS so they can also be used as they are


def _as_mono(x: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D mono signal, got shape {array.shape}")
    return array


def active_mask(x: np.ndarray, *, frame: int = _ACTIVITY_FRAME) -> np.ndarray:
    """Per-sample boolean mask of the frames that hold signal (within 40 dB of the loudest)."""
    x = _as_mono(x, "x")
    num_frames = -(-len(x) // frame)
    if num_frames == 0:
        return np.zeros(0, dtype=bool)
    padded = np.zeros(num_frames * frame, dtype=np.float64)
    padded[: len(x)] = x
    power = np.mean(padded.reshape(num_frames, frame) ** 2, axis=1)
    peak = float(power.max())
    if peak <= 0.0:
        return np.zeros(len(x), dtype=bool)
    active = power >= peak * 10.0 ** (-_ACTIVITY_RANGE_DB / 10.0)
    return np.repeat(active, frame)[: len(x)]


def active_power(x: np.ndarray) -> float:
    """Mean power over the active part of ``x``; 0.0 for silence."""
    x = _as_mono(x, "x")
    mask = active_mask(x)
    if not mask.any():
        return 0.0
    return float(np.mean(x[mask].astype(np.float64) ** 2))


def pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise at about -20 dBFS RMS: the usual stand-in for broadband background.

    Shaped in the frequency domain, so the spectrum is exactly 1/f rather than approximated by a
    filter bank.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if num_samples == 0:
        return np.zeros(0, dtype=np.float32)
    spectrum = rng.standard_normal(num_samples // 2 + 1) + 1j * rng.standard_normal(
        num_samples // 2 + 1
    )
    bins = np.arange(len(spectrum), dtype=np.float64)
    bins[0] = 1.0
    spectrum /= np.sqrt(bins)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=num_samples)
    return _scale_to_rms(noise, _BED_RMS)


def _scale_to_rms(x: np.ndarray, rms: float) -> np.ndarray:
    current = float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2))) if len(x) else 0.0
    if current <= 0.0:
        return np.asarray(x, dtype=np.float32)
    return (np.asarray(x, dtype=np.float64) * (rms / current)).astype(np.float32)


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _add_tone(
    out: np.ndarray,
    start: int,
    length: int,
    sample_rate: int,
    freq: float,
    harmonics: np.ndarray,
    envelope: np.ndarray,
    *,
    vibrato_hz: float = 0.0,
    vibrato_depth: float = 0.0,
) -> None:
    """Add a harmonic tone into ``out[start:start+length]`` (clipped to the buffer)."""
    length = min(length, len(out) - start)
    if length <= 0:
        return
    t = np.arange(length) / sample_rate
    cycles = freq * t
    if vibrato_depth:
        cycles += (vibrato_depth * freq / (2.0 * np.pi * vibrato_hz)) * np.sin(
            2.0 * np.pi * vibrato_hz * t
        )
    # One period of the waveform, read by linear interpolation: far cheaper than a sine per
    # harmonic per sample, and exact enough for a background bed.
    ks = np.arange(1, len(harmonics) + 1)
    audible = (ks * freq * (1.0 + vibrato_depth) < 0.45 * sample_rate) & (harmonics != 0.0)
    grid = np.arange(_TABLE_SIZE + 1) / _TABLE_SIZE
    table = np.sin(2.0 * np.pi * np.outer(grid, ks[audible])) @ harmonics[audible]
    position = (cycles % 1.0) * _TABLE_SIZE
    index = position.astype(np.int64)
    fraction = position - index
    tone = table[index] * (1.0 - fraction) + table[index + 1] * fraction
    out[start : start + length] += tone * envelope[:length]


_TABLE_SIZE = 2048


def _decay(length: int, sample_rate: int, tau_s: float, attack_s: float = 0.005) -> np.ndarray:
    t = np.arange(length) / sample_rate
    return np.minimum(t / attack_s, 1.0) * np.exp(-t / tau_s)


# Diatonic chord roots (in semitones above the key) for a few common pop progressions.
_PROGRESSIONS: tuple[tuple[int, ...], ...] = (
    (0, 7, 9, 5),  # I V vi IV
    (9, 5, 0, 7),  # vi IV I V
    (0, 9, 5, 7),  # I vi IV V
    (2, 7, 0, 9),  # ii V I vi
)
_MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])


def _triad(root: int) -> tuple[int, int, int]:
    """Major or minor triad on a major-scale degree (ii, iii, vi are minor)."""
    third = 3 if root in (2, 4, 9) else 4
    return root, root + third, root + 7


def music_bed(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic song: chords, an arpeggio, a sung-like lead, bass and drums, at about -20 dBFS.

    Plain noise is easy to ignore for a speaker encoder. Music is not: its harmonic tones sit in
    the range of voices (the arpeggio and the vibrato lead span about 150-700 Hz) and change
    every beat, which is the kind of interference that breaks speaker embeddings in real
    episodes.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    out = np.zeros(num_samples, dtype=np.float64)
    if num_samples == 0:
        return out.astype(np.float32)
    bpm = float(rng.uniform(84.0, 132.0))
    beat = round(sample_rate * 60.0 / bpm)
    bar = 4 * beat
    key = int(rng.integers(0, 12))
    progression = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
    pad_harmonics = 1.0 / np.arange(1, 7)
    pluck_harmonics = 1.0 / np.arange(1, 9) ** 1.5
    # A vowel-like harmonic envelope: the lead "sings" rather than beeps.
    lead_harmonics = np.array([1.0, 0.8, 0.9, 0.5, 0.3, 0.35, 0.2, 0.1, 0.08, 0.05])
    lead_degree = int(rng.integers(0, 14))  # index into two octaves of the scale from G3+key
    for bar_index, bar_start in enumerate(range(0, num_samples, bar)):
        chord_root = progression[bar_index % len(progression)]
        triad = _triad((chord_root + key) % 12)
        pad_env = np.minimum(np.arange(bar) / (0.08 * sample_rate), 1.0) * np.minimum(
            (bar - np.arange(bar)) / (0.15 * sample_rate), 1.0
        )
        for note in triad:
            _add_tone(
                out, bar_start, bar, sample_rate, _midi_hz(60 + note), 0.05 * pad_harmonics, pad_env
            )
        for step in range(8):  # eighth-note arpeggio
            note = 72 + triad[(step * 2 + (step // 4)) % 3] - (12 if step % 3 == 2 else 0)
            start = bar_start + step * beat // 2
            length = beat
            _add_tone(
                out, start, length, sample_rate, _midi_hz(note), 0.08 * pluck_harmonics,
                _decay(length, sample_rate, 0.18),
            )  # fmt: skip
        for step in range(4):  # bass on every beat, kick and snare alternating
            start = bar_start + step * beat
            _add_tone(
                out, start, beat, sample_rate, _midi_hz(36 + triad[0]), np.array([0.25, 0.08]),
                _decay(beat, sample_rate, 0.25),
            )  # fmt: skip
            _add_drum(out, start, sample_rate, "kick" if step % 2 == 0 else "snare", rng)
            _add_drum(out, start + beat // 2, sample_rate, "hat", rng)
        position = bar_start
        while position < bar_start + bar:  # the lead: 1-2 beat notes walking on the scale
            length = beat * int(rng.integers(1, 3))
            lead_degree = int(np.clip(lead_degree + rng.integers(-2, 3), 0, 13))
            octave, degree = divmod(lead_degree, 7)
            lead_note = 55 + key + 12 * octave + int(_MAJOR_SCALE[degree])
            envelope = np.minimum(np.arange(length) / (0.04 * sample_rate), 1.0) * np.minimum(
                (length - np.arange(length)) / (0.06 * sample_rate), 1.0
            )
            _add_tone(
                out, position, length, sample_rate, _midi_hz(lead_note), 0.07 * lead_harmonics,
                envelope, vibrato_hz=5.5, vibrato_depth=0.012,
            )  # fmt: skip
            position += length
    return _scale_to_rms(out, _BED_RMS)


def _add_drum(
    out: np.ndarray, start: int, sample_rate: int, kind: str, rng: np.random.Generator
) -> None:
    length = min(int(0.25 * sample_rate), len(out) - start)
    if length <= 0:
        return
    t = np.arange(length) / sample_rate
    if kind == "kick":
        sweep = 2.0 * np.pi * (50.0 * t + (70.0 * 0.03) * (1.0 - np.exp(-t / 0.03)))
        hit = 0.6 * np.sin(sweep) * np.exp(-t / 0.09)
    elif kind == "snare":
        noise = rng.standard_normal(length)
        bright = np.diff(noise, prepend=0.0)  # first difference: tilts the noise towards highs
        hit = (0.15 * bright + 0.2 * np.sin(2.0 * np.pi * 190.0 * t)) * np.exp(-t / 0.06)
    else:
        noise = rng.standard_normal(length)
        hit = 0.05 * np.diff(np.diff(noise, prepend=0.0), prepend=0.0) * np.exp(-t / 0.02)
    out[start : start + length] += hit


def mix_at_snr(speech: np.ndarray, bed: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``bed``, scaled to ``snr_db`` below the speech over its active part.

    The ratio is taken over where the speech is (not the whole clip), because that is the SNR
    the speaker encoder sees; a long pause would otherwise make any bed look quiet. ``bed`` must
    be at least as long as ``speech`` and is cut to it. The sum is not clipped: normalise or limit
    it afterwards.
    """
    speech = _as_mono(speech, "speech")
    bed = _as_mono(bed, "bed")
    if len(bed) < len(speech):
        raise ValueError(f"bed has {len(bed)} samples, fewer than the speech's {len(speech)}")
    if not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    bed = bed[: len(speech)]
    mask = active_mask(speech)
    if not mask.any():
        raise ValueError("speech is silent, so an SNR is undefined")
    speech_power = float(np.mean(speech[mask].astype(np.float64) ** 2))
    bed_power = float(np.mean(bed[mask].astype(np.float64) ** 2))
    if bed_power <= 0.0:
        return speech.copy()
    scale = np.sqrt(speech_power / (bed_power * 10.0 ** (snr_db / 10.0)))
    return (speech.astype(np.float64) + scale * bed).astype(np.float32)


def reverberate(
    x: np.ndarray, sample_rate: int, *, rt60: float, rng: np.random.Generator
) -> np.ndarray:
    """Convolve with a synthetic room: a direct path plus exponentially decaying noise.

    The tail decays by 60 dB in ``rt60`` seconds and loses its highs as it decays (as air and
    walls absorb them), with as much energy as the direct path. The impulse response has unit
    energy so levels stay comparable. The output is ``len(x) + rt60 * sample_rate`` samples
    long: the tail rings on after the speech.
    """
    x = _as_mono(x, "x")
    if rt60 < 0 or not np.isfinite(rt60):
        raise ValueError(f"rt60 must be a finite number of seconds >= 0, got {rt60}")
    if rt60 == 0 or len(x) == 0:
        return x.copy()
    length = max(round(rt60 * sample_rate), 2)
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-3.0 * np.log(10.0) * t / rt60)
    # One-pole low-pass whose cut-off falls as the tail decays: crude frequency-dependent decay.
    smoothing = np.clip(t / rt60, 0.0, 0.9)
    tail = _time_varying_lowpass(tail, smoothing)
    tail[0] = 0.0
    tail *= 1.0 / np.sqrt(np.sum(tail**2))
    response = tail
    response[0] = 1.0  # direct path, same energy as the tail (direct-to-reverberant ratio 0 dB)
    response /= np.sqrt(np.sum(response**2))
    return fftconvolve(x.astype(np.float64), response).astype(np.float32)


def _time_varying_lowpass(x: np.ndarray, smoothing: np.ndarray) -> np.ndarray:
    """``y[n] = (1 - a[n]) x[n] + a[n] y[n-1]`` in blocks (per-block coefficient keeps it fast)."""
    out = np.empty_like(x)
    state = np.zeros(1)
    block = 256
    for start in range(0, len(x), block):
        a = float(smoothing[start])
        segment, state = lfilter([1.0 - a], [1.0, -a], x[start : start + block], zi=state)
        out[start : start + block] = segment
    return out


def normalise_loudness(x: np.ndarray, target_dbfs: float = -20.0) -> np.ndarray:
    """Scale ``x`` so the RMS of its active part is ``target_dbfs`` (pauses do not count).

    A plain gain: peaks are not limited, so keep the target low enough for your material
    (speech has a crest factor of about 15-20 dB). Silence is returned unchanged.
    """
    x = _as_mono(x, "x")
    power = active_power(x)
    if power <= 0.0:
        return x.copy()
    gain = 10.0 ** (target_dbfs / 20.0) / np.sqrt(power)
    return (x.astype(np.float64) * gain).astype(np.float32)


def whisper(x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Whispered version of ``x``: its spectral envelope excited by noise instead of the voice.

    Per 32 ms frame (half overlap) an LPC fit of the pre-emphasised frame gives the vocal-tract
    envelope; white noise filtered through it, scaled to the frame's energy, is overlap-added.
    Pre-emphasis removes the glottal tilt, and we do not put it back, because a whisper has no
    glottal pulse: it comes out brighter and breathier, with no pitch at all. Onsets smear by up
    to one frame.
    """
    x = _as_mono(x, "x")
    frame = max(int(0.032 * sample_rate) // 2 * 2, 32)
    hop = frame // 2
    order = 2 + sample_rate // 1000
    window = np.hanning(frame + 1)[:-1]  # periodic Hann: halves overlap-add to a constant
    emphasised = np.append(x[:1], x[1:] - 0.95 * x[:-1]).astype(np.float64)
    num_frames = max(1, -(-(len(x) - frame) // hop) + 1)
    padded = np.zeros((num_frames - 1) * hop + frame)
    padded[: len(x)] = emphasised
    plain = np.zeros_like(padded)
    plain[: len(x)] = x
    out = np.zeros_like(padded)
    for index in range(num_frames):
        start = index * hop
        segment = padded[start : start + frame] * window
        autocorr = np.correlate(segment, segment, mode="full")[frame - 1 : frame + order]
        if autocorr[0] <= 1e-10:
            continue
        autocorr[0] *= 1.0 + 1e-6  # light regularisation keeps the Toeplitz solve stable
        coefficients = solve_toeplitz(autocorr[:order], autocorr[1 : order + 1])
        excitation = rng.standard_normal(frame)
        synthesised = lfilter([1.0], np.concatenate(([1.0], -coefficients)), excitation) * window
        # Match the frame's energy before pre-emphasis, so the level contour is the original's.
        original_energy = float(np.sum((plain[start : start + frame] * window) ** 2))
        synthesised_energy = float(np.sum(synthesised**2))
        if synthesised_energy > 0.0:
            synthesised *= np.sqrt(original_energy / synthesised_energy)
        out[start : start + frame] += synthesised
    return out[: len(x)].astype(np.float32)


def shout(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Vocal-effort colouring for shouted lines: a brighter spectrum and soft saturation.

    Raised pitch and speed come from the synthesiser; this adds what effort does to the timbre
    (a flatter spectral tilt, about +6 dB above 2 kHz) and the squashed peaks of a strained voice.
    Output RMS equals input RMS, so loudness stays the caller's choice.
    """
    x = _as_mono(x, "x")
    if len(x) == 0:
        return x.copy()
    x64 = x.astype(np.float64)
    # High shelf: add a first-difference (high-passed) copy; its gain rises with frequency.
    pole = np.exp(-2.0 * np.pi * 2000.0 / sample_rate)
    highs = lfilter([1.0, -1.0], [1.0, -pole], x64)
    bright = x64 + 1.0 * highs
    rms_in = np.sqrt(np.mean(x64**2))
    rms_bright = np.sqrt(np.mean(bright**2))
    if rms_bright <= 0.0:
        return x.copy()
    drive = 3.0
    saturated = np.tanh(drive * bright / (4.0 * rms_bright))
    rms_sat = np.sqrt(np.mean(saturated**2))
    return (saturated * (rms_in / rms_sat)).astype(np.float32)
