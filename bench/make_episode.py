"""Compose a synthetic episode: video (H.264 + AAC), subtitles and the truth of who says what.

A benchmark for speaker grouping needs episodes whose answer is known line by line and whose
difficulty can be dialled: this module casts characters (a voice and a look each, stable across a
season), lets :mod:`bench.script_writer` write scenes of dialogue, synthesises every line with
:mod:`bench.voices`, lays the lines out on a timeline with natural gaps, interruptions, music and
noise beds and room echo from :mod:`bench.audio_effects`, draws the pictures with
:mod:`bench.drawing`, and writes::

    episode.mp4   H.264 + AAC (mono) in MP4
    episode.srt   or episode.ass: one cue per line, with the subtitle times a fansub would have
    truth.csv     index,start,end,speaker,character,condition (one row per cue, same order)
    spec.json     the resolved spec, seed, cast (voice and look of each character), audio hash

Everything is drawn from ``numpy`` generators seeded from the episode seed, one stream per
concern, so an episode is reproducible on the same machine: the same truth.csv, subtitles and
audio samples (``audio_sha256`` in spec.json is the SHA-256 of the 16-bit PCM that is encoded).
The MP4 bytes themselves may differ between runs, as x264's threading allows.

Usage: ``python -m bench.make_episode --preset tiny --seed 1 --out DIR``.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pysubs2

from bench import audio_effects, voices
from bench.drawing import Background, Look, Placement, random_looks, render_frame, render_title_card
from bench.episode_spec import GENERATOR_VERSION, PRESETS, EpisodeSpec, resolve_spec
from bench.script_writer import CHARACTER_NAMES, Scene, ScriptLine, line_counts, write_script
from foundation.atomic import atomic_write_json, atomic_write_text
from foundation.hook import Hook

logger = logging.getLogger(__name__)


H264_ENCODER = "libx264"
"""The PyAV wheel ships libx264 (not libopenh264)."""

ONE_WORD_MAX_S = 0.8
TRUTH_COLUMNS = ("index", "start", "end", "speaker", "character", "condition")

# One random stream per concern: changing how pictures are drawn must not change the audio.
_CAST_STREAM, _SCRIPT_STREAM, _DELIVERY_STREAM, _TIMING_STREAM, _MIX_STREAM, _PICTURE_STREAM = (
    range(6)
)


@dataclass(frozen=True)
class Character:
    """A character of the cast: the label to predict, voiced by ``speaker``, drawn as ``look``."""

    name: str
    speaker: str
    """The voice actor: a voice key; two characters share it when one actor plays both."""
    voice: voices.Voice
    pitch_semitones: float
    """The character's own pitch offset on the actor's voice."""
    tempo: float
    look: Look
    shared_voice: bool = False


@dataclass(frozen=True)
class EpisodeFiles:
    """Where an episode was written, and what identifies its content."""

    folder: Path
    video: Path
    subtitles: Path
    truth: Path
    spec: Path
    audio_sha256: str
    lines: int
    duration_s: float


@dataclass(eq=False)
class _TimedLine:
    """A script line placed on the timeline (seconds from the start of the episode)."""

    scene: int
    line: ScriptLine
    audio: np.ndarray
    speech_start: float
    speech_end: float
    cue_start: float = 0.0
    cue_end: float = 0.0


# ---------------------------------------------------------------------------------------------
# Public entry points


def make_episode(
    preset_or_spec: str | EpisodeSpec | dict[str, Any],
    *,
    seed: int,
    out_dir: str | Path,
    subtitle_format: str = "srt",
    allow_mbrola: bool = True,
    hook: Hook | None = None,
) -> EpisodeFiles:
    """Write one episode into ``out_dir``; a season spec writes ``out_dir/ep01..`` instead.

    For a season the first episode's files are returned (see :func:`make_season` for all).
    """
    spec = resolve_spec(preset_or_spec)
    if spec.episodes > 1:
        return make_season(
            spec,
            seed=seed,
            out_dir=out_dir,
            subtitle_format=subtitle_format,
            allow_mbrola=allow_mbrola,
            hook=hook,
        )[0]
    cast = build_cast(spec, seed=seed, allow_mbrola=allow_mbrola)
    return _write_episode(
        spec,
        cast,
        seed=seed,
        episode=0,
        out_dir=Path(out_dir),
        subtitle_format=subtitle_format,
        hook=hook,
    )


def make_season(
    preset_or_spec: str | EpisodeSpec | dict[str, Any] = "season",
    *,
    seed: int,
    out_dir: str | Path,
    subtitle_format: str = "srt",
    allow_mbrola: bool = True,
    hook: Hook | None = None,
) -> list[EpisodeFiles]:
    """Write ``spec.episodes`` episodes sharing one cast into ``out_dir/ep01``, ``ep02``, ...

    The cast depends only on the seed, so the same character has the same voice and look in
    every episode (and the season's first episode equals the single episode of that seed).
    """
    spec = resolve_spec(preset_or_spec)
    cast = build_cast(spec, seed=seed, allow_mbrola=allow_mbrola)
    out_dir = Path(out_dir)
    written = []
    for episode in range(spec.episodes):
        written.append(
            _write_episode(
                spec,
                cast,
                seed=seed,
                episode=episode,
                out_dir=out_dir / f"ep{episode + 1:02d}",
                subtitle_format=subtitle_format,
                hook=hook,
            )
        )
    atomic_write_json(
        out_dir / "season.json",
        {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "spec": spec.to_dict(),
            "cast": [_character_record(character) for character in cast],
            "episodes": [str(files.folder.relative_to(out_dir)) for files in written],
        },
    )
    return written


def build_cast(spec: EpisodeSpec, *, seed: int, allow_mbrola: bool = True) -> list[Character]:
    """Characters in order of importance (leads first), each with a voice, pitch and look.

    Voices come from :func:`bench.voices.available_voices` in its order of preference, so the
    most natural voices are used first and espeak-ng only when the others run out; a second
    voice recorded from the same person is never used as another actor. A spec with
    ``shared_voices`` gives pairs of supporting characters one actor each, with pitch offsets
    four or more semitones apart, as one actor voicing two roles would; so does a pool too
    small for the cast.
    """
    rng = np.random.default_rng([seed, _CAST_STREAM])
    pool = voices.available_voices(allow_mbrola=allow_mbrola)
    if not pool:
        raise RuntimeError(
            "no text-to-speech voice is available; install flite, festival or espeak-ng"
        )
    count = spec.characters
    names = [CHARACTER_NAMES[i] for i in rng.permutation(len(CHARACTER_NAMES))[:count]]
    looks = random_looks(count, rng)
    leads = 2 if count <= 5 else 3
    sharer: dict[int, int] = {}
    for pair in range(spec.conditions.shared_voices):
        # Pairs of supporting characters (or the last ones, in a small cast) share one actor.
        first = min(leads + 2 * pair, count - 2)
        if first < 0 or first in sharer or first + 1 in sharer or first in sharer.values():
            break
        sharer[first + 1] = first
    distinct = count - len(sharer)
    chosen = _one_voice_per_person(pool)[:distinct]
    if len(chosen) < distinct:
        logger.warning(
            "only %d voices for %d characters: some actors play two roles", len(pool), distinct
        )
    actor_of: list[int] = []
    order = rng.permutation(len(chosen))
    next_actor = 0
    for index in range(count):
        if index in sharer:
            actor_of.append(actor_of[sharer[index]])
        else:
            actor_of.append(int(order[next_actor % len(chosen)]))
            next_actor += 1
    cast: list[Character] = []
    for index in range(count):
        actor = actor_of[index]
        siblings = [other for other in range(count) if actor_of[other] == actor]
        pitch = float(rng.uniform(-1.5, 1.5))
        if len(siblings) > 1:
            # Same actor, other role: spread the roles' pitches 4.5 semitones apart.
            rank = siblings.index(index)
            pitch = -2.0 + 4.5 * rank + float(rng.uniform(-0.5, 0.5))
        voice = chosen[actor]
        cast.append(
            Character(
                name=names[index],
                speaker=voice.key,
                voice=voice,
                pitch_semitones=round(pitch, 2),
                tempo=round(float(rng.uniform(0.93, 1.07)), 3),
                look=looks[index],
                shared_voice=len(siblings) > 1,
            )
        )
    return cast


_SAME_PERSON: dict[str, str] = {
    "flite:kal": "kal",
    "flite:kal16": "kal",
    "festival:voice_kal_diphone": "kal",
    "flite:slt": "slt",
    "festival:voice_cmu_us_slt_arctic_hts": "slt",
}
"""Voices of different engines recorded from one person (Kevin Lenzo's kal, CMU ARCTIC slt).

Given to two characters they would sound like one actor while truth.csv called them two, so
only the first of each person (in order of preference) is cast.
"""


def _one_voice_per_person(pool: Sequence[voices.Voice]) -> list[voices.Voice]:
    seen: set[str] = set()
    kept = []
    for voice in pool:
        person = _SAME_PERSON.get(voice.key, voice.key)
        if person not in seen:
            seen.add(person)
            kept.append(voice)
    return kept


# ---------------------------------------------------------------------------------------------
# One episode


def _write_episode(
    spec: EpisodeSpec,
    cast: Sequence[Character],
    *,
    seed: int,
    episode: int,
    out_dir: Path,
    subtitle_format: str,
    hook: Hook | None,
) -> EpisodeFiles:
    if subtitle_format not in ("srt", "ass"):
        raise ValueError(f"subtitle_format must be 'srt' or 'ass', got {subtitle_format!r}")
    began = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    streams = {stream: np.random.default_rng([seed, episode, stream]) for stream in range(6)}
    counts = line_counts(spec.characters, spec.lines, streams[_SCRIPT_STREAM])
    scenes = write_script(
        names=[character.name for character in cast],
        counts=counts,
        conditions=spec.conditions,
        scene_lines=spec.scene_lines,
        words_per_line=spec.words_per_line,
        rng=streams[_SCRIPT_STREAM],
    )
    clips, deliveries = _synthesise(spec, cast, scenes, streams[_DELIVERY_STREAM], hook)
    timed = _lay_out(spec, scenes, clips, streams[_TIMING_STREAM])
    pcm = _mix(spec, scenes, timed, streams[_MIX_STREAM], hook)
    audio_sha256 = hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest()
    duration_s = len(pcm) / spec.sample_rate
    video_path = out_dir / "episode.mp4"
    _encode_video(
        spec, cast, scenes, timed, pcm, video_path, streams[_PICTURE_STREAM], seed, episode, hook
    )
    subtitle_path = out_dir / f"episode.{subtitle_format}"
    atomic_write_text(subtitle_path, _subtitle_text(timed, subtitle_format, spec))
    truth_path = out_dir / "truth.csv"
    atomic_write_text(truth_path, _truth_csv(timed, cast, scenes))
    spec_path = out_dir / "spec.json"
    atomic_write_json(
        spec_path,
        {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "episode": episode + 1,
            "spec": spec.to_dict(),
            "cast": [
                {**_character_record(character), "lines": counts[index]}
                for index, character in enumerate(cast)
            ],
            "mbrola": any(not character.voice.licence_clean for character in cast),
            "licence_clean": all(character.voice.licence_clean for character in cast),
            "scenes": len(scenes),
            "lines": len(timed),
            "duration_s": round(duration_s, 3),
            "sample_rate": spec.sample_rate,
            "subtitles": subtitle_path.name,
            "audio_sha256": audio_sha256,
            "lines_detail": [
                _line_record(index, line, delivery)
                for index, (line, delivery) in enumerate(
                    zip(timed, deliveries, strict=True), start=1
                )
            ],
        },
    )
    logger.info(
        "wrote %s: %d lines, %.1f s of episode in %.1f s",
        out_dir,
        len(timed),
        duration_s,
        time.monotonic() - began,
    )
    return EpisodeFiles(
        folder=out_dir,
        video=video_path,
        subtitles=subtitle_path,
        truth=truth_path,
        spec=spec_path,
        audio_sha256=audio_sha256,
        lines=len(timed),
        duration_s=duration_s,
    )


def _line_record(index: int, line: _TimedLine, delivery: voices.Delivery) -> dict[str, Any]:
    """What truth.csv leaves out: the text, when the voice really sounds, and how it was said."""
    return {
        "index": index,
        "text": line.line.text,
        "speech_start": round(line.speech_start, 3),
        "speech_end": round(line.speech_end, 3),
        "pitch_semitones": delivery.pitch_semitones,
        "tempo": delivery.tempo,
        "style": delivery.style,
    }


def _character_record(character: Character) -> dict[str, Any]:
    return {
        "name": character.name,
        "speaker": character.speaker,
        "engine": character.voice.engine,
        "voice": character.voice.name,
        "licence_clean": character.voice.licence_clean,
        "pitch_semitones": character.pitch_semitones,
        "tempo": character.tempo,
        "shared_voice": character.shared_voice,
        "look": asdict(character.look),
    }


# ---------------------------------------------------------------------------------------------
# Audio


def _delivery(
    character: Character, line: ScriptLine, spec: EpisodeSpec, rng: np.random.Generator
) -> voices.Delivery:
    """Nobody says two lines alike: pitch and speed wander around the character's own.

    Shouting and whispering (pitch, speed, level and timbre) are :class:`bench.voices.Delivery`
    styles; the level of every line is set by the synthesiser, relative to one reference.
    """
    conditions = spec.conditions
    pitch = character.pitch_semitones + float(rng.normal(0.0, conditions.pitch_spread_semitones))
    tempo = character.tempo * float(
        np.clip(1.0 + rng.normal(0.0, conditions.tempo_spread), 0.75, 1.35)
    )
    style = "shout" if line.shout else "whisper" if line.whisper else "normal"
    return voices.Delivery(pitch_semitones=round(pitch, 2), tempo=round(tempo, 3), style=style)


def _synthesise(
    spec: EpisodeSpec,
    cast: Sequence[Character],
    scenes: Sequence[Scene],
    rng: np.random.Generator,
    hook: Hook | None,
) -> tuple[list[np.ndarray], list[voices.Delivery]]:
    """Each line's speech and delivery (the synthesiser trims it to 50 ms of silence either side).

    One-word lines that come out at 0.8 s or longer are said again, faster, so that the
    condition means what it says.
    """
    lines = [line for scene in scenes for line in scene.lines]
    deliveries = [_delivery(cast[line.character], line, spec, rng) for line in lines]
    jobs = [
        voices.SynthesisJob(
            voice=cast[line.character].voice,
            text=line.text,
            delivery=delivery,
            sample_rate=spec.sample_rate,
        )
        for line, delivery in zip(lines, deliveries, strict=True)
    ]
    raw = voices.synthesize_many(jobs, workers=2, hook=hook)
    clips = list(raw)
    for _ in range(3):
        too_long = [
            i
            for i, line in enumerate(lines)
            if line.one_word and len(clips[i]) >= ONE_WORD_MAX_S * spec.sample_rate
        ]
        if not too_long:
            break
        retry = []
        for i in too_long:
            factor = len(clips[i]) / spec.sample_rate / (0.9 * ONE_WORD_MAX_S)
            deliveries[i] = replace(deliveries[i], tempo=round(deliveries[i].tempo * factor, 3))
            retry.append(replace(jobs[i], delivery=deliveries[i]))
        for i, clip in zip(too_long, voices.synthesize_many(retry, workers=2), strict=True):
            clips[i] = clip
    for i, line in enumerate(lines):
        if line.one_word and len(clips[i]) >= ONE_WORD_MAX_S * spec.sample_rate:
            # A last resort that keeps the condition honest: cut with a short fade.
            clips[i] = _fade_out(
                clips[i][: int((ONE_WORD_MAX_S - 0.05) * spec.sample_rate)], spec.sample_rate
            )
    return clips, deliveries


def _fade_out(clip: np.ndarray, sample_rate: int, seconds: float = 0.03) -> np.ndarray:
    clip = clip.copy()
    n = min(len(clip), int(seconds * sample_rate))
    if n:
        clip[-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return clip


def _lay_out(
    spec: EpisodeSpec,
    scenes: Sequence[Scene],
    clips: Sequence[np.ndarray],
    rng: np.random.Generator,
) -> list[_TimedLine]:
    """Place lines with natural gaps; interrupted lines stop where the next one starts.

    Cues are then timed as a subtitler would: a little before the voice starts and a little
    after it stops, never overlapping the next cue; jittered cues are then moved at random by up
    to ``jitter_max_s`` either way, overlaps and all, as sloppy fansub timing is.
    """
    sr = spec.sample_rate
    timed: list[_TimedLine] = []
    cursor = spec.title_s
    index = 0
    for scene_index, scene in enumerate(scenes):
        cursor += float(rng.uniform(*spec.scene_gap_s)) if scene_index else 0.5
        for position, line in enumerate(scene.lines):
            clip = clips[index]
            index += 1
            start = cursor
            if position and timed[-1].line.cut_by_next:
                previous = timed[-1]
                cut_at = previous.speech_start + float(rng.uniform(0.55, 0.8)) * (
                    previous.speech_end - previous.speech_start
                )
                keep = max(1, round((cut_at - previous.speech_start) * sr))
                previous.audio = _fade_out(previous.audio[:keep], sr)
                previous.speech_end = previous.speech_start + keep / sr
                start = previous.speech_end
            end = start + len(clip) / sr
            timed.append(
                _TimedLine(
                    scene=scene_index, line=line, audio=clip, speech_start=start, speech_end=end
                )
            )
            cursor = end + float(rng.uniform(*spec.gap_s))
    for line in timed:
        line.cue_start = max(0.0, line.speech_start - float(rng.uniform(0.05, 0.25)))
        line.cue_end = line.speech_end + float(rng.uniform(0.2, 0.5))
    for previous, line in itertools.pairwise(timed):
        if previous.cue_end > line.cue_start:
            # Split the silence between the two voices (none, when one interrupts the other).
            boundary = min(
                max(0.5 * (previous.speech_end + line.speech_start), previous.cue_start + 0.1),
                line.speech_start,
            )
            previous.cue_end = line.cue_start = boundary
    limit = spec.conditions.jitter_max_s
    for line in timed:
        if line.line.jitter:
            line.cue_start = max(0.0, line.cue_start + float(rng.uniform(-limit, limit)))
            line.cue_end = max(
                line.cue_start + 0.3, line.cue_end + float(rng.uniform(-limit, limit))
            )
    # Subtitle files keep centiseconds (ASS) or milliseconds (SRT): round once, to 10 ms, so
    # truth.csv equals what either format stores. Cue order is start order, as players show it.
    previous_start = -1.0
    for line in timed:
        line.cue_start = max(_centiseconds(line.cue_start), previous_start + 0.01)
        line.cue_end = max(_centiseconds(line.cue_end), line.cue_start + 0.1)
        line.cue_start, line.cue_end = round(line.cue_start, 2), round(line.cue_end, 2)
        previous_start = line.cue_start
    return timed


def _centiseconds(seconds: float) -> float:
    return round(seconds * 100) / 100


def _scene_spans(timed: Sequence[_TimedLine], num_scenes: int) -> list[tuple[float, float]]:
    """(first voice start, last voice end) of every scene, in seconds."""
    spans = [(math.inf, -math.inf)] * num_scenes
    for line in timed:
        begin, end = spans[line.scene]
        spans[line.scene] = (min(begin, line.speech_start), max(end, line.speech_end))
    return spans


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _mix(
    spec: EpisodeSpec,
    scenes: Sequence[Scene],
    timed: Sequence[_TimedLine],
    rng: np.random.Generator,
    hook: Hook | None,
) -> np.ndarray:
    """The episode's mono soundtrack as int16: voices, room echo and the scenes' beds.

    A bed's level is set against the speech of its own scene, so ``music_5db`` means the
    scene's voices are 5 dB above the music on average (shouts more, whispers less).
    """
    sr = spec.sample_rate
    end_s = max(max(line.cue_end for line in timed), max(line.speech_end for line in timed)) + 1.5
    track = np.zeros(math.ceil(end_s * sr), dtype=np.float32)
    voiced: list[list[np.ndarray]] = [[] for _ in scenes]
    for number, line in enumerate(timed):
        scene = scenes[line.scene]
        clip = line.audio
        if scene.rt60_s is not None:
            clip = audio_effects.reverberate(clip, sr, rt60=scene.rt60_s, rng=rng)
        clip = np.asarray(clip, dtype=np.float32)
        peak = float(np.max(np.abs(clip))) if len(clip) else 0.0
        if peak > 0.95:
            clip = clip * np.float32(0.95 / peak)
        voiced[line.scene].append(clip[: int((line.speech_end - line.speech_start) * sr) + 1])
        start = round(line.speech_start * sr)
        stop = min(len(track), start + len(clip))
        track[start:stop] += clip[: stop - start]
        if hook is not None:
            hook("mix", completed=number + 1, total=len(timed))
    spans = _scene_spans(timed, len(scenes))
    for scene_index, scene in enumerate(scenes):
        if scene.bed is None or scene.snr_db is None:
            continue
        # The bed runs a little before and after the scene's voices, never into its neighbours.
        begin_s, end_s = spans[scene_index]
        if scene_index:
            begin_s = max(begin_s - 0.8, 0.5 * (spans[scene_index - 1][1] + begin_s))
        if scene_index + 1 < len(scenes):
            end_s = min(end_s + 0.8, 0.5 * (end_s + spans[scene_index + 1][0]))
        first, last = max(0, int(begin_s * sr)), min(len(track), int(end_s * sr))
        length = last - first
        if scene.bed == "music":
            bed = audio_effects.music_bed(length, sr, rng)
        else:
            bed = audio_effects.pink_noise(length, rng)
        bed = np.asarray(bed, dtype=np.float32)
        speech_rms = math.sqrt(audio_effects.active_power(np.concatenate(voiced[scene_index])))
        bed *= np.float32(speech_rms / max(_rms(bed), 1e-9) / 10 ** (scene.snr_db / 20))
        fade = min(length // 2, int(0.3 * sr))
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            bed[:fade] *= ramp
            bed[-fade:] *= ramp[::-1]
        track[first:last] += bed
    peak = float(np.max(np.abs(track))) if len(track) else 0.0
    if peak > 0.98:
        track *= np.float32(0.98 / peak)
    return np.round(track * 32767).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# Pictures


@dataclass(frozen=True)
class _Shot:
    """What the camera shows from ``start`` until the next shot, and when mouths move."""

    start: float
    background: Background | None
    placements: tuple[Placement, ...]
    talker: int | None = None
    """Index in ``placements`` of the character whose mouth moves; None when nobody talks."""
    speech: tuple[tuple[float, float], ...] = ()


def _plan_shots(
    spec: EpisodeSpec,
    cast: Sequence[Character],
    scenes: Sequence[Scene],
    timed: Sequence[_TimedLine],
    rng: np.random.Generator,
) -> list[_Shot]:
    """A title card, then per scene an establishing wide shot and one shot per line.

    The camera cuts just before a voice starts. Each character keeps one framing (medium shot
    or close-up, facing) through a scene, so consecutive lines of one speaker look continuous.
    """
    shots = [_Shot(start=0.0, background=None, placements=())]
    spans = _scene_spans(timed, len(scenes))
    for scene_index, scene in enumerate(scenes):
        members = [line for line in timed if line.scene == scene_index]
        background = Background(scene.background, scene.background_seed)
        previous_end = spans[scene_index - 1][1] if scene_index else spec.title_s
        establishing = max(previous_end + 0.05, 0.5 * (previous_end + spans[scene_index][0]))
        count = len(scene.characters)
        wide = tuple(
            Placement(cast[character].look, x=(slot + 0.5) / count, scale=0.6, facing="front")
            for slot, character in enumerate(scene.characters)
        )
        shots.append(_Shot(start=establishing, background=background, placements=wide))
        scale = {character: float(rng.choice([1.0, 1.0, 1.4])) for character in scene.characters}
        facing = {
            character: str(rng.choice(["front", "left", "right"])) for character in scene.characters
        }
        side = {character: float(rng.choice([0.3, 0.7])) for character in scene.characters}
        for number, line in enumerate(members):
            previous_speech_end = members[number - 1].speech_end if number else shots[-1].start
            cut = min(line.speech_start, max(previous_speech_end, line.speech_start - 0.15))
            cut = max(cut, shots[-1].start + 1e-3)
            speaker = line.line.character
            if line.line.framing == "single":
                placements = (
                    Placement(
                        cast[speaker].look, x=0.5, scale=scale[speaker], facing=facing[speaker]
                    ),
                )
                talker: int | None = 0
            elif line.line.framing == "two":
                partner = line.line.partner
                assert partner is not None
                x = side[speaker]
                placements = (
                    Placement(
                        cast[speaker].look, x=x, scale=0.85, facing="right" if x < 0.5 else "left"
                    ),
                    Placement(
                        cast[partner].look,
                        x=1.0 - x,
                        scale=0.85,
                        facing="left" if x < 0.5 else "right",
                    ),
                )
                talker = 0
            else:
                partner = line.line.partner
                placements = (
                    ()
                    if partner is None
                    else (Placement(cast[partner].look, x=0.5, scale=1.0, facing=facing[partner]),)
                )
                talker = None
            speech = ((line.speech_start, line.speech_end),)
            last = shots[-1]
            if (
                last.placements == placements
                and last.background == background
                and last.talker == talker
            ):
                shots[-1] = replace(last, speech=last.speech + speech)
            else:
                shots.append(
                    _Shot(
                        start=cut,
                        background=background,
                        placements=placements,
                        talker=talker,
                        speech=speech,
                    )
                )
    return shots


def _frames(
    spec: EpisodeSpec, shots: Sequence[_Shot], num_frames: int, title: str, title_seed: int
) -> Iterator[av.VideoFrame]:
    """Every video frame in order; a shot's pictures are drawn once and reused."""
    starts = [shot.start for shot in shots]
    current = -1
    pictures: dict[bool, av.VideoFrame] = {}
    for index in range(num_frames):
        t = index / spec.fps
        shot_index = max(0, bisect.bisect_right(starts, t) - 1)
        shot = shots[shot_index]
        if shot_index != current:
            current, pictures = shot_index, {}
        talking = shot.talker is not None and any(a <= t < b for a, b in shot.speech)
        mouth_open = talking and (index // 2) % 2 == 0
        if mouth_open not in pictures:
            if shot.background is None:
                image = render_title_card(spec.width, spec.height, title, title_seed)
            else:
                placements = list(shot.placements)
                if mouth_open and shot.talker is not None:
                    placements[shot.talker] = replace(placements[shot.talker], mouth_open=True)
                image = render_frame(spec.width, spec.height, shot.background, placements)
            pictures[mouth_open] = av.VideoFrame.from_image(image.convert("RGB")).reformat(
                format="yuv420p"
            )
        frame = pictures[mouth_open]
        frame.pts = index
        yield frame


def _encode_video(
    spec: EpisodeSpec,
    cast: Sequence[Character],
    scenes: Sequence[Scene],
    timed: Sequence[_TimedLine],
    pcm: np.ndarray,
    path: Path,
    rng: np.random.Generator,
    seed: int,
    episode: int,
    hook: Hook | None,
) -> None:
    """Mux H.264 pictures and AAC audio, interleaved in time, into ``path`` atomically."""
    shots = _plan_shots(spec, cast, scenes, timed, rng)
    sr = spec.sample_rate
    duration_s = len(pcm) / sr
    num_frames = math.ceil(duration_s * spec.fps)
    title = f"Episode {episode + 1}: {_episode_title(seed, episode)}"
    mux_episode(
        path,
        _frames(spec, shots, num_frames, title, seed * 1000 + episode),
        num_frames,
        pcm,
        VideoSettings(
            fps=spec.fps,
            width=spec.width,
            height=spec.height,
            crf=spec.video_crf,
            preset=spec.video_preset,
            gop=spec.fps * 5,
            audio_bitrate=spec.audio_bitrate,
            sample_rate=sr,
        ),
        hook=hook,
        report_every=spec.fps * 10,
    )


@dataclass(frozen=True)
class VideoSettings:
    """How `mux_episode` encodes: H.264 pictures and mono AAC at ``sample_rate``."""

    fps: int
    width: int
    height: int
    crf: int
    preset: str
    audio_bitrate: int
    sample_rate: int
    gop: int | None = None
    """Frames between keyframes; None leaves the encoder's default."""


def mux_episode(
    path: Path,
    frames: Iterable[av.VideoFrame],
    num_frames: int,
    pcm: np.ndarray,
    settings: VideoSettings,
    *,
    hook: Hook | None = None,
    report_every: int = 240,
) -> None:
    """Mux ``frames`` (yuv420p, pts set) and ``pcm`` ((num_samples,) int16 mono), interleaved
    in time, into ``path`` atomically; ``hook("video", ...)`` every ``report_every`` frames."""
    sr = settings.sample_rate
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    chunk = 1024
    try:
        with av.open(str(temp), mode="w") as container:
            video = container.add_stream(H264_ENCODER, rate=settings.fps)
            video.width, video.height = settings.width, settings.height
            video.pix_fmt = "yuv420p"
            if settings.gop is not None:
                video.codec_context.gop_size = settings.gop
            video.options = {"preset": settings.preset, "crf": str(settings.crf)}
            video.thread_type = "AUTO"
            audio = container.add_stream("aac", rate=sr, layout="mono")
            audio.bit_rate = settings.audio_bitrate
            # The default "twoloop" coder is twice as slow for no difference that matters here.
            audio.options = {"aac_coder": "fast"}
            audio_pts = 0
            for index, frame in enumerate(frames):
                frame_time = index / settings.fps
                while audio_pts < len(pcm) and audio_pts / sr <= frame_time:
                    container.mux(audio.encode(_audio_frame(pcm, audio_pts, chunk, sr)))
                    audio_pts += chunk
                container.mux(video.encode(frame))
                if hook is not None and (index % report_every == 0 or index == num_frames - 1):
                    hook("video", completed=index + 1, total=num_frames)
            while audio_pts < len(pcm):
                container.mux(audio.encode(_audio_frame(pcm, audio_pts, chunk, sr)))
                audio_pts += chunk
            container.mux(video.encode(None))
            container.mux(audio.encode(None))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _audio_frame(pcm: np.ndarray, start: int, size: int, sample_rate: int) -> av.AudioFrame:
    samples = pcm[start : start + size]
    frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = start
    return frame


def _episode_title(seed: int, episode: int) -> str:
    rng = np.random.default_rng([seed, episode, 99])
    first = ("The", "A", "Our", "That")
    middle = ("Lost", "Quiet", "Last", "Secret", "Broken", "Shining", "Strange", "Final")
    last = ("Festival", "Promise", "Summer", "Letter", "Station", "Storm", "Song", "Lantern")
    return " ".join(str(rng.choice(words)) for words in (first, middle, last))


# ---------------------------------------------------------------------------------------------
# Subtitles and truth


def _subtitle_text(timed: Sequence[_TimedLine], subtitle_format: str, spec: EpisodeSpec) -> str:
    subs = pysubs2.SSAFile()
    if subtitle_format == "ass":
        subs.info["Title"] = "Synthetic episode"
        subs.info["PlayResX"] = str(spec.width)
        subs.info["PlayResY"] = str(spec.height)
    for line in timed:
        subs.append(
            pysubs2.SSAEvent(
                start=round(line.cue_start * 1000),
                end=round(line.cue_end * 1000),
                text=line.line.text,
                style="Default",
            )
        )
    return subs.to_string(subtitle_format)


def line_conditions(line: ScriptLine, scene: Scene, character: Character) -> list[str]:
    """The conditions recorded for a line in truth.csv, ``["clean"]`` when there are none."""
    found = []
    if scene.bed is not None:
        found.append(f"{scene.bed}_{scene.snr_db}db")
    if scene.rt60_s is not None:
        found.append("reverb")
    flags = (
        ("one_word", line.one_word),
        ("cut_by_next", line.cut_by_next),
        ("offscreen", line.framing == "offscreen"),
        ("two_on_screen", line.framing == "two"),
        ("jitter", line.jitter),
        ("shout", line.shout),
        ("whisper", line.whisper),
        ("shared_voice", character.shared_voice),
    )
    found.extend(name for name, present in flags if present)
    return found or ["clean"]


def _truth_csv(
    timed: Sequence[_TimedLine], cast: Sequence[Character], scenes: Sequence[Scene]
) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRUTH_COLUMNS)
    for index, line in enumerate(timed, start=1):
        character = cast[line.line.character]
        conditions = line_conditions(line.line, scenes[line.scene], character)
        writer.writerow(
            [
                index,
                f"{line.cue_start:.3f}",
                f"{line.cue_end:.3f}",
                character.speaker,
                character.name,
                ";".join(conditions),
            ]
        )
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.make_episode", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--preset", default="tiny", help=f"one of {', '.join(PRESETS)} (default tiny)"
    )
    parser.add_argument(
        "--spec", type=Path, help="a JSON spec (as in spec.json's 'spec') instead of a preset"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--format", choices=("srt", "ass"), default="srt", help="subtitle format")
    parser.add_argument(
        "--no-mbrola",
        action="store_true",
        help="licence-clean voices only (flite, festival, espeak-ng)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.spec is not None:
        try:
            spec: str | dict[str, Any] = json.loads(args.spec.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            print(f"error: cannot read spec {args.spec}: {error}", file=sys.stderr)
            return 2
    else:
        spec = args.preset
    began = time.monotonic()
    try:
        resolved = resolve_spec(spec)
        if resolved.episodes > 1:
            written = make_season(
                resolved,
                seed=args.seed,
                out_dir=args.out,
                subtitle_format=args.format,
                allow_mbrola=not args.no_mbrola,
            )
        else:
            written = [
                make_episode(
                    resolved,
                    seed=args.seed,
                    out_dir=args.out,
                    subtitle_format=args.format,
                    allow_mbrola=not args.no_mbrola,
                )
            ]
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for files in written:
        print(
            f"{files.folder}: {files.lines} lines, {files.duration_s / 60:.1f} min, "
            f"audio sha256 {files.audio_sha256[:12]}"
        )
    print(f"done in {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
