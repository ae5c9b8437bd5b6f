"""Synthetic voices for benchmark episodes: which are installed, and speaking a line with them.

Speaker grouping is measured on episodes whose speakers we know, so every character needs a
voice that a speaker encoder can tell apart from the others, the way real actors differ. Voices
built from recordings of real people (flite's clustergen and diphone voices, festival's diphone
and HTS voices, MBROLA diphone databases) are distinct; espeak-ng's variants share one formant
synthesiser and are a last resort.

Delivery (pitch, tempo, shouting, whispering) uses each engine's own controls where it has them,
because that moves the pitch without moving the formants, as an actor does:

==========  ===========================================  ============================
engine      pitch                                        tempo
==========  ===========================================  ============================
flite       ``f0_shift`` (clustergen, diphone voices)    ``duration_stretch``
festival    scaled ``int_lr_params`` (diphone voices)    ``Duration_Stretch``; HTS ``-r``
espeak      ``-p``, through a measured semitone table    ``-s`` words per minute
mbrola      ``mbrola -f`` (exact ratio)                  ``mbrola -t`` (exact ratio)
==========  ===========================================  ============================

Where an engine has no pitch control (flite ``rms``, festival HTS voices, espeak beyond its
range) the rest of the shift is done by ``sox pitch`` (a time-domain shift that also moves the
formants a little). Styles are documented on :class:`Delivery`.

More licence-clean voices: ``available_voices(allow_derived=True)`` adds *derived* voices,
each recorded person at two formant scales (:attr:`Voice.formant_scale`), i.e. speed
perturbation with the duration restored. Measured with resemblyzer (4 lines per voice,
leave-one-out nearest neighbour): the 5 recorded licence-clean people 1.00 clean and 1.00 with
pink noise at 5 dB SNR; with their 10 derived voices 1.00 and 0.98; the 14 espeak-ng variants
1.00 and 1.00; the 20 English-capable MBROLA voices 0.975 and 0.65.

Synthesis runs the engines as subprocesses on temporary files and caches every result on disk
(``SG_VOICE_CACHE``, default ``~/.cache/speaker-grouping/voices``) under a hash of the voice,
text, delivery and sample rate, since an episode needs hundreds of lines. MBROLA audio lands in
that cache too: it is a local cache, never something to commit (the MBROLA licence forbids
commercial use).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
import wave
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from bench import audio_effects
from bench.install_voices import (
    ENGLISH_MBROLA_VOICES,
    install_mbrola_voices,
    installed_mbrola_voices,
    mbrola_binary,
    mbrola_database,
    mbrola_environment,
)
from foundation.atomic import atomic_write_bytes

__all__ = [
    "Delivery",
    "SynthesisJob",
    "Voice",
    "available_voices",
    "install_mbrola_voices",
    "synthesize",
    "synthesize_many",
    "voice_cache_dir",
]

logger = logging.getLogger(__name__)

ENGINES = ("flite", "festival", "espeak", "mbrola")
# Formant scales of the derived voices: about 2.4 semitones down and up. Resemblyzer confused
# scales 8 % apart now and then, so these stay 30 % apart and far from 1.0.
DERIVED_SCALES = (0.87, 1.15)
STYLES = ("normal", "shout", "whisper")

# Bump when the processing below changes, so stale cached audio is not reused.
_CACHE_VERSION = 2
# Level every line is brought to before its gain_db: RMS of the active part, in dBFS. Low
# enough that +10 dB of gain still leaves speech peaks (crest factor 15-20 dB) near full scale.
REFERENCE_DBFS = -26.0
_EDGE_SILENCE_S = 0.05
# Frames this far below the loudest count as silence when trimming. Festival's diphone pauses
# carry breath noise up to about -42 dB, which must not count as speech.
_TRIM_RANGE_DB = 38.0
_SUBPROCESS_TIMEOUT_S = 120.0
_FESTIVAL_BATCH = 24  # lines per festival process: its start-up costs ~0.4 s, a line ~0.05 s

# Style = pitch offset (semitones), tempo factor and gain (dB) on top of the line's delivery.
# Shouting raises pitch and speeds up; whispering is quieter and a little slower.
_STYLE_PROSODY: dict[str, tuple[float, float, float]] = {
    "normal": (0.0, 1.0, 0.0),
    "shout": (4.0, 1.08, 6.0),
    "whisper": (0.0, 0.95, -6.0),
}

# flite voices worth using, best first. Left out: "kal" (the 8 kHz copy of kal16) and
# "awb_time" (a limited-domain voice that only speaks times of day).
_FLITE_VOICES = ("awb", "slt", "rms", "kal16")
_FLITE_WITHOUT_PITCH = frozenset({"rms"})  # ignores f0_shift and int_f0_target_mean
# Voices recorded from one person through different engines (Kevin Lenzo's kal, CMU ARCTIC slt).
_RECORDED_PERSON = {
    "flite:kal": "kal",
    "flite:kal16": "kal",
    "festival:voice_kal_diphone": "kal",
    "flite:slt": "slt",
    "festival:voice_cmu_us_slt_arctic_hts": "slt",
}
# Festival voices known here, best first (others installed are not offered: untested).
_FESTIVAL_VOICES = ("ked_diphone", "kal_diphone", "cmu_us_slt_arctic_hts")
# espeak-ng: -p value -> semitones relative to -p 50, measured on en-us, +m3, +f2 and en-gb+m1
# (median f0 of two sentences). Below 50 the effect varies by about a semitone with the text.
_ESPEAK_PITCH_TABLE = (
    (0, -6.0),
    (10, -5.0),
    (20, -4.0),
    (30, -2.9),
    (40, -1.65),
    (50, 0.0),
    (60, 1.6),
    (70, 3.2),
    (80, 5.0),
    (90, 7.0),
    (99, 8.7),
)
_ESPEAK_WPM = 175
# espeak-ng variants in the order they are offered; they share one synthesiser, so they are
# weaker "different voices" than any recorded voice. Picked greedily from 40 variants for the
# lowest resemblyzer similarity to those already picked (the numbered +m2..+m7 are too alike).
_ESPEAK_VOICES = (
    "en-us+m1",
    "en-us+steph",
    "en-us+travis",
    "en-us+Annie",
    "en-us+iven",
    "en-us+Jacky",
    "en-us+klatt5",
    "en-us+Andy",
    "en-us+f5",
    "en-us+sandro",
    "en-us+rob",
    "en-us+Lee",
    "en-us+ed",
    "en-us+grandma",
)


@dataclass(frozen=True)
class Voice:
    """A synthetic voice: an engine and its own name for the voice.

    ``licence_clean`` is False for voices whose licence forbids commercial use (MBROLA): their
    audio may be generated for tests and benchmarks but must never be committed or shipped.
    """

    engine: str
    name: str
    licence_clean: bool = True
    formant_scale: float = 1.0
    """1.0 is the recorded voice. Other values make a *derived* voice: pitch and formants scaled
    together by resampling, as from a smaller (> 1) or larger (< 1) speaker; the duration is
    kept. Speed perturbation like this is how speaker-recognition training makes new speakers."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown voice engine {self.engine!r}; expected one of {ENGINES}")
        if not self.name:
            raise ValueError(f"voice name is empty for engine {self.engine!r}")
        if not 0.7 <= self.formant_scale <= 1.4:
            raise ValueError(f"formant_scale must be within [0.7, 1.4], got {self.formant_scale}")

    @property
    def key(self) -> str:
        """Stable identifier ``engine:name`` (``engine:name@scale`` for a derived voice)."""
        if self.formant_scale == 1.0:
            return f"{self.engine}:{self.name}"
        return f"{self.engine}:{self.name}@{self.formant_scale:g}"

    @property
    def person(self) -> str:
        """Who was recorded: voices of one person through different engines share this."""
        base = f"{self.engine}:{self.name}"
        person = _RECORDED_PERSON.get(base, base)
        return person if self.formant_scale == 1.0 else f"{person}@{self.formant_scale:g}"


@dataclass(frozen=True)
class Delivery:
    """How one line is spoken.

    ``pitch_semitones`` shifts the voice's pitch (a character's offset plus per-line variation),
    ``tempo`` multiplies the speaking rate, ``gain_db`` is relative to the reference level
    (``REFERENCE_DBFS``, -26 dBFS RMS over the speech).

    Styles, applied on top:

    * ``"shout"``: +4 semitones, 8 % faster, +6 dB, with a brighter spectrum and soft
      saturation (:func:`bench.audio_effects.shout`).
    * ``"whisper"``: 5 % slower, -6 dB, and the voicing replaced by noise shaped with the
      line's own spectral envelope (LPC), so it has no pitch (:func:`bench.audio_effects.whisper`).
    """

    pitch_semitones: float = 0.0
    tempo: float = 1.0
    gain_db: float = 0.0
    style: str = "normal"

    def __post_init__(self) -> None:
        for name in ("pitch_semitones", "tempo", "gain_db"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"Delivery.{name} must be finite, got {getattr(self, name)}")
        if not 0.25 <= self.tempo <= 4.0:
            raise ValueError(f"Delivery.tempo must be within [0.25, 4], got {self.tempo}")
        if abs(self.pitch_semitones) > 24.0:
            raise ValueError(
                f"Delivery.pitch_semitones must be within ±24, got {self.pitch_semitones}"
            )
        if self.style not in STYLES:
            raise ValueError(f"Delivery.style must be one of {STYLES}, got {self.style!r}")


@dataclass(frozen=True)
class SynthesisJob:
    """One line to speak, for :func:`synthesize_many`."""

    voice: Voice
    text: str
    delivery: Delivery = field(default_factory=Delivery)
    sample_rate: int = 16000


# --------------------------------------------------------------------------- what is installed


def _run(
    command: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(command),
        capture_output=True,
        timeout=_SUBPROCESS_TIMEOUT_S,
        check=False,
        env=env,
        cwd=cwd,
    )


@functools.lru_cache(maxsize=1)
def _flite_voices() -> tuple[str, ...]:
    if shutil.which("flite") is None:
        return ()
    result = _run(["flite", "-lv"])
    listed = set(result.stdout.decode(errors="replace").replace("Voices available:", "").split())
    return tuple(v for v in _FLITE_VOICES if v in listed)


@functools.lru_cache(maxsize=1)
def _festival_voices() -> tuple[str, ...]:
    if shutil.which("festival") is None:
        return ()
    result = _run(["festival", "-b", "(print (voice.list))"])
    listed = re.findall(r"[\w.-]+", result.stdout.decode(errors="replace"))
    known = [v for v in _FESTIVAL_VOICES if v in listed]
    return tuple(known)


@functools.lru_cache(maxsize=1)
def _espeak_installed() -> bool:
    return shutil.which("espeak-ng") is not None


def available_voices(*, allow_mbrola: bool = True, allow_derived: bool = False) -> list[Voice]:
    """Voices installed here, best first, in a stable order.

    Order: distinct recorded speakers first (flite ``awb``, ``slt``, festival ``ked``, the
    MBROLA databases, flite ``rms``, ``kal16``), then recorded voices whose person already
    appeared through another engine (festival ``kal_diphone`` is ``kal16``'s speaker, the
    festival HTS voice is ``slt``; see :attr:`Voice.person`), then, with ``allow_derived``,
    each licence-clean recorded person at formant scales ``DERIVED_SCALES``, then espeak-ng
    variants. MBROLA voices count only when installed (see :func:`install_mbrola_voices`);
    nothing is installed here.
    """
    flite = _flite_voices()
    festival = _festival_voices()
    best = [Voice("flite", v) for v in ("awb", "slt") if v in flite]
    best += [Voice("festival", f"voice_{v}") for v in ("ked_diphone",) if v in festival]
    mbrola = [
        Voice("mbrola", ENGLISH_MBROLA_VOICES[db], licence_clean=False)
        for db in installed_mbrola_voices()
    ]
    more = [Voice("flite", v) for v in ("rms", "kal16") if v in flite]
    same_person = [
        Voice("festival", f"voice_{v}")
        for v in ("kal_diphone", "cmu_us_slt_arctic_hts")
        if v in festival
    ]
    recorded = best + more
    ordered = best + (mbrola if allow_mbrola else []) + more + same_person
    if allow_derived:
        ordered += [
            Voice(v.engine, v.name, v.licence_clean, scale)
            for scale in DERIVED_SCALES
            for v in recorded
        ]
    if _espeak_installed():
        ordered += [Voice("espeak", v) for v in _ESPEAK_VOICES]
    return ordered


# --------------------------------------------------------------------------- the cache


def voice_cache_dir() -> Path:
    """Where synthesised lines are cached (``SG_VOICE_CACHE`` overrides the default)."""
    env = os.environ.get("SG_VOICE_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "speaker-grouping" / "voices"


@functools.cache
def _engine_fingerprint(engine: str) -> str:
    """Version of the synthesiser, so an engine upgrade does not reuse old audio."""
    command = {
        "flite": ["flite", "--version"],
        "festival": ["festival", "--version"],
        "espeak": ["espeak-ng", "--version"],
        "mbrola": ["espeak-ng", "--version"],
    }[engine]
    try:
        result = _run(command)
    except (OSError, subprocess.SubprocessError):
        return "missing"
    return (result.stdout + result.stderr).decode(errors="replace").strip()[:200]


def _cache_key(job: SynthesisJob) -> str:
    payload = {
        "version": _CACHE_VERSION,
        "engine": job.voice.engine,
        "engine_version": _engine_fingerprint(job.voice.engine),
        "voice": job.voice.name,
        "formant_scale": job.voice.formant_scale,
        "text": job.text,
        "delivery": asdict(job.delivery),
        "sample_rate": job.sample_rate,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def _cache_path(key: str) -> Path:
    return voice_cache_dir() / key[:2] / f"{key}.wav"


def _encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    pcm = np.round(np.clip(samples, -1.0, 32767.0 / 32768.0) * 32768.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _read_wav(source: Path | io.BytesIO) -> tuple[np.ndarray, int]:
    """Read PCM WAV (what every engine here writes) as float32 mono in [-1, 1]."""
    with wave.open(str(source) if isinstance(source, Path) else source, "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise ValueError(f"{source}: unsupported WAV sample width {width} bytes")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def _load_cached(key: str, sample_rate: int) -> np.ndarray | None:
    path = _cache_path(key)
    if not path.is_file():
        return None
    try:
        samples, rate = _read_wav(path)
    except (OSError, EOFError, wave.Error, ValueError) as error:
        logger.warning("ignoring unreadable cached line %s: %s", path, error)
        return None
    if rate != sample_rate:
        return None
    return _quantise(samples)


def _quantise(samples: np.ndarray) -> np.ndarray:
    """Snap to the 16-bit grid the cache stores, so cached and fresh results are identical."""
    pcm = np.round(np.clip(samples, -1.0, 32767.0 / 32768.0) * 32768.0) + 0.0  # no -0.0
    return (pcm / 32768.0).astype(np.float32)  # exact in float32, and what _read_wav returns


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class _Raw:
    """An engine's output before level, style and trimming; ``pitch_left`` is not yet applied."""

    samples: np.ndarray
    sample_rate: int
    pitch_left: float = 0.0


def _engine_text(text: str, *, ascii_only: bool) -> str:
    """One line of text for an engine; flite and festival read only ASCII reliably."""
    flat = " ".join(text.split())
    if ascii_only:
        flat = unicodedata.normalize("NFKD", flat).encode("ascii", "ignore").decode("ascii")
    return flat


def _check(result: subprocess.CompletedProcess[bytes], what: str, output: Path) -> None:
    if result.returncode != 0 or not output.is_file() or output.stat().st_size <= 44:
        message = (result.stderr or result.stdout).decode(errors="replace").strip()
        last = message.splitlines()[-1] if message else f"exit status {result.returncode}"
        raise RuntimeError(f"{what} produced no audio: {last}")


def _flite(voice: Voice, text: str, pitch: float, tempo: float, workdir: Path) -> _Raw:
    text_file, wav = workdir / "line.txt", workdir / "line.wav"
    text_file.write_text(_engine_text(text, ascii_only=True) + "\n", encoding="ascii")
    command = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / tempo:.6f}"]
    pitch_left = pitch
    if pitch and voice.name not in _FLITE_WITHOUT_PITCH:
        command += ["--setf", f"f0_shift={2.0 ** (pitch / 12.0):.6f}"]
        pitch_left = 0.0
    result = _run([*command, "-f", str(text_file), "-o", str(wav)])
    _check(result, f"flite voice {voice.name}", wav)
    samples, rate = _read_wav(wav)
    return _Raw(samples, rate, pitch_left)


def _espeak_pitch(semitones: float) -> tuple[int, float]:
    """espeak-ng ``-p`` value for a shift, and the part of the shift it cannot reach."""
    steps = np.array([p for p, _ in _ESPEAK_PITCH_TABLE], dtype=float)
    tones = np.array([s for _, s in _ESPEAK_PITCH_TABLE], dtype=float)
    reachable = float(np.clip(semitones, tones[0], tones[-1]))
    value = round(float(np.interp(reachable, tones, steps)))
    achieved = float(np.interp(value, steps, tones))
    return value, semitones - achieved


def _espeak(voice: Voice, text: str, pitch: float, tempo: float, workdir: Path) -> _Raw:
    text_file, wav = workdir / "line.txt", workdir / "line.wav"
    text_file.write_text(_engine_text(text, ascii_only=False) + "\n", encoding="utf-8")
    value, pitch_left = _espeak_pitch(pitch)
    speed = round(_ESPEAK_WPM * tempo)
    command = ["espeak-ng", "-v", voice.name, "-p", str(value), "-s", str(speed)]
    result = _run([*command, "-f", str(text_file), "-w", str(wav)])
    _check(result, f"espeak-ng voice {voice.name}", wav)
    samples, rate = _read_wav(wav)
    return _Raw(samples, rate, pitch_left)


def _mbrola_database_name(voice: Voice) -> str:
    for db, espeak_voice in ENGLISH_MBROLA_VOICES.items():
        if espeak_voice == voice.name:
            return db
    match = re.fullmatch(r"mb-([a-z]+\d)(-en)?", voice.name)
    if not match:
        raise ValueError(f"not an MBROLA voice name: {voice.name!r} (expected e.g. 'mb-us1')")
    return match.group(1)


def _mbrola(voice: Voice, text: str, pitch: float, tempo: float, workdir: Path) -> _Raw:
    """espeak-ng writes the phonemes and prosody (``--pho``); mbrola renders them.

    Running mbrola ourselves gives its exact pitch (``-f``) and duration (``-t``) ratios.
    """
    db = _mbrola_database_name(voice)
    database, binary = mbrola_database(db), mbrola_binary()
    if database is None or binary is None:
        raise RuntimeError(
            f"MBROLA voice {voice.name} is not installed; run python -m bench.install_voices {db}"
        )
    text_file, pho, wav = workdir / "line.txt", workdir / "line.pho", workdir / "line.wav"
    text_file.write_text(_engine_text(text, ascii_only=False) + "\n", encoding="utf-8")
    env = mbrola_environment()
    result = _run(["espeak-ng", "-q", "--pho", "-v", voice.name, "-f", str(text_file)], env=env)
    if result.returncode != 0 or not result.stdout.strip():
        message = result.stderr.decode(errors="replace").strip() or "no phonemes"
        raise RuntimeError(f"espeak-ng voice {voice.name} failed: {message.splitlines()[-1]}")
    pho.write_bytes(result.stdout)
    command = [str(binary), "-e", "-f", f"{2.0 ** (pitch / 12.0):.6f}", "-t", f"{1.0 / tempo:.6f}"]
    result = _run([*command, str(database), str(pho), str(wav)], env=env)
    _check(result, f"mbrola voice {db}", wav)
    samples, rate = _read_wav(wav)
    return _Raw(samples, rate, 0.0)


def _festival_is_hts(name: str) -> bool:
    return name.endswith("_hts")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival_batch(
    voice: Voice, lines: Sequence[tuple[str, float, float]], workdir: Path
) -> list[_Raw]:
    """Speak many ``(text, pitch, tempo)`` lines with one festival process.

    Festival takes about 0.4 s to start and load a voice but only tens of milliseconds per
    line after that, so lines of one voice are batched. Diphone voices get their pitch by
    scaling the target mean and spread of their own linear-regression intonation model; HTS
    voices take tempo through hts_engine's ``-r`` and leave the pitch to sox.
    """
    function = voice.name if voice.name.startswith("voice_") else f"voice_{voice.name}"
    hts = _festival_is_hts(function)
    script = [
        f"({function})",
        "(set! sg_base_lr int_lr_params)",
        "(set! sg_base_hts (if (boundp 'hts_engine_params) hts_engine_params nil))",
        "(define (sg_scale_lr params ratio)"
        "  (mapcar (lambda (p) (if (or (eq? (car p) 'target_f0_mean) (eq? (car p) 'target_f0_std))"
        "    (list (car p) (* ratio (car (cdr p)))) p)) params))",
    ]
    raws_pitch: list[float] = []
    for index, (text, pitch, tempo) in enumerate(lines):
        wav = workdir / f"line{index}.wav"
        if hts:
            script.append(
                f'(set! hts_engine_params (append sg_base_hts (list (list "-r" {tempo:.6f}))))'
            )
            raws_pitch.append(pitch)
        else:
            script.append(f"(Parameter.set 'Duration_Stretch {1.0 / tempo:.6f})")
            script.append(
                f"(set! int_lr_params (sg_scale_lr sg_base_lr {2.0 ** (pitch / 12.0):.6f}))"
            )
            raws_pitch.append(0.0)
        spoken = _engine_text(text, ascii_only=True)
        script.append(
            f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(spoken)})) "
            f"{_scheme_string(str(wav))} 'riff)"
        )
    script_file = workdir / "batch.scm"
    script_file.write_text("\n".join(script) + "\n", encoding="ascii")
    result = _run(["festival", "-b", str(script_file)])
    raws = []
    for index, pitch_left in enumerate(raws_pitch):
        wav = workdir / f"line{index}.wav"
        _check(result, f"festival voice {voice.name} for {lines[index][0]!r}", wav)
        samples, rate = _read_wav(wav)
        raws.append(_Raw(samples, rate, pitch_left))
    return raws


def _festival(voice: Voice, text: str, pitch: float, tempo: float, workdir: Path) -> _Raw:
    return _festival_batch(voice, [(text, pitch, tempo)], workdir)[0]


_ENGINE_FUNCTIONS: dict[str, Callable[[Voice, str, float, float, Path], _Raw]] = {
    "flite": _flite,
    "festival": _festival,
    "espeak": _espeak,
    "mbrola": _mbrola,
}


# --------------------------------------------------------------------------- post-processing


def _sox_pitch(
    samples: np.ndarray, sample_rate: int, semitones: float, workdir: Path
) -> np.ndarray:
    """Shift pitch by ``semitones`` keeping the duration, with sox (no dither: deterministic)."""
    if shutil.which("sox") is None:
        logger.warning(
            "sox is not installed; a pitch shift of %.2f semitones is skipped", semitones
        )
        return samples
    source, target = workdir / "pitch_in.wav", workdir / "pitch_out.wav"
    source.write_bytes(_encode_wav(samples, sample_rate))
    cents = f"{100.0 * semitones:.3f}"
    result = _run(["sox", "-D", str(source), str(target), "pitch", cents])
    _check(result, "sox pitch", target)
    shifted, _ = _read_wav(target)
    return shifted


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples.astype(np.float32)
    divisor = math.gcd(rate, target)
    return resample_poly(samples.astype(np.float64), target // divisor, rate // divisor).astype(
        np.float32
    )


def trim_silence(
    samples: np.ndarray, sample_rate: int, *, edge_s: float = _EDGE_SILENCE_S
) -> np.ndarray:
    """Cut leading and trailing silence down to ``edge_s`` seconds (padding with zeros if short).

    Engines pad lines with very different amounts of silence; a fixed margin keeps line timing
    in episodes under the generator's control rather than the engine's.
    """
    frame = max(sample_rate // 100, 1)
    num_frames = len(samples) // frame
    edge = round(edge_s * sample_rate)
    if num_frames == 0:
        return np.zeros(2 * edge, dtype=np.float32)
    power = np.mean(
        samples[: num_frames * frame].astype(np.float64).reshape(num_frames, frame) ** 2, axis=1
    )
    loud = (
        np.flatnonzero(power > power.max() * 10.0 ** (-_TRIM_RANGE_DB / 10.0))
        if power.max() > 0
        else []
    )
    if len(loud) == 0:
        return np.zeros(2 * edge, dtype=np.float32)
    start, end = loud[0] * frame, min((loud[-1] + 1) * frame, len(samples))
    core = samples[start:end]
    return np.concatenate(
        [np.zeros(edge, np.float32), core.astype(np.float32), np.zeros(edge, np.float32)]
    )


def _soft_limit(samples: np.ndarray, knee: float = 0.8) -> np.ndarray:
    """Keep peaks inside (-1, 1) with a smooth knee rather than hard clipping."""
    magnitude = np.abs(samples)
    over = magnitude > knee
    if not over.any():
        return samples
    limited = magnitude.copy()
    limited[over] = knee + (1.0 - knee) * np.tanh((magnitude[over] - knee) / (1.0 - knee))
    return (np.sign(samples) * limited).astype(np.float32)


def _seed(key: str) -> int:
    return int(key[:16], 16)


def _finish(raw: _Raw, job: SynthesisJob, key: str, workdir: Path) -> np.ndarray:
    samples = raw.samples
    if abs(raw.pitch_left) > 1e-3:
        samples = _sox_pitch(samples, raw.sample_rate, raw.pitch_left, workdir)
    samples = _scale_formants(samples, job.voice.formant_scale)
    samples = _resample(samples, raw.sample_rate, job.sample_rate)
    samples = trim_silence(samples, job.sample_rate)
    style = job.delivery.style
    if style == "shout":
        samples = audio_effects.shout(samples, job.sample_rate)
    elif style == "whisper":
        rng = np.random.default_rng(_seed(key))
        samples = audio_effects.whisper(samples, job.sample_rate, rng)
    level = REFERENCE_DBFS + job.delivery.gain_db + _STYLE_PROSODY[style][2]
    samples = audio_effects.normalise_loudness(samples, level)
    return _quantise(_soft_limit(samples))


def _engine_prosody(job: SynthesisJob) -> tuple[float, float]:
    """Pitch and tempo to ask the engine for. A derived voice is resampled afterwards, which
    speeds it up by its formant scale, so the engine speaks that much slower."""
    pitch_offset, tempo_factor, _ = _STYLE_PROSODY[job.delivery.style]
    tempo = job.delivery.tempo * tempo_factor / job.voice.formant_scale
    return job.delivery.pitch_semitones + pitch_offset, tempo


def _scale_formants(samples: np.ndarray, scale: float) -> np.ndarray:
    """Play ``samples`` ``scale`` times faster (all frequencies times ``scale``)."""
    if scale == 1.0:
        return samples
    ratio = Fraction(1.0 / scale).limit_denominator(200)
    return resample_poly(samples.astype(np.float64), ratio.numerator, ratio.denominator).astype(
        np.float32
    )


def _validate(job: SynthesisJob) -> None:
    if not isinstance(job.voice, Voice):
        raise TypeError(f"voice must be a Voice, got {type(job.voice).__name__}")
    if not job.text.strip():
        raise ValueError(f"nothing to say for voice {job.voice.key}: the text is empty")
    if not any(character.isalnum() for character in job.text):
        raise ValueError(f"nothing to say for voice {job.voice.key}: no words in {job.text!r}")
    if not 4000 <= job.sample_rate <= 96000:
        raise ValueError(f"sample_rate must be within [4000, 96000], got {job.sample_rate}")


def _synthesize_uncached(job: SynthesisJob, key: str) -> np.ndarray:
    pitch, tempo = _engine_prosody(job)
    with tempfile.TemporaryDirectory(prefix="sg-voice-") as tmp:
        workdir = Path(tmp)
        raw = _ENGINE_FUNCTIONS[job.voice.engine](job.voice, job.text, pitch, tempo, workdir)
        return _finish(raw, job, key, workdir)


def _store(key: str, samples: np.ndarray, sample_rate: int) -> None:
    try:
        atomic_write_bytes(_cache_path(key), _encode_wav(samples, sample_rate))
    except OSError as error:  # a read-only or full cache must not stop synthesis
        logger.warning("could not cache a synthesised line in %s: %s", voice_cache_dir(), error)


def synthesize(
    voice: Voice, text: str, *, delivery: Delivery = Delivery(), sample_rate: int = 16000
) -> np.ndarray:
    """Speak ``text`` with ``voice``: ``(num_samples,) float32`` mono in [-1, 1].

    Deterministic: the same inputs give the same samples (from the cache or freshly made).
    Leading and trailing silence is trimmed to about 50 ms, and the speech is brought to
    ``REFERENCE_DBFS + delivery.gain_db`` (plus the style's gain) RMS over its active part,
    with a soft limiter on peaks.
    """
    job = SynthesisJob(voice, text, delivery, sample_rate)
    _validate(job)
    key = _cache_key(job)
    cached = _load_cached(key, sample_rate)
    if cached is not None:
        return cached
    samples = _synthesize_uncached(job, key)
    _store(key, samples, sample_rate)
    return samples


def _as_job(job: SynthesisJob | tuple) -> SynthesisJob:
    return job if isinstance(job, SynthesisJob) else SynthesisJob(*job)


def _festival_chunk(jobs: Sequence[SynthesisJob], keys: Sequence[str]) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="sg-festival-") as tmp:
        workdir = Path(tmp)
        lines = [(job.text, *_engine_prosody(job)) for job in jobs]
        raws = _festival_batch(jobs[0].voice, lines, workdir)
        results = []
        for raw, job, key in zip(raws, jobs, keys, strict=True):
            samples = _finish(raw, job, key, workdir)
            _store(key, samples, job.sample_rate)
            results.append(samples)
        return results


def _single(job: SynthesisJob, key: str) -> list[np.ndarray]:
    samples = _synthesize_uncached(job, key)
    _store(key, samples, job.sample_rate)
    return [samples]


def synthesize_many(
    jobs: Sequence[SynthesisJob | tuple],
    *,
    workers: int = 2,
    hook: Callable[..., None] | None = None,
) -> list[np.ndarray]:
    """:func:`synthesize` for many lines, in parallel, results in the order of ``jobs``.

    ``jobs`` are :class:`SynthesisJob` or tuples of its fields (``(voice, text)``,
    ``(voice, text, delivery)``...). Cached lines are read first; the rest run ``workers``
    engine processes at a time, festival lines of one voice batched into one process.
    ``hook("synthesize", completed=i, total=n)`` reports progress.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    parsed = [_as_job(job) for job in jobs]
    for job in parsed:
        _validate(job)
    total = len(parsed)
    results: list[np.ndarray | None] = [None] * total
    keys = [_cache_key(job) for job in parsed]
    pending: list[int] = []
    for index, (job, key) in enumerate(zip(parsed, keys, strict=True)):
        cached = _load_cached(key, job.sample_rate)
        if cached is None:
            pending.append(index)
        else:
            results[index] = cached
    completed = total - len(pending)
    if hook is not None:
        hook("synthesize", completed=completed, total=total)
    # Identical lines are made once and handed to every job that asked for them.
    waiting: dict[str, list[int]] = {}
    for index in pending:
        waiting.setdefault(keys[index], []).append(index)
    tasks: list[list[int]] = []
    festival_groups: dict[tuple[str, float, int], list[int]] = {}
    for indices in waiting.values():
        job = parsed[indices[0]]
        if job.voice.engine == "festival":
            group = (job.voice.name, job.voice.formant_scale, job.sample_rate)
            festival_groups.setdefault(group, []).append(indices[0])
        else:
            tasks.append([indices[0]])
    for group in festival_groups.values():
        tasks += [group[i : i + _FESTIVAL_BATCH] for i in range(0, len(group), _FESTIVAL_BATCH)]
    # Festival batches are the longest tasks: start them first so they do not finish last.
    tasks.sort(key=lambda task: -len(task))

    def run(task: list[int]) -> list[np.ndarray]:
        if parsed[task[0]].voice.engine == "festival":
            return _festival_chunk([parsed[i] for i in task], [keys[i] for i in task])
        return _single(parsed[task[0]], keys[task[0]])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run, task): task for task in tasks}
        for future in as_completed(futures):
            for made, samples in zip(futures[future], future.result(), strict=True):
                for copy, index in enumerate(waiting[keys[made]]):
                    results[index] = samples.copy() if copy else samples
                    completed += 1
            if hook is not None:
                hook("synthesize", completed=completed, total=total)
    return [r for r in results if r is not None]
