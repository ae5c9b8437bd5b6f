"""Compute every line's features for an imported episode folder and keep them in its store.

Reads ``<episode>/tasks.json`` (written by ``speaker-grouping import``), the clips under
``audio/`` and the frames under ``frames/``, and writes ``<episode>/features.npz``.

Re-importing must cost nothing when nothing changed, so every stored row carries the SHA-1 of
the bytes it was computed from (the clip for voice and quality, the frames for image) and the
model behind its column: a line is computed again only when its media bytes or the model
changed. A changed model recomputes its whole column, because vectors of two models cannot share
one (`MixedModelsError`).

Both cores are used: the quality stats (VAD) run on a worker thread while the voice encoder
runs on this one, when the VAD runs outside torch (see `QualityMeter.uses_torch_threads`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import wave
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from foundation.hook import Hook
from foundation.layout import episode_media_file, features_path, tasks_path
from ml_backend.features.base import Embedder
from ml_backend.features.quality import SAMPLE_RATE, QualityMeter
from ml_backend.features.store import FeatureStore, FeatureStoreError, ModelInfo

logger = logging.getLogger(__name__)


class FeatureExtractionError(ValueError):
    """An episode folder cannot be read; the message is one line naming the file."""


@dataclass(frozen=True)
class LineMediaFiles:
    """Where one task's clip and frames are on disk."""

    line_id: str
    audio: Path
    frames: tuple[Path, ...]


def extract_features(
    episode_dir: str | Path,
    *,
    voice_embedder: Embedder | None,
    image_embedder: Embedder | None,
    quality_meter: QualityMeter | None = None,
    store_path: str | Path | None = None,
    hook: Hook | None = None,
    batch_size: int = 32,
) -> FeatureStore:
    """Bring ``episode_dir``'s feature store up to date with its tasks and media, and return it.

    voice_embedder, image_embedder : None skips that kind (its stored column is kept).
    quality_meter : defaults to a `QualityMeter` with the best VAD backend available.
    store_path : defaults to ``<episode_dir>/features.npz``; written only when something changed.
    batch_size : clips or frames per encoder call.
    hook : steps ``hash``, ``quality``, ``voice``, ``image``; ``quality`` may be reported from a
    worker thread while ``voice`` is reported from the caller's.

    Lines that left the episode are dropped from the store. A store file that cannot be read
    (corrupt, another format version) is logged and rebuilt: it is a cache of what the media
    already hold.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    episode_dir = Path(episode_dir)
    store_path = Path(store_path) if store_path is not None else features_path(episode_dir)
    quality_meter = quality_meter or QualityMeter()
    lines = read_line_media(episode_dir)
    store, changed = open_store(store_path)
    changed |= bool(store.retain(line.line_id for line in lines))

    audio_hashes, frame_hashes = _hash_media(lines, hook)
    jobs = {
        "quality": _stale(store, "quality", quality_meter.info, lines, audio_hashes),
        "voice": _stale(store, "voice", _info(voice_embedder), lines, audio_hashes),
        "image": _stale(store, "image", _info(image_embedder), lines, frame_hashes),
    }
    logger.info(
        "%s: %d lines; computing quality for %d, voice for %d, image for %d",
        episode_dir,
        len(lines),
        *(len(jobs[kind]) for kind in ("quality", "voice", "image")),
    )
    if jobs["quality"]:
        quality_meter.load()  # here, not on the worker: loading resets torch's thread count
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="quality") as worker:
        quality: Future | None = None
        if jobs["quality"] and not quality_meter.uses_torch_threads:
            quality = worker.submit(_measure, quality_meter, jobs["quality"], batch_size, hook)
        elif jobs["quality"]:
            _add_quality(
                store, quality_meter, _measure(quality_meter, jobs["quality"], batch_size, hook)
            )
        if jobs["voice"]:
            _embed_voices(store, voice_embedder, jobs["voice"], batch_size, hook)
        if jobs["image"]:
            _embed_images(store, image_embedder, jobs["image"], batch_size, hook)
        if quality is not None:
            _add_quality(store, quality_meter, quality.result())
    if changed or any(jobs.values()) or not store_path.exists():
        store.save(store_path)
        logger.info("%s: features written to %s", episode_dir, store_path)
    return store


def read_line_media(episode_dir: str | Path) -> list[LineMediaFiles]:
    """Each task's line id, clip and frames, from ``tasks.json``.

    Media URLs (Label Studio local-files URLs or ``<prefix>/<episode>/audio/0001.wav``) are
    mapped back to the episode folder by their last two path parts, the layout the importer
    writes, so the folder can be moved or served from anywhere.
    """
    episode_dir = Path(episode_dir)
    tasks_file = tasks_path(episode_dir)
    try:
        tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FeatureExtractionError(f"{tasks_file}: not found; import the episode first") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FeatureExtractionError(f"{tasks_file}: unreadable ({error})") from None
    if not isinstance(tasks, list):
        raise FeatureExtractionError(f"{tasks_file}: expected a list of tasks")
    lines = []
    seen: set[str] = set()
    for number, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or not data.get("line_id") or not data.get("audio"):
            raise FeatureExtractionError(
                f"{tasks_file}: task {number} has no data.line_id or data.audio"
            )
        line_id = str(data["line_id"])
        if line_id in seen:
            raise FeatureExtractionError(f"{tasks_file}: task {number} repeats line {line_id}")
        seen.add(line_id)
        frame_urls = data.get("frames") or ([data["image"]] if data.get("image") else [])
        try:
            audio = episode_media_file(episode_dir, str(data["audio"]))
            frames = tuple(episode_media_file(episode_dir, str(url)) for url in frame_urls)
        except ValueError as error:
            raise FeatureExtractionError(f"{tasks_file}: task {number}: {error}") from None
        lines.append(LineMediaFiles(line_id=line_id, audio=audio, frames=frames))
    return lines


def open_store(path: Path) -> tuple[FeatureStore, bool]:
    """The stored features, and whether the file must be (re)written regardless."""
    if not path.exists():
        return FeatureStore(), True
    try:
        return FeatureStore.load(path), False
    except FeatureStoreError as error:
        logger.warning("%s; computing every feature again", error)
        return FeatureStore(), True


def _info(embedder: Embedder | None) -> ModelInfo | None:
    return embedder.info if embedder is not None else None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise FeatureExtractionError(f"{path}: cannot read {what} ({error.strerror})") from None


def _hash_media(
    lines: Sequence[LineMediaFiles], hook: Hook | None
) -> tuple[dict[str, str], dict[str, str]]:
    """SHA-1 of each line's clip and of its frames (in order): what the cache compares."""
    audio, frames = {}, {}
    for done, line in enumerate(lines, start=1):
        audio[line.line_id] = hashlib.sha1(_read(line.audio, "clip")).hexdigest()
        frames[line.line_id] = frames_hash([_read(path, "frame") for path in line.frames])
        if hook is not None:
            hook("hash", completed=done, total=len(lines))
    return audio, frames


def frames_hash(frames: Sequence[bytes]) -> str:
    """SHA-1 of a line's frame files' bytes, in order: the source recorded with its image row."""
    digest = hashlib.sha1()
    for data in frames:
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _stale(
    store: FeatureStore,
    kind: str,
    model: ModelInfo | None,
    lines: Sequence[LineMediaFiles],
    hashes: dict[str, str],
) -> list[LineMediaFiles]:
    """The lines whose ``kind`` must be computed: all of them after a model change."""
    if model is None:
        return []
    if kind == "image":
        lines = [line for line in lines if line.frames]
    drop_if_model_changed(store, kind, model)
    return [line for line in lines if store.source(kind, line.line_id) != hashes[line.line_id]]


def drop_if_model_changed(store: FeatureStore, kind: str, model: ModelInfo) -> None:
    """Forget ``kind``'s column when another model made it: its vectors cannot be mixed with
    ``model``'s, so every line is computed again."""
    stored = store.model(kind)
    if stored is not None and stored != model:
        logger.info("%s model changed from %s to %s: recomputing every line", kind, stored, model)
        store.drop(kind)


def _batches(lines: Sequence[LineMediaFiles], size: int) -> Iterator[list[LineMediaFiles]]:
    for start in range(0, len(lines), size):
        yield list(lines[start : start + size])


def _clips(batch: Sequence[LineMediaFiles]) -> tuple[list[np.ndarray], list[str]]:
    """The clips and the hashes of the very bytes decoded (the file may have changed since)."""
    clips, hashes = [], []
    for line in batch:
        data = _read(line.audio, "clip")
        clips.append(decode_wav(data, line.audio))
        hashes.append(hashlib.sha1(data).hexdigest())
    return clips, hashes


def decode_wav(data: bytes, path: Path | str) -> np.ndarray:
    """(num_samples,) float32 in [-1, 1] from the importer's 16 kHz mono 16-bit WAV bytes."""
    try:
        with wave.open(io.BytesIO(data)) as clip:
            layout = (clip.getframerate(), clip.getnchannels(), clip.getsampwidth())
            pcm = clip.readframes(clip.getnframes())
    except (wave.Error, EOFError) as error:
        raise FeatureExtractionError(f"{path}: not a readable WAV file ({error})") from None
    if layout != (SAMPLE_RATE, 1, 2):
        rate, channels, width = layout
        raise FeatureExtractionError(
            f"{path}: expected 16 kHz mono 16-bit WAV, got {rate} Hz, {channels} channel(s), "
            f"{8 * width}-bit"
        )
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def _measure(
    meter: QualityMeter, lines: Sequence[LineMediaFiles], batch_size: int, hook: Hook | None
) -> tuple[list[str], dict[str, np.ndarray], list[str]]:
    """Quality stats of ``lines``, a batch of clips at a time so memory stays bounded."""
    ids, hashes, parts = [], [], []
    for batch in _batches(lines, max(batch_size, 64)):
        clips, batch_hashes = _clips(batch)
        parts.append(meter.measure(clips))
        ids += [line.line_id for line in batch]
        hashes += batch_hashes
        if hook is not None:
            hook("quality", completed=len(ids), total=len(lines))
    stats = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return ids, stats, hashes


def _add_quality(
    store: FeatureStore, meter: QualityMeter, result: tuple[list[str], dict, list[str]]
) -> None:
    ids, stats, hashes = result
    store.add(ids, quality=stats, quality_model=meter.info, audio_hashes=hashes)


def _embed_voices(
    store: FeatureStore,
    embedder: Embedder,
    lines: Sequence[LineMediaFiles],
    batch_size: int,
    hook: Hook | None,
) -> None:
    done = 0
    for batch in _batches(lines, batch_size):
        clips, hashes = _clips(batch)
        vectors = embedder.embed(clips)
        store.add(
            [line.line_id for line in batch],
            voice=vectors,
            voice_model=embedder.info,
            audio_hashes=hashes,
        )
        done += len(batch)
        if hook is not None:
            hook("voice", completed=done, total=len(lines))


def _embed_images(
    store: FeatureStore,
    embedder: Embedder,
    lines: Sequence[LineMediaFiles],
    batch_size: int,
    hook: Hook | None,
) -> None:
    """Frames of whole lines go through the encoder together, ``batch_size`` frames or so."""
    done = 0
    frames_per_line = max(len(line.frames) for line in lines)
    for batch in _batches(lines, max(1, batch_size // frames_per_line)):
        encoded, paths, counts, hashes = [], [], [], []
        for line in batch:
            data = [_read(path, "frame") for path in line.frames]
            encoded += data
            paths += line.frames
            counts.append(len(data))
            hashes.append(frames_hash(data))
        vectors = embed_frames(embedder, encoded, paths)
        per_line = np.split(np.asarray(vectors), np.cumsum(counts)[:-1])
        store.add(
            [line.line_id for line in batch],
            image=per_line,
            image_model=embedder.info,
            frame_hashes=hashes,
        )
        done += len(batch)
        if hook is not None:
            hook("image", completed=done, total=len(lines))


def embed_frames(
    embedder: Embedder, encoded: list[bytes], paths: Sequence[Path | str]
) -> np.ndarray:
    """(len(encoded), dim) rows of encoded frames; ``paths`` name them in error messages.

    Embedders that decode files themselves (anime-colour decodes in its workers, at the scale
    it needs) get the bytes; the others get decoded frames."""
    embed_encoded = getattr(embedder, "embed_encoded", None)
    if embed_encoded is None:
        return embedder.embed(
            [decode_frame(data, path) for data, path in zip(encoded, paths, strict=True)]
        )
    from ml_backend.features.image import UnreadableImageError

    try:
        return embed_encoded(encoded)
    except UnreadableImageError as error:
        raise FeatureExtractionError(
            f"{paths[error.index]}: not a readable image ({error.reason})"
        ) from None


def decode_frame(data: bytes, path: Path | str) -> np.ndarray:
    """(h, w, 3) uint8 RGB."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            return np.asarray(picture.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise FeatureExtractionError(f"{path}: not a readable image ({error})") from None
