"""Reading the grouping's input from disk: each imported episode folder's ``tasks.json`` (cue
order, text, times) joined with its ``features.npz`` (vectors and quality stats) into
`EpisodeLines`.

It lives above the grouping core, which works on lines in memory only; the backend, the
``group`` command and the benchmarks read episodes through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml_backend.features.episode_files import read_episode_files
from ml_backend.features.store import FeatureStore
from ml_backend.grouping.lines import QUALITY_KEYS, EpisodeLines, MixedEmbeddersError, concatenate

__all__ = ["MixedEmbeddersError", "load_lines"]


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
    episode = read_episode_files(folder)
    rows, store, store_path = episode.rows, episode.store, episode.store_path
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
