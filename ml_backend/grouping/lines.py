"""The grouping's input: every line of one or more imported episodes, with its features.

`load_lines` joins each episode folder's ``tasks.json`` (cue order, text, times) with its
``features.npz`` (vectors and quality stats). Several folders (a season) are concatenated in the
order given, so that one clustering can span episodes and name recurring characters alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ml_backend.features.store import FeatureStore

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


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.nan_to_num(np.asarray(matrix, dtype=np.float32))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _model_name(store: FeatureStore, kind: str) -> str | None:
    info = store.model(kind)
    return None if info is None else f"{info.name} {info.version}"


def load_lines(import_dirs: Sequence[Path | str]) -> EpisodeLines:
    """Read ``tasks.json`` + ``features.npz`` of each imported episode folder.

    Raises FileNotFoundError for a folder without them, `MixedEmbeddersError` when the folders'
    voice or image models differ, and ValueError when no folder has voice features.
    """
    parts = [_load_one(Path(folder)) for folder in import_dirs]
    if not parts:
        raise ValueError("load_lines() needs at least one episode folder")
    return concatenate(parts)


def _load_one(folder: Path) -> EpisodeLines:
    tasks_path, store_path = folder / "tasks.json", folder / "features.npz"
    for path in (tasks_path, store_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (import the episode and extract features)")
    tasks = json.loads(tasks_path.read_text(encoding="utf-8"))
    rows = [task.get("data", task) for task in tasks]
    rows.sort(key=lambda data: (str(data["episode"]), int(data["index"])))
    store = FeatureStore.load(store_path)
    ids = [str(data["line_id"]) for data in rows]
    n = len(ids)
    voice_model = _model_name(store, "voice")
    if voice_model is None:
        raise ValueError(f"{store_path}: no voice features")
    voice = np.zeros((n, store.model("voice").dim), np.float32)
    absent = set(store.missing(ids, "voice"))
    have = [i for i, line_id in enumerate(ids) if line_id not in absent]
    if have:
        voice[have] = store.voice([ids[i] for i in have])
    image = None
    image_model = _model_name(store, "image")
    if image_model is not None:
        image = np.zeros((n, store.model("image").dim), np.float32)
        absent = set(store.missing(ids, "image"))
        have_image = [i for i, line_id in enumerate(ids) if line_id not in absent]
        if have_image:
            image[have_image] = store.image([ids[i] for i in have_image])
        image = _unit_rows(image)
    quality = {key: np.full(n, np.nan, np.float32) for key in QUALITY_KEYS}
    if store.model("quality") is not None:
        absent = set(store.missing(ids, "quality"))
        have_q = [i for i, line_id in enumerate(ids) if line_id not in absent]
        if have_q:
            values = store.quality([ids[i] for i in have_q])
            for key, column in values.items():
                quality.setdefault(key, np.full(n, np.nan, np.float32))[have_q] = column
    starts = np.array([float(d.get("start", np.nan)) for d in rows], np.float64)
    ends = np.array([float(d.get("end", np.nan)) for d in rows], np.float64)
    duration = quality["duration"]
    quality["duration"] = np.where(np.isfinite(duration), duration, ends - starts).astype(
        np.float32
    )
    return EpisodeLines(
        line_ids=ids,
        episodes=[str(d["episode"]) for d in rows],
        starts=starts,
        ends=ends,
        texts=[str(d.get("text", "")) for d in rows],
        voice=_unit_rows(voice),
        image=image,
        quality=quality,
        voice_model=voice_model,
        image_model=image_model,
    )


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
