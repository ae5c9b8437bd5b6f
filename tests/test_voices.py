import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.install_voices import install_mbrola_voices, private_sources
from bench.voices import (
    Delivery,
    SynthesisJob,
    Voice,
    available_voices,
    synthesize,
    synthesize_many,
)

SR = 16000
SENTENCE = "Oh you are early today, I was waiting all morning for you."
# Vowel-heavy, so the autocorrelation f0 estimate has plenty of voiced frames.
VOWELS = "Oh, I know, you are all alone in the rain, and you may well go home now."


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each test run synthesises afresh into its own cache, never the user's."""
    cache = tmp_path_factory.mktemp("voice-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SG_VOICE_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def mbrola_ready() -> bool:
    """Try to fetch the default MBROLA voices (no network or non-free mirror means skip)."""
    return "us2" in install_mbrola_voices()


def _voice_for(engine: str, mbrola_ready: bool) -> Voice:
    if engine == "mbrola" and not mbrola_ready:
        pytest.skip("MBROLA voices could not be installed here")
    voices = [v for v in available_voices() if v.engine == engine]
    if not voices:
        pytest.skip(f"no {engine} voice installed")
    return voices[0]


def _pitch_frames(x: np.ndarray) -> list[tuple[float, float]]:
    """(f0 Hz, periodicity) of each loud 40 ms frame, from its autocorrelation peak."""
    frame, hop = 640, 160
    loud = np.sqrt(np.mean(x**2))
    frames = []
    for start in range(0, len(x) - frame, hop):
        segment = x[start : start + frame].astype(np.float64)
        segment -= segment.mean()
        if np.sqrt(np.mean(segment**2)) < 0.5 * loud:
            continue
        ac = np.correlate(segment, segment, "full")[frame - 1 :]
        low, high = SR // 450, SR // 60
        lag = low + int(np.argmax(ac[low:high]))
        frames.append((SR / lag, ac[lag] / ac[0]))
    return frames


def _f0(x: np.ndarray) -> float:
    """Median f0 (Hz) over voiced frames (periodicity above 0.5)."""
    estimates = [f0 for f0, periodicity in _pitch_frames(x) if periodicity > 0.5]
    assert len(estimates) > 20, "too few voiced frames to estimate f0"
    return float(np.exp(np.median(np.log(estimates))))


def _periodicity(x: np.ndarray) -> float:
    return float(np.median([periodicity for _, periodicity in _pitch_frames(x)]))


def _active_seconds(x: np.ndarray) -> float:
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return float((power > power.max() * 1e-4).sum() * 160 / SR)


def test_voice_key_and_validation():
    assert Voice("flite", "slt").key == "flite:slt"
    assert Voice("mbrola", "mb-us1", licence_clean=False).key == "mbrola:mb-us1"
    with pytest.raises(ValueError, match="unknown voice engine 'sapi'"):
        Voice("sapi", "david")
    with pytest.raises(ValueError, match="tempo"):
        Delivery(tempo=0.0)
    with pytest.raises(ValueError, match="style"):
        Delivery(style="sing")
    with pytest.raises(ValueError, match="formant_scale"):
        Voice("flite", "slt", formant_scale=2.0)
    with pytest.raises(ValueError, match="text is empty"):
        synthesize(Voice("espeak", "en-us"), "   ")
    with pytest.raises(ValueError, match=r"no words in '\.\.\.!'"):
        synthesize(Voice("espeak", "en-us"), "...!")


def test_available_voices_are_stable_and_recorded_voices_come_first():
    voices = available_voices()
    assert voices == available_voices()
    assert len({v.key for v in voices}) == len(voices)
    engines = [v.engine for v in voices]
    if "espeak" in engines:
        first_espeak = engines.index("espeak")
        assert all(engine == "espeak" for engine in engines[first_espeak:])
    assert all(v.licence_clean == (v.engine != "mbrola") for v in voices)
    assert not any(v.engine == "mbrola" for v in available_voices(allow_mbrola=False))


@pytest.mark.parametrize("engine", ["flite", "festival", "espeak", "mbrola"])
def test_each_engine_speaks_a_sentence(engine, mbrola_ready):
    voice = _voice_for(engine, mbrola_ready)
    audio = synthesize(voice, SENTENCE)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.abs(audio).max() <= 1.0
    assert 1.5 < len(audio) / SR < 6.0  # 12 words
    assert 10 * np.log10(np.mean(audio**2)) > -40.0
    # Edges trimmed to about 50 ms of silence.
    lead = int(np.argmax(np.abs(audio) > 0.01 * np.abs(audio).max()))
    assert 0.03 < lead / SR < 0.12


def test_synthesis_is_deterministic_fresh_and_cached(tmp_path, monkeypatch):
    voices = [v for v in available_voices() if v.engine in ("flite", "festival")][:2]
    if not voices:
        pytest.skip("no flite or festival voice installed")
    runs = []
    for attempt in range(2):
        monkeypatch.setenv("SG_VOICE_CACHE", str(tmp_path / f"cache{attempt}"))
        for voice in voices:
            fresh = synthesize(voice, SENTENCE, delivery=Delivery(pitch_semitones=1.5, tempo=0.9))
            cached = synthesize(voice, SENTENCE, delivery=Delivery(pitch_semitones=1.5, tempo=0.9))
            assert fresh.tobytes() == cached.tobytes()
            runs.append(fresh.tobytes())
    assert runs[: len(voices)] == runs[len(voices) :]


def _pitch_cases() -> list[Voice]:
    """One voice per pitch mechanism: flite f0_shift, festival LR model, espeak -p, mbrola -f,
    and the sox fallback (flite rms, festival HTS)."""
    return [
        Voice("flite", "slt"),
        Voice("flite", "rms"),
        Voice("festival", "voice_kal_diphone"),
        Voice("festival", "voice_cmu_us_slt_arctic_hts"),
        Voice("espeak", "en-us+m1"),
        Voice("mbrola", "mb-us2", licence_clean=False),
    ]


@pytest.mark.parametrize("voice", _pitch_cases(), ids=lambda v: v.key)
def test_pitch_shift_moves_f0_by_the_requested_semitones(voice, mbrola_ready):
    installed = {v.key for v in available_voices()}
    if voice.key not in installed:
        pytest.skip(f"{voice.key} is not installed")
    base = _f0(synthesize(voice, VOWELS))
    up = _f0(synthesize(voice, VOWELS, delivery=Delivery(pitch_semitones=4.0)))
    down = _f0(synthesize(voice, VOWELS, delivery=Delivery(pitch_semitones=-3.0)))
    assert 12 * np.log2(up / base) == pytest.approx(4.0, abs=1.0)
    assert 12 * np.log2(down / base) == pytest.approx(-3.0, abs=1.0)


@pytest.mark.parametrize("engine", ["flite", "festival", "espeak", "mbrola"])
def test_tempo_changes_duration(engine, mbrola_ready):
    voice = _voice_for(engine, mbrola_ready)
    normal = _active_seconds(synthesize(voice, SENTENCE))
    fast = _active_seconds(synthesize(voice, SENTENCE, delivery=Delivery(tempo=1.5)))
    slow = _active_seconds(synthesize(voice, SENTENCE, delivery=Delivery(tempo=0.75)))
    assert fast / normal == pytest.approx(1 / 1.5, rel=0.2)
    assert slow / normal == pytest.approx(1 / 0.75, rel=0.2)


@pytest.mark.parametrize("scale", [0.87, 1.15])
def test_derived_voice_scales_pitch_and_keeps_duration(scale):
    recorded = _voice_for("flite", True)
    derived = Voice(recorded.engine, recorded.name, formant_scale=scale)
    assert derived.key == f"{recorded.key}@{scale:g}" and derived.person != recorded.person
    original, scaled = synthesize(recorded, VOWELS), synthesize(derived, VOWELS)
    assert _f0(scaled) / _f0(original) == pytest.approx(scale, rel=0.04)
    assert _active_seconds(scaled) / _active_seconds(original) == pytest.approx(1.0, abs=0.08)
    assert derived in available_voices(allow_derived=True)
    assert derived not in available_voices()


def test_gain_and_styles_change_level_and_voicing():
    voice = _voice_for("flite", True)
    normal = synthesize(voice, VOWELS)
    louder = synthesize(voice, VOWELS, delivery=Delivery(gain_db=6.0))
    shout = synthesize(voice, VOWELS, delivery=Delivery(style="shout"))
    whisper = synthesize(voice, VOWELS, delivery=Delivery(style="whisper"))

    def level(x: np.ndarray) -> float:
        return 10 * np.log10(np.mean(x.astype(np.float64) ** 2))

    assert level(louder) - level(normal) == pytest.approx(6.0, abs=1.0)
    assert level(shout) - level(normal) > 4.0
    assert level(whisper) - level(normal) < -4.0
    assert _f0(shout) > 1.15 * _f0(normal)
    # Whispering leaves no voicing: measured medians are about 0.2-0.35 against 0.65-0.85.
    assert _periodicity(normal) > 0.6
    assert _periodicity(whisper) < 0.45


def _alone(job: SynthesisJob | tuple) -> np.ndarray:
    job = job if isinstance(job, SynthesisJob) else SynthesisJob(*job)
    return synthesize(job.voice, job.text, delivery=job.delivery, sample_rate=job.sample_rate)


def test_synthesize_many_matches_synthesize_in_order(tmp_path, monkeypatch):
    voices = [v for v in available_voices() if v.engine != "mbrola"]
    festival = [v for v in voices if v.engine == "festival"][:1]
    others = [v for v in voices if v.engine != "festival"][:2]
    if not festival or not others:
        pytest.skip("needs festival and another engine")
    texts = ["Good morning.", "Where is everyone?", "I will be right back.", "Good morning."]
    jobs = [
        SynthesisJob(festival[0], t, Delivery(pitch_semitones=i - 1.0)) for i, t in enumerate(texts)
    ]
    jobs += [(others[0], "Watch out!"), (others[1], "No way.", Delivery(style="shout"))]
    jobs.append(jobs[0])  # a duplicate is made once and returned twice
    progress = []
    monkeypatch.setenv("SG_VOICE_CACHE", str(tmp_path / "batch"))
    batch = synthesize_many(jobs, workers=2, hook=lambda step, **kw: progress.append((step, kw)))
    monkeypatch.setenv("SG_VOICE_CACHE", str(tmp_path / "single"))
    single = [_alone(job) for job in jobs]
    assert len(batch) == len(jobs)
    for made_together, made_alone in zip(batch, single, strict=True):
        assert made_together.tobytes() == made_alone.tobytes()
    assert progress[-1] == ("synthesize", {"completed": len(jobs), "total": len(jobs)})
    assert all(step == "synthesize" for step, _ in progress)


def test_install_mbrola_voices_skips_unknown_names_without_raising(caplog, tmp_path):
    with caplog.at_level(logging.WARNING):
        assert install_mbrola_voices(("zz9",), cache_dir=tmp_path) == []
    assert "zz9" in caplog.text


def test_private_sources_only_add_components():
    text = private_sources(["contrib", "non-free"])
    for line in text.splitlines():
        if line.startswith("Components:"):
            components = line.split()[1:]
            assert components[0] == "main" or "main" in components
            assert {"contrib", "non-free"} <= set(components)


SPEAKER_SENTENCES = [
    "I told you already, the train leaves at seven and we are not going to make it.",
    "Why would anyone leave the door open in the middle of the night?",
    "Listen carefully, because I am only going to explain this once.",
    "She said the package arrived this morning, but nobody signed for it.",
    "We should get going before the rain starts again.",
    "Do you remember where we parked the car yesterday?",
]


def _nearest_neighbour_accuracy(voices: list[Voice], per_voice: int = 3) -> float:
    """Leave-one-out 1-NN accuracy of resemblyzer embeddings; each voice says other lines."""
    resemblyzer = pytest.importorskip("resemblyzer")
    jobs, labels = [], []
    for index, voice in enumerate(voices):
        for turn in range(per_voice):
            sentence = SPEAKER_SENTENCES[(index + 2 * turn) % len(SPEAKER_SENTENCES)]
            jobs.append(SynthesisJob(voice, sentence))
            labels.append(index)
    encoder = resemblyzer.VoiceEncoder("cpu", verbose=False)
    embeddings = np.stack(
        [
            encoder.embed_utterance(resemblyzer.preprocess_wav(audio, source_sr=SR))
            for audio in synthesize_many(jobs)
        ]
    )
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    labels = np.array(labels)
    return float(np.mean(labels[similarity.argmax(axis=1)] == labels))


def _one_per_person(voices: list[Voice]) -> list[Voice]:
    seen, kept = set(), []
    for voice in voices:
        if voice.person not in seen:
            seen.add(voice.person)
            kept.append(voice)
    return kept


@pytest.mark.slow
def test_resemblyzer_tells_the_licence_clean_recorded_voices_apart():
    voices = _one_per_person(
        [v for v in available_voices(allow_mbrola=False) if v.engine != "espeak"]
    )
    if len(voices) < 3:
        pytest.skip("fewer than 3 recorded licence-clean voices installed")
    assert _nearest_neighbour_accuracy(voices) >= 0.9


@pytest.mark.slow
def test_resemblyzer_tells_the_mbrola_voices_apart(mbrola_ready):
    if not mbrola_ready:
        pytest.skip("MBROLA voices could not be installed here")
    voices = [v for v in available_voices() if v.engine == "mbrola"][:4]
    voices += _one_per_person(
        [v for v in available_voices(allow_mbrola=False) if v.engine != "espeak"]
    )
    assert _nearest_neighbour_accuracy(voices) >= 0.9
