"""Per-episode feature store: every line's vectors and quality stats in one ``.npz`` file.

The backend looks features up by ``line_id`` (docs/architecture.md §3), and an import of a 450-line
episode must not pay for the encoders twice, so each episode keeps one file,
``<episode>/features.npz``, holding:

- per kind (``voice``, ``image``, ``quality``): an ``(n, dim)`` float32 array (NaN rows where a
  line has none), a ``present`` mask, and the content hash of what each row was computed from,
  so a re-import can tell which lines changed;
- every frame's image vector beside the per-line mean, for lines with several frames;
- the name, version and dimension of the model behind each kind, in a JSON string.

The file holds only numeric and unicode arrays and is read with ``allow_pickle=False``: a feature
file may come from anywhere (a shared project folder, a download) and must never run code.
Vectors of different models live in different spaces, so a column never mixes them
(`MixedModelsError`); changing model means dropping the column and computing it again.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundation.atomic import atomic_write_bytes

FORMAT_NAME = "speaker-grouping-features"
FORMAT_VERSION = 1
KINDS = ("voice", "image", "quality")


class FeatureStoreError(ValueError):
    """A feature file is unreadable or not ours; the message is one line naming the file."""


class MixedModelsError(ValueError):
    """Vectors of one model were offered to a column that holds another model's vectors."""


@dataclass(frozen=True)
class ModelInfo:
    """Identity of the model that produced a column of vectors.

    Vectors from different models (or versions, or sizes) live in different spaces, so the store
    refuses to mix them in one column; this triple is what it compares.
    """

    name: str
    version: str
    dim: int

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.dim}-d)"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelInfo:
        info = cls(str(values["name"]), str(values["version"]), int(values["dim"]))
        if info.dim < 1:
            raise ValueError(f"model dimension must be positive, got {info.dim}")
        return info


class FeatureStore:
    """Features of one episode's lines, keyed by line id.

    Build one empty, `add` rows, `save`; or `load` one. Lookups (`voice`, `image`, `quality`)
    return rows in the order of the ids asked for and raise `KeyError` when a line has none;
    ask `missing` first to find the lines that need computing.
    """

    def __init__(self) -> None:
        self._lines: dict[str, None] = {}
        self._models: dict[str, ModelInfo] = {}
        self._rows: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in KINDS}
        self._sources: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self._frames: dict[str, np.ndarray] = {}
        self._quality_keys: tuple[str, ...] = ()

    # ------------------------------------------------------------------ reading

    @property
    def line_ids(self) -> list[str]:
        """Every line with at least one stored feature, in the order they were first added."""
        return list(self._lines)

    @property
    def models(self) -> dict[str, ModelInfo]:
        """The model behind each kind that has a column."""
        return dict(self._models)

    @property
    def quality_keys(self) -> tuple[str, ...]:
        return self._quality_keys

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, line_id: object) -> bool:
        return line_id in self._lines

    def voice(self, line_ids: Sequence[str]) -> np.ndarray:
        """(len(line_ids), voice dim) float32."""
        return self._stack("voice", line_ids)

    def image(self, line_ids: Sequence[str]) -> np.ndarray:
        """(len(line_ids), image dim) float32: each line's frames averaged, then L2-normalised."""
        return self._stack("image", line_ids)

    def image_frames(self, line_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every frame vector of the lines: ((num_frames, image dim) float32, (num_frames,) int).

        The second array gives each frame's position in ``line_ids``.
        """
        self._require("image", line_ids)
        dim = self._models["image"].dim
        frames = [self._frames[line_id] for line_id in line_ids]
        owners = [np.full(len(rows), position) for position, rows in enumerate(frames)]
        if not frames:
            return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
        return np.concatenate(frames).astype(np.float32), np.concatenate(owners).astype(np.int64)

    def quality(self, line_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Each quality stat as a (len(line_ids),) float32 array."""
        table = self._stack("quality", line_ids)
        return {key: table[:, column].copy() for column, key in enumerate(self._quality_keys)}

    def missing(self, line_ids: Iterable[str], kind: str) -> list[str]:
        """The ids, in the order given, that have no stored ``kind`` feature."""
        rows = self._rows[_check_kind(kind)]
        return [line_id for line_id in line_ids if line_id not in rows]

    def source(self, kind: str, line_id: str) -> str | None:
        """Content hash of what the line's ``kind`` feature was computed from, if one was given."""
        return self._sources[_check_kind(kind)].get(line_id) or None

    def model(self, kind: str) -> ModelInfo | None:
        return self._models.get(_check_kind(kind))

    def _require(self, kind: str, line_ids: Sequence[str]) -> None:
        absent = self.missing(line_ids, kind)
        if absent:
            shown = ", ".join(absent[:3]) + (
                f" and {len(absent) - 3} more" if len(absent) > 3 else ""
            )
            raise KeyError(f"no {kind} features for line(s) {shown}")

    def _stack(self, kind: str, line_ids: Sequence[str]) -> np.ndarray:
        self._require(kind, line_ids)
        model = self._models.get(kind)
        if not line_ids or model is None:
            return np.zeros((0, model.dim if model else 0), np.float32)
        rows = self._rows[kind]
        return np.stack([rows[line_id] for line_id in line_ids]).astype(np.float32)

    # ------------------------------------------------------------------ writing

    def add(
        self,
        line_ids: Sequence[str],
        *,
        voice: np.ndarray | None = None,
        voice_model: ModelInfo | None = None,
        image: np.ndarray | Sequence[np.ndarray] | None = None,
        image_model: ModelInfo | None = None,
        quality: Mapping[str, Sequence[float]] | None = None,
        quality_model: ModelInfo | None = None,
        audio_hashes: Sequence[str] | None = None,
        frame_hashes: Sequence[str] | None = None,
    ) -> None:
        """Set or replace the given kinds for ``line_ids``; other kinds and lines are kept.

        voice : (n, dim) vectors.
        image : (n, dim), one frame per line; or n arrays of (frames, dim), several per line.
        quality : stat name -> (n,) values; the names must match the column's.
        audio_hashes, frame_hashes : (n,) content hashes of each line's clip and frames, recorded
            with the voice and quality rows (audio) and the image rows (frames), so that a later
            import can skip unchanged lines. Rows added without one count as changed.

        Everything is checked before anything changes: a refused call leaves the store as it was.
        Raises `MixedModelsError` when a model differs from the one already in its column.
        """
        line_ids = [str(line_id) for line_id in line_ids]
        if len(set(line_ids)) != len(line_ids):
            raise ValueError("add() was given the same line id twice")
        n = len(line_ids)
        updates: list[tuple[str, ModelInfo, np.ndarray, Sequence[str] | None]] = []
        frames: list[np.ndarray] | None = None
        quality_keys = self._quality_keys
        if voice is not None:
            model = _check_model("voice", voice_model, self._models.get("voice"))
            updates.append(("voice", model, _as_matrix("voice", voice, n, model), audio_hashes))
        if image is not None:
            model = _check_model("image", image_model, self._models.get("image"))
            frames = _as_frames(image, n, model)
            means = np.stack([_unit(rows.mean(axis=0)) for rows in frames]) if n else None
            updates.append(("image", model, _as_matrix("image", means, n, model), frame_hashes))
        if quality is not None:
            model = _check_model("quality", quality_model, self._models.get("quality"))
            quality_keys, table = _quality_table(quality, n, model, self._quality_keys)
            updates.append(("quality", model, table, audio_hashes))
        for name, hashes in (("audio_hashes", audio_hashes), ("frame_hashes", frame_hashes)):
            if hashes is not None and len(hashes) != n:
                raise ValueError(f"{name} has {len(hashes)} entries for {n} lines")

        for line_id in line_ids:
            self._lines.setdefault(line_id, None)
        for kind, model, table, hashes in updates:
            self._models[kind] = model
            for row, line_id in enumerate(line_ids):
                self._rows[kind][line_id] = table[row]
                self._sources[kind][line_id] = str(hashes[row]) if hashes is not None else ""
        if frames is not None:
            self._frames.update(zip(line_ids, frames, strict=True))
        self._quality_keys = quality_keys

    def drop(self, kind: str) -> None:
        """Forget a whole column, e.g. before recomputing it with a new model."""
        kind = _check_kind(kind)
        self._models.pop(kind, None)
        self._rows[kind].clear()
        self._sources[kind].clear()
        if kind == "image":
            self._frames.clear()
        if kind == "quality":
            self._quality_keys = ()
        self._forget_empty_lines()

    def retain(self, line_ids: Iterable[str]) -> list[str]:
        """Keep only ``line_ids`` (lines no longer in the episode go); returns the ids removed."""
        keep = set(line_ids)
        removed = [line_id for line_id in self._lines if line_id not in keep]
        for line_id in removed:
            del self._lines[line_id]
            for kind in KINDS:
                self._rows[kind].pop(line_id, None)
                self._sources[kind].pop(line_id, None)
            self._frames.pop(line_id, None)
        return removed

    def _forget_empty_lines(self) -> None:
        empty = [
            line_id for line_id in self._lines if not any(line_id in self._rows[k] for k in KINDS)
        ]
        for line_id in empty:
            del self._lines[line_id]

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        """Write to ``path`` atomically: readers see the old file or the new one, never half."""
        atomic_write_bytes(path, self.to_bytes())

    def to_bytes(self) -> bytes:
        ids = list(self._lines)
        arrays: dict[str, np.ndarray] = {"line_ids": np.array(ids, dtype=np.str_)}
        for kind, model in self._models.items():
            rows, sources = self._rows[kind], self._sources[kind]
            table = np.full((len(ids), model.dim), np.nan, dtype=np.float32)
            present = np.zeros(len(ids), dtype=bool)
            for position, line_id in enumerate(ids):
                if line_id in rows:
                    table[position] = rows[line_id]
                    present[position] = True
            arrays[kind] = table
            arrays[f"{kind}_present"] = present
            arrays[f"{kind}_source"] = np.array([sources.get(i, "") for i in ids], dtype=np.str_)
        if "image" in self._models:
            with_frames = [(p, i) for p, i in enumerate(ids) if i in self._frames]
            dim = self._models["image"].dim
            arrays["image_frames"] = (
                np.concatenate([self._frames[i] for _, i in with_frames]).astype(np.float32)
                if with_frames
                else np.zeros((0, dim), np.float32)
            )
            arrays["image_frame_rows"] = np.array(
                [p for p, i in with_frames for _ in range(len(self._frames[i]))], dtype=np.int64
            )
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "models": {kind: asdict(model) for kind, model in self._models.items()},
            "quality_keys": list(self._quality_keys),
        }
        arrays["meta"] = np.array([json.dumps(meta)], dtype=np.str_)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | Path) -> FeatureStore:
        """Read a store written by `save`.

        Raises `FeatureStoreError` (one line naming the file) for anything else: a corrupt or
        truncated file, a pickle, an ``.npz`` of other arrays, or another format version. Never
        unpickles.
        """
        path = Path(path)
        try:
            with path.open("rb") as stream:
                magic = stream.read(6)
            if magic[:4] != b"PK\x03\x04":  # np.load would try anything else as a pickle
                raise _Invalid(_not_a_zip(magic))
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            return cls._from_arrays(arrays)
        except FileNotFoundError:
            raise FeatureStoreError(f"{path}: feature store not found") from None
        except _Invalid as error:
            raise FeatureStoreError(f"{path}: not a readable feature store: {error}") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            if "pickle" in reason:  # numpy's message invites loading it unsafely; we never do
                reason = "it holds pickled data, which is never loaded"
            raise FeatureStoreError(f"{path}: not a readable feature store ({reason})") from None

    @classmethod
    def _from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FeatureStore:
        if "meta" not in arrays or "line_ids" not in arrays:
            raise _Invalid("no 'meta' or 'line_ids' array, so it was not written by this program")
        meta = _read_meta(arrays["meta"])
        ids = arrays["line_ids"]
        if ids.ndim != 1 or ids.dtype.kind != "U":
            raise _Invalid("'line_ids' is not a list of strings")
        ids = [str(line_id) for line_id in ids]
        if len(set(ids)) != len(ids):
            raise _Invalid("'line_ids' repeats a line")
        store = cls()
        store._lines = dict.fromkeys(ids)
        store._quality_keys = tuple(str(key) for key in meta.get("quality_keys", ()))
        for kind, values in meta.get("models", {}).items():
            if kind not in KINDS:
                raise _Invalid(f"unknown feature kind {kind!r}")
            model = ModelInfo.from_dict(values)
            table = _array(arrays, kind, (len(ids), model.dim), "f")
            present = _array(arrays, f"{kind}_present", (len(ids),), "b")
            sources = _array(arrays, f"{kind}_source", (len(ids),), "U")
            if not np.isfinite(table[present]).all():
                raise _Invalid(f"'{kind}' has non-finite values in rows marked present")
            store._models[kind] = model
            for position in np.flatnonzero(present):
                store._rows[kind][ids[position]] = table[position].astype(np.float32)
                store._sources[kind][ids[position]] = str(sources[position])
        if "quality" in store._models and len(store._quality_keys) != store._models["quality"].dim:
            raise _Invalid("the quality stat names do not match the quality column")
        if "image" in store._models:
            dim = store._models["image"].dim
            frames = _array(arrays, "image_frames", (None, dim), "f")
            owners = _array(arrays, "image_frame_rows", (len(frames),), "i")
            if len(owners) and (owners.min() < 0 or owners.max() >= len(ids)):
                raise _Invalid("'image_frame_rows' points outside 'line_ids'")
            for position in np.unique(owners):
                store._frames[ids[position]] = frames[owners == position].astype(np.float32)
        store._forget_empty_lines()
        return store


class _Invalid(Exception):
    """Internal: why a file is not a valid store (turned into a `FeatureStoreError`)."""


def _not_a_zip(magic: bytes) -> str:
    if magic.startswith(b"\x93NUMPY"):
        return "a single .npy array, not an .npz archive"
    if magic.startswith(b"\x80"):
        return "a pickle, which is never loaded"
    return "not an .npz (zip) archive"


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def _check_model(kind: str, model: ModelInfo | None, current: ModelInfo | None) -> ModelInfo:
    if not isinstance(model, ModelInfo):
        raise ValueError(f"{kind} features need {kind}_model=ModelInfo(name, version, dim)")
    if current is not None and model != current:
        raise MixedModelsError(
            f"refusing to mix {kind} features of {model} into a column of {current}: "
            f"drop the {kind} column and recompute it for every line"
        )
    return model


def _as_matrix(kind: str, values: Any, n: int, model: ModelInfo) -> np.ndarray:
    table = np.zeros((0, model.dim), np.float32) if values is None else np.asarray(values)
    if table.shape != (n, model.dim):
        raise ValueError(
            f"{kind} features have shape {table.shape}, expected ({n}, {model.dim}) for "
            f"{n} lines of {model}"
        )
    if not np.isfinite(table).all():
        raise ValueError(f"{kind} features contain NaN or infinite values")
    return table.astype(np.float32)


def _as_frames(image: Any, n: int, model: ModelInfo) -> list[np.ndarray]:
    if isinstance(image, np.ndarray) and image.ndim == 2:
        per_line = [image[i : i + 1] for i in range(len(image))]
    else:
        per_line = [np.atleast_2d(np.asarray(rows)) for rows in image]
    if len(per_line) != n:
        raise ValueError(f"image features are given for {len(per_line)} lines, expected {n}")
    for position, rows in enumerate(per_line):
        if rows.ndim != 2 or rows.shape[1] != model.dim or len(rows) == 0:
            raise ValueError(
                f"image features of line {position} have shape {rows.shape}, "
                f"expected (frames, {model.dim}) for {model}"
            )
        if not np.isfinite(rows).all():
            raise ValueError(f"image features of line {position} contain NaN or infinite values")
    return [rows.astype(np.float32) for rows in per_line]


def _unit(vector: np.ndarray) -> np.ndarray:
    """The mean of unit vectors is shorter than 1; cosine similarity wants it back on the sphere."""
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _quality_table(
    quality: Mapping[str, Sequence[float]], n: int, model: ModelInfo, current: tuple[str, ...]
) -> tuple[tuple[str, ...], np.ndarray]:
    keys = tuple(str(key) for key in quality)
    if current and keys != current:
        raise MixedModelsError(
            f"quality stats {list(keys)} differ from the stored {list(current)}: "
            "drop the quality column and recompute it"
        )
    if len(keys) != model.dim:
        raise ValueError(f"{len(keys)} quality stats given, but {model} has dimension {model.dim}")
    columns = [np.asarray(quality[key], dtype=np.float64).reshape(-1) for key in keys]
    for key, column in zip(keys, columns, strict=True):
        if len(column) != n:
            raise ValueError(f"quality stat {key!r} has {len(column)} values for {n} lines")
    table = np.stack(columns, axis=1) if keys else np.zeros((n, 0))
    return keys, _as_matrix("quality", table, n, model)


def _read_meta(meta: np.ndarray) -> dict[str, Any]:
    if meta.shape != (1,) or meta.dtype.kind != "U":
        raise _Invalid("'meta' is not one JSON string")
    try:
        values = json.loads(str(meta[0]))
    except json.JSONDecodeError as error:
        raise _Invalid(f"'meta' is not JSON ({error})") from None
    if not isinstance(values, dict) or values.get("format") != FORMAT_NAME:
        raise _Invalid(f"'meta' does not name the {FORMAT_NAME} format")
    if values.get("version") != FORMAT_VERSION:
        raise _Invalid(
            f"format version {values.get('version')!r}, but this program reads version "
            f"{FORMAT_VERSION}"
        )
    return values


def _array(
    arrays: Mapping[str, np.ndarray], name: str, shape: tuple[int | None, ...], kind: str
) -> np.ndarray:
    if name not in arrays:
        raise _Invalid(f"array '{name}' is missing")
    array = arrays[name]
    expected_kinds = {"f": "f", "b": "b", "U": "U", "i": "iu"}[kind]
    fits = len(array.shape) == len(shape) and all(
        want is None or want == got for want, got in zip(shape, array.shape, strict=True)
    )
    if not fits or array.dtype.kind not in expected_kinds:
        raise _Invalid(f"array '{name}' is {array.dtype} {array.shape}, expected shape {shape}")
    return array
