"""Compute an episode's features from its clips and frames while the importer is still cutting.

`extract_features` works on a finished import: it reads every WAV and JPEG back from disk,
hashes them, decodes them again and only then embeds, after the frame walk is over. During
an import the same bytes are already in memory, and the voice encoder, the VAD and the image
workers can run while the video is still being decoded. `FeatureFeed` is that path: the
importer hands it each clip and frame (it implements `importers.sink.MediaSink` by shape,
so neither package imports the other), it queues them into batches for one worker thread
per kind, and `finish` writes ``features.npz``.

Which kinds run *during* the frame walk is `DURING_MEDIA`: by default only the image embedder,
whose anime-colour descriptors are computed in worker processes. The voice encoder and the VAD
run in this process, and their Python work (resemblyzer's per-window VAD, the partial windows,
the per-clip stats) contends for the GIL with the frame walks' per-packet Python loop: running
them beside the walk made the import slower and costlier than queueing their clips in memory
and starting them the moment the last frame is in (bench/README.md, "Features during the
media pass").

What it writes is what `extract_features` would write from the same folder: the same rows
and the same source hashes (SHA-1 of the WAV bytes, and `frames_hash` of the JPEG bytes),
so a later ``speaker-grouping features`` run finds everything up to date. To that end:

- voice and quality see the clip as the WAV stores it (16-bit), not the float slice; the
  queue holds the WAV bytes (half the float samples' size: the voice encoder may lag the
  cutting by most of the episode) and decodes them with `decode_wav`, as from a file;
- the image embedder sees the JPEG, not the frame before encoding: the stored source is the
  JPEG's hash, and a recomputation can only ever see the JPEG, so a vector made from the
  raw frame would differ from its own recomputation (by JPEG's loss);
- voice batches are the same consecutive runs of ``batch_size`` lines (clips arrive in line
  order), since a batched encoder's rows may depend on their batch mates to float rounding.
  Image batches follow the frames' arrival; anime-colour's rows do not depend on batch mates;
- lines already in the store with the same source hash and model are not computed again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foundation.hook import Hook
from foundation.layout import features_path
from ml_backend.features.base import Embedder
from ml_backend.features.extract import (
    decode_wav,
    drop_if_model_changed,
    embed_frames,
    frames_hash,
    open_store,
)
from ml_backend.features.quality import QualityMeter
from ml_backend.features.store import FeatureStore

logger = logging.getLogger(__name__)

KINDS = ("quality", "voice", "image")
DURING_MEDIA: tuple[str, ...] = ("image",)
"""Kinds computed while the frame walk runs; the others start once every frame is in."""
QUALITY_BATCH = 64
"""Clips per VAD call at least, as `extract_features` measures them."""


class FeedError(RuntimeError):
    """The feed was used out of order or lost media: a bug in its caller, not bad input."""


@dataclass
class FeedResult:
    """What `FeatureFeed.finish` did."""

    store: FeatureStore
    store_path: Path
    computed: dict[str, int] = field(default_factory=dict)
    """Lines per kind that were computed (not found up to date in the store)."""
    written: bool = False


@dataclass
class _Pending:
    """A batch being filled: line ids, items (clips or encoded frames) and source hashes."""

    ids: list[str] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)

    def take(self) -> tuple[list[str], list[Any], list[str]]:
        batch = (self.ids, self.items, self.hashes)
        self.ids, self.items, self.hashes = [], [], []
        return batch


class FeatureFeed:
    """Receives an import's clips and frames in memory and embeds them as they come.

    voice_embedder, image_embedder : None skips that kind (a stored column is kept).
    quality_meter : defaults to a `QualityMeter`.
    batch_size : clips (voice), or frames (image, whole lines), per encoder call.
    hook : steps ``quality``, ``voice``, ``image``, from worker threads, one call at a time;
        ``total`` is the lines that still need the step (it shrinks as lines turn out to be
        up to date in the store).
    on_begin : called by `begin`, when the inputs are known to be good (e.g. start loading
        the models on a thread of its own).
    models_ready : called by each worker before its first batch (e.g. wait for that load).
    during_media : kinds computed while the media are still being cut (default
        `DURING_MEDIA`); the others wait until every frame is in, their inputs queued.

    One feed serves one episode: `begin`, then `clip`/`frame` for every line, then `finish`
    (or `abort` when the import failed). An embedder's error is raised by the next `clip` or
    `frame` call, which stops the import, or else by `finish`; nothing is written then.
    """

    def __init__(
        self,
        *,
        voice_embedder: Embedder | None,
        image_embedder: Embedder | None,
        quality_meter: QualityMeter | None = None,
        batch_size: int = 32,
        hook: Hook | None = None,
        on_begin: Callable[[], None] | None = None,
        models_ready: Callable[[], None] | None = None,
        during_media: Collection[str] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        during_media = DURING_MEDIA if during_media is None else tuple(during_media)
        unknown = sorted(set(during_media) - set(KINDS))
        if unknown:
            raise ValueError(f"during_media: unknown kind(s) {unknown}; expected some of {KINDS}")
        self.during_media = frozenset(during_media)
        self.voice_embedder = voice_embedder
        self.image_embedder = image_embedder
        self.quality_meter = quality_meter or QualityMeter()
        self.batch_size = batch_size
        self._hook = hook
        self._on_begin = on_begin
        self._models_ready = models_ready
        self._lock = threading.Lock()  # state shared by the audio thread and the JPEG threads
        self._hook_lock = threading.Lock()
        self._ready_lock = threading.Lock()
        self._ready = False
        self._failure: BaseException | None = None
        self._begun = self._ended = self._aborted = False
        self._frames_in = threading.Event()  # every frame has arrived (or the feed ended)

    # ------------------------------------------------------------------ MediaSink

    def begin(self, episode_dir: Path, line_ids: Mapping[int, str], frames_per_line: int) -> None:
        """Open the episode's store and start one worker per kind that has a model."""
        if self._begun:
            raise FeedError("a FeatureFeed serves one episode; make a new one")
        self._begun = True
        self.episode_dir = Path(episode_dir)
        self.store_path = features_path(self.episode_dir)
        self._ids = dict(line_ids)
        # Rows go into the store in line order, as extract_features adds them from tasks.json.
        self._position = {self._ids[index]: row for row, index in enumerate(sorted(self._ids))}
        self._frames_per_line = frames_per_line
        self.store, self._changed = open_store(self.store_path)
        self._changed |= bool(self.store.retain(self._ids.values()))
        self._models = {
            "quality": self.quality_meter.info,
            "voice": self.voice_embedder.info if self.voice_embedder is not None else None,
            "image": self.image_embedder.info if self.image_embedder is not None else None,
        }
        self._active = tuple(kind for kind in KINDS if self._models[kind] is not None)
        for kind in self._active:
            drop_if_model_changed(self.store, kind, self._models[kind])
        self._sizes = {
            "quality": max(self.batch_size, QUALITY_BATCH),
            "voice": self.batch_size,
            "image": max(1, self.batch_size // frames_per_line),
        }
        self._pending = {kind: _Pending() for kind in self._active}
        self._jobs: dict[str, list[Future]] = {kind: [] for kind in self._active}
        self._needed = {kind: len(self._ids) for kind in self._active}
        self._computed = dict.fromkeys(self._active, 0)
        self._audio_seen: set[str] = set()
        self._frames: dict[str, list[bytes | None]] = {}
        self._frames_done: set[str] = set()
        self._workers = {
            kind: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"feed-{kind}")
            for kind in self._active
        }
        # The TorchScript VAD and a torch voice encoder must not share the cores' torch
        # threads at once (`QualityMeter.uses_torch_threads`); decided once the VAD is loaded.
        self._torch_lock = threading.Lock()
        if self._on_begin is not None:
            self._on_begin()

    def clip(self, index: int, samples: np.ndarray, wav: bytes) -> None:
        """Queue line ``index``'s clip for quality and voice unless the store is up to date.

        The WAV bytes are queued, not ``samples``: they are half the size, and decoding them
        is what `extract_features` does with the file."""
        self._check_open()
        line_id = self._ids[index]
        digest = hashlib.sha1(wav).hexdigest()
        with self._lock:
            self._audio_seen.add(line_id)
            for kind in ("quality", "voice"):
                if kind in self._active:
                    self._offer(kind, line_id, wav, digest)

    def frame(self, index: int, position: int, rgb: np.ndarray, jpeg: bytes) -> None:
        """Keep the frame's JPEG; once all of line ``index``'s frames are in, queue the line."""
        self._check_open()
        line_id = self._ids[index]
        with self._lock:
            parts = self._frames.setdefault(line_id, [None] * self._frames_per_line)
            parts[position] = jpeg
            if any(part is None for part in parts):
                return
            del self._frames[line_id]
            self._frames_done.add(line_id)
            if len(self._frames_done) == len(self._ids):
                self._frames_in.set()
            if "image" in self._active:
                encoded = [part for part in parts if part is not None]
                self._offer("image", line_id, encoded, frames_hash(encoded))

    # ------------------------------------------------------------------ ending

    def finish(self) -> FeedResult:
        """Embed what is still queued, wait for every batch, and write the store (atomically,
        and only when something changed). Raises the first embedder error instead."""
        self._check_open()
        lost_audio = [i for i in self._ids.values() if i not in self._audio_seen]
        lost_frames = [i for i in self._ids.values() if i not in self._frames_done]
        if lost_audio or lost_frames:
            self.abort()
            raise FeedError(
                f"{self.episode_dir}: the import ended without the clips of "
                f"{len(lost_audio)} line(s) or the frames of {len(lost_frames)}"
            )
        self._frames_in.set()
        with self._lock:
            for kind in self._active:
                if self._pending[kind].ids:
                    self._submit(kind)
        try:
            results = {kind: [job.result() for job in self._jobs[kind]] for kind in self._active}
        except BaseException:
            self.abort()
            raise
        self._shutdown(cancel=False)
        # Kinds in the order extract_features adds them, so the files match key for key.
        order = ["voice", "image", "quality"]
        if results.get("quality") and self.quality_meter.uses_torch_threads:
            order = ["quality", "voice", "image"]
        for kind in order:
            if kind in self._active and results[kind]:
                self._add(kind, results[kind])
        computed = {kind: self._computed.get(kind, 0) for kind in KINDS}
        written = False
        if self._changed or any(computed.values()) or not self.store_path.exists():
            self.store.save(self.store_path)
            written = True
            logger.info("%s: features written to %s", self.episode_dir, self.store_path)
        return FeedResult(self.store, self.store_path, computed, written)

    def abort(self) -> None:
        """Drop queued work and stop the workers, writing nothing (the import failed)."""
        self._ended = self._aborted = True
        self._frames_in.set()  # workers waiting for the frames give up instead
        self._shutdown(cancel=True)

    # ------------------------------------------------------------------ inside

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure
        if not self._begun or self._ended:
            raise FeedError("FeatureFeed used before begin() or after finish()/abort()")

    def _offer(self, kind: str, line_id: str, item: Any, digest: str) -> None:
        """Queue one line for ``kind`` unless its stored row has this source; holds _lock."""
        if self.store.source(kind, line_id) == digest:
            self._needed[kind] -= 1  # up to date: the step has one line fewer to do
            return
        pending = self._pending[kind]
        pending.ids.append(line_id)
        pending.items.append(item)
        pending.hashes.append(digest)
        if len(pending.ids) >= self._sizes[kind]:
            self._submit(kind)

    def _submit(self, kind: str) -> None:
        ids, items, hashes = self._pending[kind].take()
        job = self._workers[kind].submit(self._run_batch, kind, ids, items, hashes)
        job.add_done_callback(self._note_failure)
        self._jobs[kind].append(job)

    def _note_failure(self, job: Future) -> None:
        if not job.cancelled() and job.exception() is not None and self._failure is None:
            self._failure = job.exception()

    def _run_batch(
        self, kind: str, ids: list[str], items: list[Any], hashes: list[str]
    ) -> tuple[list[str], Any, list[str]]:
        if kind not in self.during_media:
            self._frames_in.wait()
            if self._aborted:
                return ids, None, hashes  # nobody reads it
        self._wait_for_models()
        if kind in ("quality", "voice"):
            clips = [
                decode_wav(data, f"{self.episode_dir}: line {line_id}'s clip")
                for line_id, data in zip(ids, items, strict=True)
            ]
        if kind == "quality":
            with self._torch_lock if self.quality_meter.uses_torch_threads else nullcontext():
                values: Any = self.quality_meter.measure(clips)
        elif kind == "voice":
            serialise = "quality" in self._active and self.quality_meter.uses_torch_threads
            with self._torch_lock if serialise else nullcontext():
                values = self.voice_embedder.embed(clips)  # type: ignore[union-attr]
        else:
            counts = [len(frames) for frames in items]
            encoded = [data for frames in items for data in frames]
            names = [
                f"{self.episode_dir}: line {line_id}, frame {n + 1}"
                for line_id, count in zip(ids, counts, strict=True)
                for n in range(count)
            ]
            vectors = embed_frames(self.image_embedder, encoded, names)  # type: ignore[arg-type]
            values = np.split(np.asarray(vectors), np.cumsum(counts)[:-1])
        self._report(kind, len(ids))
        return ids, values, hashes

    def _wait_for_models(self) -> None:
        with self._ready_lock:
            if self._ready:
                return
            if self._models_ready is not None:
                self._models_ready()
            if "quality" in self._active:
                self.quality_meter.load()  # no-op when loaded; else here, once, not per worker
            self._ready = True

    def _report(self, kind: str, lines: int) -> None:
        with self._hook_lock:
            self._computed[kind] += lines
            if self._hook is not None:
                with self._lock:
                    total = max(self._needed[kind], self._computed[kind])
                self._hook(kind, completed=self._computed[kind], total=total)

    def _add(self, kind: str, results: list[tuple[list[str], Any, list[str]]]) -> None:
        """All of a kind's rows in one `FeatureStore.add`, in line order."""
        rows: list[tuple[int, str, Any, str]] = []
        for ids, values, hashes in results:
            if kind == "quality":
                keys = list(values)
                values = [{key: values[key][row] for key in keys} for row in range(len(ids))]
            for line_id, value, digest in zip(ids, values, hashes, strict=True):
                rows.append((self._position[line_id], line_id, value, digest))
        rows.sort(key=lambda row: row[0])
        ids = [line_id for _, line_id, _, _ in rows]
        values = [value for _, _, value, _ in rows]
        hashes = [digest for _, _, _, digest in rows]
        if kind == "voice":
            self.store.add(
                ids, voice=np.stack(values), voice_model=self._models[kind], audio_hashes=hashes
            )
        elif kind == "image":
            self.store.add(ids, image=values, image_model=self._models[kind], frame_hashes=hashes)
        else:
            keys = list(values[0])
            stats = {key: np.array([row[key] for row in values], np.float32) for key in keys}
            self.store.add(
                ids, quality=stats, quality_model=self._models[kind], audio_hashes=hashes
            )

    def _shutdown(self, *, cancel: bool) -> None:
        self._ended = True
        for worker in getattr(self, "_workers", {}).values():
            worker.shutdown(wait=True, cancel_futures=cancel)
