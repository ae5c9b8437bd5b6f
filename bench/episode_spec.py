"""What a synthetic episode should contain: cast size, length, picture size and hard conditions.

The presets are the benchmark's contract: ``tiny`` feeds the unit tests, ``standard`` is an
ordinary episode a grouping method should nearly solve, ``hard`` switches on most of what makes
real episodes difficult (music and noise beds down to 0 dB, one-word lines, lines cut off,
reverberation, off-screen speakers, sloppy fansub timing, one voice actor for two characters), and
``season`` is six standard episodes sharing a cast so that cross-episode labelling can be tested.
A spec is a frozen dataclass so a preset cannot be changed by accident, and it round-trips
through a plain dict because ``spec.json`` records the resolved spec beside every episode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

GENERATOR_VERSION = "1.0.0"
"""Bumped whenever the same seed and spec would give a different episode."""

MAX_CHARACTERS = 20
"""As many as :data:`bench.script_writer.CHARACTER_NAMES` holds."""


@dataclass(frozen=True)
class HardConditions:
    """How often each hard condition occurs; a share of 0 (or False) switches it off.

    Beds and reverberation belong to a scene (a room echoes for everyone in it, music plays
    under a whole scene); every other condition is drawn per line. Each switched-on condition
    occurs at least once when the episode has room for it, so a small episode still shows all
    of them.
    """

    bed_scene_share: float = 0.0
    """Share of scenes with a music or noise bed under the dialogue."""
    music_share: float = 0.5
    """Of the scenes with a bed, the share that get music (the rest get pink noise)."""
    snr_db: tuple[int, ...] = (10,)
    """Bed level, drawn per scene: speech-to-bed ratio in dB (0 means equal power)."""
    reverb_scene_share: float = 0.0
    rt60_s: tuple[float, float] = (0.4, 0.9)
    """Reverberation time range (seconds) for scenes with reverberation."""
    one_word_share: float = 0.0
    """Lines such as "What?!" or a name: under 0.8 s of speech."""
    cut_by_next_share: float = 0.0
    """Lines interrupted: the next line starts before this one has finished."""
    offscreen_share: float = 0.0
    """Lines whose picture shows another character, or nobody, instead of the speaker."""
    two_on_screen_share: float = 0.0
    """Lines whose picture shows the speaker beside another character."""
    jitter_share: float = 0.0
    """Cues whose start and end are moved at random, as fansub timing is."""
    jitter_max_s: float = 0.3
    shout_share: float = 0.0
    whisper_share: float = 0.0
    shared_voices: int = 0
    """How many voice actors play two characters each (same voice, other pitch and look)."""
    pitch_spread_semitones: float = 0.5
    """Standard deviation of the per-line pitch change: nobody says two lines alike."""
    tempo_spread: float = 0.05
    """Standard deviation of the per-line relative speed change."""

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_share") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{item.name} must be within [0, 1], got {value}")
        if self.shared_voices < 0:
            raise ValueError(f"shared_voices must be >= 0, got {self.shared_voices}")
        if not self.snr_db:
            raise ValueError("snr_db needs at least one value")
        if not 0 < self.rt60_s[0] <= self.rt60_s[1]:
            raise ValueError(
                f"rt60_s must be an increasing pair of positive seconds, got {self.rt60_s}"
            )


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything except the seed that decides what an episode looks and sounds like."""

    preset: str
    characters: int
    lines: int
    width: int = 640
    height: int = 360
    fps: int = 12
    sample_rate: int = 16000
    words_per_line: tuple[int, int] = (3, 14)
    scene_lines: tuple[int, int] = (6, 18)
    """Lines per scene (a scene is one place, one set of characters, one bed)."""
    gap_s: tuple[float, float] = (0.2, 1.5)
    """Silence between consecutive lines of a scene."""
    scene_gap_s: tuple[float, float] = (1.5, 3.0)
    title_s: float = 3.0
    """Title card before the first line."""
    episodes: int = 1
    """More than one makes a season: episodes sharing a cast, each with its own script."""
    video_crf: int = 28
    video_preset: str = "veryfast"
    """x264 preset: trades encoding time for file size only (the pictures are flat drawings)."""
    audio_bitrate: int = 64_000
    conditions: HardConditions = field(default_factory=HardConditions)

    def __post_init__(self) -> None:
        if not 2 <= self.characters <= MAX_CHARACTERS:
            raise ValueError(
                f"characters must be within [2, {MAX_CHARACTERS}], got {self.characters}"
            )
        if self.lines < self.characters:
            raise ValueError(
                f"lines ({self.lines}) must be at least characters ({self.characters}) "
                "so that every character speaks"
            )
        if self.width % 2 or self.height % 2:
            raise ValueError(
                f"width and height must be even for H.264, got {self.width}x{self.height}"
            )
        if self.episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {self.episodes}")
        for name in ("words_per_line", "scene_lines", "gap_s", "scene_gap_s"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(
                    f"{name} must be an increasing pair of positive numbers, got {(low, high)}"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpisodeSpec:
        """Build a spec from JSON-like data; unknown keys are an error, not silently ignored."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown episode spec keys: {', '.join(unknown)}")
        values = dict(data)
        conditions = values.pop("conditions", {})
        if isinstance(conditions, dict):
            known_conditions = {item.name for item in fields(HardConditions)}
            bad = sorted(set(conditions) - known_conditions)
            if bad:
                raise ValueError(f"unknown hard-condition keys: {', '.join(bad)}")
            conditions = HardConditions(**_tuples(conditions))
        return cls(**_tuples(values), conditions=conditions)


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; turn them back so frozen specs compare equal."""
    return {
        key: tuple(value) if isinstance(value, list) else value for key, value in values.items()
    }


TINY = EpisodeSpec(
    preset="tiny",
    characters=4,
    lines=20,
    words_per_line=(2, 8),
    scene_lines=(6, 8),
    gap_s=(0.2, 0.8),
    scene_gap_s=(1.0, 1.5),
    title_s=1.5,
    audio_bitrate=48_000,
    conditions=HardConditions(
        bed_scene_share=0.3,
        music_share=0.5,
        snr_db=(10,),
        reverb_scene_share=0.3,
        rt60_s=(0.3, 0.6),
        one_word_share=0.1,
        cut_by_next_share=0.05,
        offscreen_share=0.1,
        two_on_screen_share=0.1,
        jitter_share=0.1,
        shout_share=0.05,
        whisper_share=0.05,
    ),
)

STANDARD = EpisodeSpec(
    preset="standard",
    characters=9,
    lines=330,
    width=854,
    height=480,
    words_per_line=(3, 13),
    gap_s=(0.2, 1.2),
    conditions=HardConditions(
        bed_scene_share=0.2,
        music_share=0.6,
        snr_db=(20, 15, 10, 5),
        reverb_scene_share=0.1,
        rt60_s=(0.3, 0.6),
        one_word_share=0.04,
        cut_by_next_share=0.03,
        offscreen_share=0.1,
        two_on_screen_share=0.15,
        jitter_share=0.1,
        shout_share=0.03,
        whisper_share=0.03,
        pitch_spread_semitones=0.5,
        tempo_spread=0.05,
    ),
)

HARD = EpisodeSpec(
    preset="hard",
    characters=12,
    lines=350,
    width=854,
    height=480,
    words_per_line=(2, 11),
    conditions=HardConditions(
        bed_scene_share=0.7,
        music_share=0.5,
        snr_db=(10, 5, 0),
        reverb_scene_share=0.35,
        rt60_s=(0.5, 1.2),
        one_word_share=0.12,
        cut_by_next_share=0.12,
        offscreen_share=0.3,
        two_on_screen_share=0.25,
        jitter_share=0.5,
        shout_share=0.08,
        whisper_share=0.08,
        shared_voices=2,
        pitch_spread_semitones=2.0,
        tempo_spread=0.1,
    ),
)

SEASON = replace(STANDARD, preset="season", episodes=6)

SAMPLE = EpisodeSpec(
    preset="sample",
    characters=5,
    lines=50,
    words_per_line=(3, 12),
    scene_lines=(8, 14),
    audio_bitrate=48_000,
    conditions=HardConditions(
        bed_scene_share=0.34,
        music_share=0.5,
        snr_db=(10, 5),
        reverb_scene_share=0.2,
        rt60_s=(0.3, 0.7),
        one_word_share=0.08,
        cut_by_next_share=0.06,
        offscreen_share=0.12,
        two_on_screen_share=0.15,
        jitter_share=0.15,
        shout_share=0.06,
        whisper_share=0.04,
        pitch_spread_semitones=0.7,
        tempo_spread=0.06,
    ),
)
"""The committed ``bench/episodes/sample`` (2-3 minutes), made with licence-clean voices only."""

PRESETS: dict[str, EpisodeSpec] = {
    spec.preset: spec for spec in (TINY, STANDARD, HARD, SEASON, SAMPLE)
}


def resolve_spec(spec: str | EpisodeSpec | dict[str, Any]) -> EpisodeSpec:
    """A preset name, a spec, or a dict as written in ``spec.json``."""
    if isinstance(spec, EpisodeSpec):
        return spec
    if isinstance(spec, str):
        try:
            return PRESETS[spec]
        except KeyError:
            raise ValueError(
                f"unknown preset {spec!r}; choose one of {', '.join(PRESETS)}"
            ) from None
    if isinstance(spec, dict):
        return EpisodeSpec.from_dict(spec)
    raise TypeError(
        f"an episode spec is a preset name, an EpisodeSpec or a dict, not {type(spec).__name__}"
    )
