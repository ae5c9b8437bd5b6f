"""The grouping's input: every line of one or more episodes, with its features, in memory.

`EpisodeLines` holds them; `concatenate` joins episodes (a season) so that one clustering can
span them and name recurring characters alike; `select` takes a subset. Reading them from an
imported episode folder is `ml_backend.episode_lines.load_lines`: the grouping core reads no
file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

QUALITY_KEYS = ("duration", "speech_ratio", "snr_db", "rms_dbfs")


class MixedEmbeddersError(ValueError):
    """The episodes given together were embedded with different models."""


@dataclass(frozen=True)
class EpisodeLines:
    """Lines in cue order, episodes concatenated.

    voice : (n, dv) float32, L2-normalised rows; a zero row where the line has no voice vector.
    image : (n, di) float32, L2-normalised rows (zero where missing), or None without an image
        model.
    quality : name -> (n,) float32; NaN where unknown.
    """

    line_ids: list[str]
    episodes: list[str]
    starts: np.ndarray
    ends: np.ndarray
    texts: list[str]
    voice: np.ndarray
    image: np.ndarray | None
    quality: dict[str, np.ndarray]
    voice_model: str
    image_model: str | None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.line_ids)
        for name, value in (("episodes", self.episodes), ("texts", self.texts)):
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} lines")
        if self.voice.ndim != 2 or len(self.voice) != n:
            raise ValueError(f"voice has shape {self.voice.shape}, expected ({n}, dim)")
        if self.image is not None and (self.image.ndim != 2 or len(self.image) != n):
            raise ValueError(f"image has shape {self.image.shape}, expected ({n}, dim)")
        if len(set(self.line_ids)) != n:
            raise ValueError("the same line id appears twice")
        object.__setattr__(self, "_index", {line_id: i for i, line_id in enumerate(self.line_ids)})

    def __len__(self) -> int:
        return len(self.line_ids)

    def __contains__(self, line_id: object) -> bool:
        return line_id in self._index

    def index_of(self, line_id: str) -> int:
        """Position of a line; raises KeyError naming the id."""
        return self._index[line_id]

    def positions(self, line_ids: Sequence[str]) -> np.ndarray:
        """(len(line_ids),) int positions of the ids that are present (unknown ids skipped)."""
        return np.array([self._index[i] for i in line_ids if i in self._index], dtype=np.int64)

    @property
    def has_voice(self) -> np.ndarray:
        """(n,) bool: the line has a voice vector."""
        return np.abs(self.voice).sum(axis=1) > 0

    @property
    def has_image(self) -> np.ndarray:
        if self.image is None:
            return np.zeros(len(self), dtype=bool)
        return np.abs(self.image).sum(axis=1) > 0


def concatenate(parts: Sequence[EpisodeLines]) -> EpisodeLines:
    """Join line sets embedded with the same models, in the order given."""
    first = parts[0]
    for part in parts[1:]:
        if part.voice_model != first.voice_model or part.image_model != first.image_model:
            raise MixedEmbeddersError(
                f"episodes embedded with different models: voice {first.voice_model!r} vs "
                f"{part.voice_model!r}, image {first.image_model!r} vs {part.image_model!r}"
            )
    if len(parts) == 1:
        return first
    keys = list(dict.fromkeys(key for part in parts for key in part.quality))
    return EpisodeLines(
        line_ids=[i for part in parts for i in part.line_ids],
        episodes=[e for part in parts for e in part.episodes],
        starts=np.concatenate([part.starts for part in parts]),
        ends=np.concatenate([part.ends for part in parts]),
        texts=[t for part in parts for t in part.texts],
        voice=np.concatenate([part.voice for part in parts]),
        image=None if first.image is None else np.concatenate([part.image for part in parts]),
        quality={
            key: np.concatenate(
                [part.quality.get(key, np.full(len(part), np.nan, np.float32)) for part in parts]
            )
            for key in keys
        },
        voice_model=first.voice_model,
        image_model=first.image_model,
    )


def select(lines: EpisodeLines, indices: Sequence[int] | np.ndarray) -> EpisodeLines:
    """The lines at ``indices`` (positions or a boolean mask), in that order."""
    index = np.asarray(indices)
    if index.dtype == bool:
        index = np.flatnonzero(index)
    index = index.astype(np.int64)
    return EpisodeLines(
        line_ids=[lines.line_ids[i] for i in index],
        episodes=[lines.episodes[i] for i in index],
        starts=lines.starts[index],
        ends=lines.ends[index],
        texts=[lines.texts[i] for i in index],
        voice=lines.voice[index],
        image=None if lines.image is None else lines.image[index],
        quality={key: value[index] for key, value in lines.quality.items()},
        voice_model=lines.voice_model,
        image_model=lines.image_model,
    )
