"""Real-voice benchmark episodes from Flight of the Amazon Queen, built like generated ones.

Each episode strings whole dialogue files (``*.DOG``) of the game together: every voiced
segment becomes one subtitle line, in dialogue order, with short gaps between lines and longer
ones between dialogues, a music or noise bed under some dialogues (:mod:`bench.audio_effects`),
and a picture per line drawn with :mod:`bench.drawing`: Joe and the person he talks to, both on
screen, the speaker's mouth moving (the game shows both as well, so the picture tells the scene,
not the speaker). The folder has the generated episodes' layout::

    episode.mp4   H.264 + AAC (mono) in MP4
    episode.srt   one cue per voice file, its subtitle text from the dialogue file
    truth.csv     index,start,end,speaker,character,condition
    spec.json     the game version, dialogues, and per line its voice file, text and times

``speaker`` and ``character`` are both the character as the game's dialogue files define it:
Joe for the hero's slot, the dialogue's person (:data:`CHARACTERS`) for the other. The cast
list does not say which actor voiced whom, and one actor may voice several minor characters,
so two ``character`` values may share a voice; the label to predict stays the character.

Episodes are split into training and evaluation by dialogue file, never by line
(:data:`EPISODES`); a character met in several dialogues (Sparky, Bob, Faye...) may appear on
both sides, as a recurring character does across a season. The game data comes from
``apt-get download flight-of-the-amazon-queen`` (Debian main, freeware) into ``.cache/`` and is
never committed; the audio is rebuilt at run time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pysubs2

from bench import audio_effects
from bench.drawing import Background, Placement, random_looks, render_frame
from bench.make_episode import ONE_WORD_MAX_S, TRUTH_COLUMNS, VideoSettings, mux_episode
from bench.real_voices.queen import SLOT_JOE, ResourceFile, SpeechLine, read_dialogues, speech_lines
from foundation.atomic import atomic_write_json, atomic_write_text
from foundation.hook import Hook

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "real_voices"
PACKAGE = "flight-of-the-amazon-queen"
DATA_FILE = Path("usr/share/scummvm/flight-of-the-amazon-queen/queen.1c")
HERO = "Joe"

CHARACTERS: dict[str, str] = {
    "AND1.DOG": "Anderson",
    "APE.DOG": "Ape",
    "APE2.DOG": "Ape",
    "APE3.DOG": "Ape",
    "BOB1.DOG": "Bob",
    "BOB2.DOG": "Bob",
    "BOB3.DOG": "Bob",
    "BOB4.DOG": "Bob",
    "BOB5.DOG": "Bob",
    "BUD1.DOG": "Bud",
    "BUD2.DOG": "Bud",
    "CHEF.DOG": "Chef",
    "CHIEF1.DOG": "Chief",
    "CHIEF2.DOG": "Chief",
    "CHIEF3.DOG": "Chief",
    "CHIEF4.DOG": "Chief",
    "DEATH1.DOG": "Death",
    "DEATH2.DOG": "Death",
    "DOG.DOG": "Dog",
    "FAYE2.DOG": "Faye",
    "FAYE3.DOG": "Faye",
    "FAYE4.DOG": "Faye",
    "FAYE5.DOG": "Faye",
    "FAYE6.DOG": "Faye",
    "FRANK.DOG": "Frank",
    "HENRY.DOG": "Henry",
    "HENRY2.DOG": "Henry",
    "IAN1.DOG": "Ian",
    "IAN2.DOG": "Ian",
    "JIM1.DOG": "Jim",
    "JIM2.DOG": "Jim",
    "JIM3.DOG": "Jim",
    "JOHN1.DOG": "John",
    "KLUNK1.DOG": "Klunk",
    "KLUNK2.DOG": "Klunk",
    "LARIS.DOG": "Laris",
    "LARIS3.DOG": "Laris",
    "LOLA1.DOG": "Lola",
    "LOU1.DOG": "Skip",
    "LOU2.DOG": "Skip",
    "MAN1.DOG": "Man 1",
    "MAN2.DOG": "Man 2",
    "NAOMI.DOG": "Naomi",
    "NAOMI2.DOG": "Naomi",
    "ORACLE1.DOG": "Oracle",
    "ORACLE2.DOG": "Oracle",
    "ORACLE3.DOG": "Oracle",
    "PRIN1.DOG": "Azura",
    "PRIN2.DOG": "Azura",
    "PRIN4.DOG": "Azura",
    "SEC1.DOG": "Secretary",
    "SEC2.DOG": "Secretary",
    "SHOWERAM.DOG": "Shower Amazon",
    "SPARKY1.DOG": "Sparky",
    "SPARKY2.DOG": "Sparky",
    "SPARKY3.DOG": "Sparky",
    "SPARKY4.DOG": "Sparky",
    "SPARKY5.DOG": "Sparky",
    "SPARKY6.DOG": "Sparky",
    "SPARKY7.DOG": "Sparky",
    "SPARKY8.DOG": "Sparky",
    "TALLPYG.DOG": "Tall Pygmy",
    "TAM1.DOG": "Mary-Lou",
    "TAM2.DOG": "Mary-Lou",
    "TAM3.DOG": "Mary-Lou",
    "TAM4.DOG": "Mary-Lou",
    "WEDGE.DOG": "Wedge",
    "WITCH1.DOG": "Witch Doctor",
    "WITCH2.DOG": "Witch Doctor",
    "WITCH3.DOG": "Witch Doctor",
    "WITCH4.DOG": "Witch Doctor",
    "ZOMBIE1.DOG": "Zombie",
    "ZOMBIE2.DOG": "Zombie",
}
"""The person Joe talks to in each dialogue file, named from the file and its own lines
("I'm Mike Laris the bellboy", "I'm Skip"). Files of one stem are one person; the two generic
``MAN`` files are kept apart, since nothing in them says they are one man."""


@dataclass(frozen=True)
class EpisodeDefinition:
    """Which dialogue files make one episode, and which split it belongs to."""

    split: str
    dialogues: tuple[str, ...]


EPISODES: dict[str, EpisodeDefinition] = {
    "queen-rio": EpisodeDefinition(
        "training", ("AND1.DOG", "LOLA1.DOG", "LARIS.DOG", "CHEF.DOG", "LARIS3.DOG")
    ),
    "queen-crash": EpisodeDefinition(
        "training",
        ("SPARKY1.DOG", "FAYE2.DOG", "SPARKY2.DOG", "FAYE3.DOG", "BUD1.DOG", "DOG.DOG"),
    ),
    "queen-mission": EpisodeDefinition("training", ("JIM1.DOG", "TAM1.DOG", "WEDGE.DOG")),
    "queen-village": EpisodeDefinition(
        "training", ("CHIEF1.DOG", "WITCH1.DOG", "BOB1.DOG", "TALLPYG.DOG")
    ),
    "queen-floda": EpisodeDefinition(
        "training", ("KLUNK1.DOG", "SEC1.DOG", "JOHN1.DOG", "PRIN1.DOG")
    ),
    "queen-return": EpisodeDefinition(
        "evaluation", ("JIM2.DOG", "TAM2.DOG", "BOB2.DOG", "NAOMI.DOG")
    ),
    "queen-floda2": EpisodeDefinition(
        "evaluation",
        ("KLUNK2.DOG", "SEC2.DOG", "FRANK.DOG", "PRIN2.DOG", "SHOWERAM.DOG", "HENRY2.DOG"),
    ),
    "queen-jungle": EpisodeDefinition(
        "evaluation", ("WITCH2.DOG", "CHIEF2.DOG", "SPARKY5.DOG", "FAYE4.DOG", "LOU1.DOG")
    ),
    "queen-underworld": EpisodeDefinition(
        "evaluation", ("DEATH2.DOG", "ZOMBIE1.DOG", "ORACLE2.DOG", "APE2.DOG", "IAN1.DOG")
    ),
}
"""Episodes by game area; no dialogue file is in two episodes (checked by the tests)."""


@dataclass(frozen=True)
class BuildOptions:
    """How lines are laid out, mixed and drawn (the timing and beds echo the generator's)."""

    sample_rate: int = 16000
    width: int = 320
    height: int = 180
    fps: int = 10
    gap_s: tuple[float, float] = (0.2, 0.7)
    dialogue_gap_s: tuple[float, float] = (1.5, 3.0)
    bed_share: float = 0.5
    """Share of dialogues with a music or noise bed under them."""
    snr_db: tuple[int, ...] = (5, 10, 15)
    max_lines: int | None = None
    """Cut the episode after this many lines (whole dialogues until then); None keeps all."""
    video_crf: int = 30
    audio_bitrate: int = 64000


@dataclass(frozen=True)
class RealEpisodeFiles:
    """Where a real-voice episode was written."""

    folder: Path
    video: Path
    subtitles: Path
    truth: Path
    spec: Path
    lines: int
    characters: int
    duration_s: float


@dataclass
class _Placed:
    line: SpeechLine
    character: str
    dialogue: int
    audio: np.ndarray
    speech_start: float = 0.0
    speech_end: float = 0.0
    cue_start: float = 0.0
    cue_end: float = 0.0


# ---------------------------------------------------------------------------------------------
# Game data


def game_data(cache: Path = CACHE) -> Path:
    """``queen.1c``, downloaded with ``apt-get download`` and unpacked under ``cache`` once.

    Raises RuntimeError with apt's last line when the package cannot be fetched.
    """
    root = cache / "root"
    data = root / DATA_FILE
    if data.is_file():
        return data
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{PACKAGE}_*.deb")):
        if shutil.which("apt-get") is None:
            raise RuntimeError(f"apt-get is not available to download {PACKAGE}")
        options = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root apt hands downloads to the _apt user, which cannot write into our folder.
            options = ["-o", "APT::Sandbox::User=root"]
        try:
            result = _apt_download(options, debs)
            if result.returncode != 0 and options:
                # A machine whose package lists were never fetched knows no package yet: as
                # root, fetch them once (what `make setup-system` does) and try again.
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
                result = _apt_download(options, debs)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"apt-get download {PACKAGE} timed out after 600 s") from None
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"apt-get download {PACKAGE} failed: {last}")
    deb = sorted(debs.glob(f"{PACKAGE}_*.deb"))[-1]
    result = subprocess.run(
        ["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not data.is_file():
        raise RuntimeError(f"{deb}: could not unpack {DATA_FILE} ({result.stderr.strip()})")
    return data


def _apt_download(options: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *options, "download", PACKAGE],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# Building


def episode_lines(
    resources: ResourceFile, definition: EpisodeDefinition, max_lines: int | None = None
) -> list[tuple[SpeechLine, str]]:
    """The episode's speech lines with their character, in order; whole dialogues only,
    stopping after the one that reaches ``max_lines``."""
    available = frozenset(resources.names(".SB"))
    out: list[tuple[SpeechLine, str]] = []
    for dialogue in read_dialogues(resources, definition.dialogues):
        person = CHARACTERS.get(dialogue.name)
        if person is None:
            raise ValueError(f"{resources.path}: no character named for {dialogue.name}")
        for line in speech_lines(dialogue, available):
            out.append((line, HERO if line.slot == SLOT_JOE else person))
        if max_lines is not None and len(out) >= max_lines:
            return out[:max_lines]
    return out


def build_episode(
    resources: ResourceFile,
    name: str,
    out_dir: str | Path,
    *,
    definition: EpisodeDefinition | None = None,
    options: BuildOptions | None = None,
    seed: int = 1,
    hook: Hook | None = None,
) -> RealEpisodeFiles:
    """Write the episode ``name`` of :data:`EPISODES` (or ``definition``) into ``out_dir``."""
    definition = definition or EPISODES[name]
    options = options or BuildOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)])
    chosen = episode_lines(resources, definition, options.max_lines)
    if not chosen:
        raise ValueError(f"{name}: no voiced line in {', '.join(definition.dialogues)}")
    dialogue_index = {d: i for i, d in enumerate(definition.dialogues)}
    placed = []
    for number, (line, character) in enumerate(chosen):
        audio = _trim(resources.speech(line.resource, options.sample_rate), options.sample_rate)
        placed.append(_Placed(line, character, dialogue_index[line.dialogue], audio))
        if hook is not None:
            hook("decode", completed=number + 1, total=len(chosen))
    _lay_out(placed, options, rng)
    beds = _choose_beds(len(definition.dialogues), options, rng)
    pcm = _mix(placed, beds, options, rng)
    duration_s = len(pcm) / options.sample_rate
    video = out_dir / "episode.mp4"
    _encode(placed, definition, pcm, video, options, rng, hook)
    subtitles = out_dir / "episode.srt"
    atomic_write_text(subtitles, _srt(placed))
    truth = out_dir / "truth.csv"
    atomic_write_text(truth, _truth_csv(placed, beds, options.sample_rate))
    characters = sorted({p.character for p in placed})
    spec = out_dir / "spec.json"
    atomic_write_json(
        spec,
        {
            "source": PACKAGE,
            "game_version": resources.version,
            "speech_codec": resources.codec,
            "episode": name,
            "split": definition.split,
            "seed": seed,
            "dialogues": list(definition.dialogues),
            "beds": [list(bed) if bed else None for bed in beds],
            "cast": {c: sum(p.character == c for p in placed) for c in characters},
            "lines": len(placed),
            "duration_s": round(duration_s, 3),
            "sample_rate": options.sample_rate,
            "lines_detail": [
                {
                    "index": index,
                    "resource": p.line.resource,
                    "dialogue": p.line.dialogue,
                    "character": p.character,
                    "text": p.line.text,
                    "speech_start": round(p.speech_start, 3),
                    "speech_end": round(p.speech_end, 3),
                }
                for index, p in enumerate(placed, start=1)
            ],
        },
    )
    logger.info("wrote %s: %d lines, %d characters", out_dir, len(placed), len(characters))
    return RealEpisodeFiles(
        out_dir, video, subtitles, truth, spec, len(placed), len(characters), duration_s
    )


def _trim(audio: np.ndarray, sample_rate: int, margin_s: float = 0.05) -> np.ndarray:
    """Cut the encoder's leading and trailing near-silence, keeping ``margin_s`` either side."""
    if not len(audio):
        return audio
    loud = np.flatnonzero(np.abs(audio) > 0.02 * max(float(np.max(np.abs(audio))), 1e-6))
    if not len(loud):
        return audio
    margin = int(margin_s * sample_rate)
    return audio[max(0, loud[0] - margin) : loud[-1] + margin + 1]


def _lay_out(placed: Sequence[_Placed], options: BuildOptions, rng: np.random.Generator) -> None:
    """Speech times with gaps, then cues a little around each voice, never overlapping."""
    cursor = 1.0
    for number, line in enumerate(placed):
        if number:
            same = line.dialogue == placed[number - 1].dialogue
            cursor += float(rng.uniform(*(options.gap_s if same else options.dialogue_gap_s)))
        line.speech_start = cursor
        line.speech_end = cursor + len(line.audio) / options.sample_rate
        cursor = line.speech_end
    for number, line in enumerate(placed):
        line.cue_start = max(0.0, line.speech_start - float(rng.uniform(0.05, 0.2)))
        if number:
            line.cue_start = max(line.cue_start, placed[number - 1].cue_end)
        end = line.speech_end + float(rng.uniform(0.1, 0.3))
        if number + 1 < len(placed):
            end = min(end, 0.5 * (line.speech_end + placed[number + 1].speech_start))
        line.cue_end = end


def _choose_beds(
    count: int, options: BuildOptions, rng: np.random.Generator
) -> list[tuple[str, int] | None]:
    """Per dialogue: None, or (``music``/``noise``, SNR in dB)."""
    beds: list[tuple[str, int] | None] = []
    for _ in range(count):
        if rng.random() < options.bed_share:
            beds.append((str(rng.choice(["music", "noise"])), int(rng.choice(options.snr_db))))
        else:
            beds.append(None)
    return beds


def _mix(
    placed: Sequence[_Placed],
    beds: Sequence[tuple[str, int] | None],
    options: BuildOptions,
    rng: np.random.Generator,
) -> np.ndarray:
    """(num_samples,) int16: the voices, and each dialogue's bed at its SNR under its lines."""
    sr = options.sample_rate
    track = np.zeros(int((placed[-1].speech_end + 1.0) * sr) + 1, dtype=np.float32)
    for line in placed:
        start = round(line.speech_start * sr)
        track[start : start + len(line.audio)] += line.audio
    for dialogue, bed in enumerate(beds):
        members = [p for p in placed if p.dialogue == dialogue]
        if bed is None or not members:
            continue
        kind, snr_db = bed
        first = max(0, int((members[0].speech_start - 0.5) * sr))
        last = min(len(track), int((members[-1].speech_end + 0.5) * sr))
        length = last - first
        noise = (
            audio_effects.music_bed(length, sr, rng)
            if kind == "music"
            else audio_effects.pink_noise(length, rng)
        )
        speech = np.concatenate([p.audio for p in members])
        speech_rms = math.sqrt(max(audio_effects.active_power(speech), 1e-12))
        noise = np.asarray(noise, dtype=np.float32)
        bed_rms = max(float(np.sqrt(np.mean(noise**2))), 1e-9)
        noise *= np.float32(speech_rms / bed_rms / 10 ** (snr_db / 20))
        fade = min(length // 2, int(0.3 * sr))
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            noise[:fade] *= ramp
            noise[-fade:] *= ramp[::-1]
        track[first:last] += noise
    peak = float(np.max(np.abs(track)))
    if peak > 0.98:
        track *= np.float32(0.98 / peak)
    return np.round(track * 32767).astype(np.int16)


def _encode(
    placed: Sequence[_Placed],
    definition: EpisodeDefinition,
    pcm: np.ndarray,
    path: Path,
    options: BuildOptions,
    rng: np.random.Generator,
    hook: Hook | None,
) -> None:
    """Mux H.264 pictures (Joe and the person on screen) and AAC audio into ``path``."""
    characters = sorted({p.character for p in placed})
    looks = dict(zip(characters, random_looks(len(characters), rng), strict=True))
    backgrounds = [
        Background(str(rng.choice(["room", "sky", "street", "night", "plain"])), int(seed))
        for seed in rng.integers(0, 2**31, size=len(definition.dialogues))
    ]
    partner = {}
    for p in placed:
        if p.character != HERO:
            partner.setdefault(p.dialogue, p.character)
    sr = options.sample_rate
    num_frames = math.ceil(len(pcm) / sr * options.fps)
    cache: dict[tuple[int, str | None], av.VideoFrame] = {}

    def picture(dialogue: int, talker: str | None) -> av.VideoFrame:
        key = (dialogue, talker)
        if key not in cache:
            cast = [HERO] + ([partner[dialogue]] if dialogue in partner else [])
            placements = [
                Placement(
                    looks[who],
                    x=0.3 if who == HERO else 0.7,
                    scale=0.85,
                    facing="right" if who == HERO else "left",
                    mouth_open=who == talker,
                )
                for who in cast
            ]
            image = render_frame(options.width, options.height, backgrounds[dialogue], placements)
            cache[key] = av.VideoFrame.from_image(image.convert("RGB")).reformat(format="yuv420p")
        return cache[key]

    starts = [p.speech_start for p in placed]

    def frames() -> Iterator[av.VideoFrame]:
        current = 0
        for index in range(num_frames):
            t = index / options.fps
            while current + 1 < len(placed) and starts[current + 1] <= t:
                current += 1
            line = placed[current]
            talking = line.speech_start <= t < line.speech_end and (index // 2) % 2 == 0
            frame = picture(line.dialogue, line.character if talking else None)
            frame.pts = index
            yield frame

    settings = VideoSettings(
        fps=options.fps,
        width=options.width,
        height=options.height,
        crf=options.video_crf,
        preset="ultrafast",
        audio_bitrate=options.audio_bitrate,
        sample_rate=sr,
    )
    mux_episode(path, frames(), num_frames, pcm, settings, hook=hook, report_every=600)


def _srt(placed: Sequence[_Placed]) -> str:
    subs = pysubs2.SSAFile()
    for p in placed:
        subs.append(
            pysubs2.SSAEvent(
                start=round(p.cue_start * 1000), end=round(p.cue_end * 1000), text=p.line.text
            )
        )
    return subs.to_string("srt")


def _truth_csv(
    placed: Sequence[_Placed], beds: Sequence[tuple[str, int] | None], sample_rate: int
) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRUTH_COLUMNS)
    for index, p in enumerate(placed, start=1):
        conditions = []
        bed = beds[p.dialogue]
        if bed is not None:
            conditions.append(f"{bed[0]}_{bed[1]}db")
        if len(p.audio) < ONE_WORD_MAX_S * sample_rate:
            conditions.append("one_word")
        conditions.append("two_on_screen")
        writer.writerow(
            [
                index,
                f"{p.cue_start:.3f}",
                f"{p.cue_end:.3f}",
                p.character,
                p.character,
                ";".join(conditions),
            ]
        )
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Built and imported, for the benchmarks


def built_episodes(
    split: str = "all", *, cache: Path = CACHE, names: Sequence[str] = ()
) -> Iterator[Any]:
    """Yield each episode of ``split`` as a :class:`bench.episode_cache.CachedEpisode`,
    built, imported and with default features on first use (``ready.json`` written last)."""
    from bench.episode_cache import READY, CachedEpisode
    from importers.pipeline import import_episode
    from ml_backend.features.embedder import image_embedder, voice_embedder
    from ml_backend.features.extract import extract_features
    from ml_backend.features.quality import QualityMeter

    resources: ResourceFile | None = None
    for name, definition in EPISODES.items():
        if split not in ("all", definition.split) or (names and name not in names):
            continue
        folder = cache / "episodes" / name
        if not (folder / READY).is_file():
            if resources is None:
                resources = ResourceFile(game_data(cache))
            build_episode(resources, name, folder, definition=definition)
            imported = import_episode(
                folder / "episode.mp4", subtitles=folder / "episode.srt", out_dir=folder / "import"
            )
            extract_features(
                imported.episode_dir,
                voice_embedder=voice_embedder(),
                image_embedder=image_embedder(),
                quality_meter=QualityMeter(),
            )
            atomic_write_json(
                folder / READY, {"episode_dir": str(imported.episode_dir.relative_to(folder))}
            )
        yield CachedEpisode(name=name, folder=folder)
