"""The feature models of a run, built once: the embedders and the quality meter, and what one
folder's extraction did.

`FeatureExtractor` brings an imported folder's ``features.npz`` up to date from its files
(`extract`), or hands the models to an import as its sink (`feed`), so that the features are
computed from the clips and frames in memory. `ml_backend.features.prepare.prepare_episode`
runs it after (or during) an import; ``speaker-grouping features`` runs it on folders.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from foundation.layout import features_path

if TYPE_CHECKING:
    from foundation.hook import Hook
    from ml_backend.features.base import Embedder
    from ml_backend.features.feed import FeatureFeed, FeedResult
    from ml_backend.features.quality import QualityMeter

logger = logging.getLogger(__name__)

COMPUTED_STEPS = ("quality", "voice", "image")
"""Progress steps that mean real work; ``hash`` is reported on every run."""


@dataclass
class ExtractionReport:
    """What one folder's extraction did: lines per step that were computed, not cached."""

    folder: Path
    store_path: Path
    lines: int
    computed: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        if not any(self.computed.values()):
            return f"{self.folder}: {self.lines} lines, features up to date in {self.store_path}"
        work = ", ".join(f"{step} {self.computed.get(step, 0)}" for step in COMPUTED_STEPS)
        return f"{self.folder}: {self.lines} lines; computed {work} → {self.store_path}"


class _CountingHook:
    """Passes progress on and remembers each step's total: what was actually computed."""

    def __init__(self, hook: Hook | None) -> None:
        self._hook = hook
        self._lock = threading.Lock()  # ``quality`` is reported from a worker thread
        self.totals: dict[str, int] = {}

    def __call__(self, step: str, *, completed: int, total: int) -> None:
        with self._lock:
            self.totals[step] = total
        if self._hook is not None:
            self._hook(step, completed=completed, total=total)


@dataclass
class FeatureExtractor:
    """The embedders and quality meter of a run, built once and shared by every folder."""

    voice: Embedder | None
    image: Embedder | None
    quality: QualityMeter
    _loading: threading.Thread | None = None
    _loading_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, voice_model: str | None, image_model: str | None) -> FeatureExtractor:
        """Raises ValueError (unknown name) or `ModelUnavailableError` in one line.

        Names are checked here, before any work; the models themselves load on first use.
        """
        from ml_backend.features.embedder import image_embedder, voice_embedder
        from ml_backend.features.quality import QualityMeter

        voice = voice_embedder(voice_model)
        image = image_embedder(image_model)
        return cls(voice=voice, image=image, quality=QualityMeter())

    def start_loading(self) -> None:
        """Load the models on a background thread, so that their load (seconds: torch,
        resemblyzer, silero-vad) overlaps work the caller does meanwhile, such as cutting media.
        A model that fails to load fails again, with its message, in `extract`. Safe to call
        from several threads (progress hooks are) and more than once."""
        with self._loading_lock:
            if self._loading is None:
                self._loading = threading.Thread(target=self._load, name="load-models", daemon=True)
                self._loading.start()

    def _load(self) -> None:
        import numpy as np

        try:
            self.quality.load()
            if self.voice is not None:  # the protocol has no load(): one tiny clip loads it
                self.voice.embed([np.zeros(1600, dtype=np.float32)])
            if self.image is not None:  # a few frames: anime-colour starts its workers for 8
                self.image.embed([np.zeros((64, 64, 3), dtype=np.uint8)] * 8)
        except Exception as error:  # reported by extract(), which loads on the caller's thread
            logger.debug("loading models ahead failed: %s", error)

    def wait_loaded(self) -> None:
        """Wait for `start_loading`'s thread, if one was started."""
        if self._loading is not None:
            self._loading.join()

    def extract(
        self,
        folder: Path,
        *,
        batch_size: int = 32,
        hook: Hook | None = None,
        store_path: Path | None = None,
    ) -> ExtractionReport:
        """Bring an imported folder's features up to date from its files on disk.

        store_path : where the store lives (default ``<folder>/features.npz``); the backend
            keeps the features of a folder it may not write to in a cache folder of its own.
        """
        from ml_backend.features.extract import extract_features

        self.wait_loaded()
        counting = _CountingHook(hook)
        store_path = features_path(folder) if store_path is None else store_path
        store = extract_features(
            folder,
            voice_embedder=self.voice,
            image_embedder=self.image,
            quality_meter=self.quality,
            store_path=store_path,
            batch_size=batch_size,
            hook=counting,
        )
        computed = {step: counting.totals.get(step, 0) for step in COMPUTED_STEPS}
        return ExtractionReport(folder, store_path, len(store.line_ids), computed)

    def feed(
        self,
        *,
        batch_size: int = 32,
        hook: Hook | None = None,
        during_media: Collection[str] | None = None,
    ) -> FeatureFeed:
        """A `FeatureFeed` for one episode's import, to pass to `import_episode` as its sink:
        the models start loading when the import's inputs turn out good, and each kind's
        worker waits for them before its first batch. during_media: see `FeatureFeed`."""
        from ml_backend.features.feed import FeatureFeed

        return FeatureFeed(
            voice_embedder=self.voice,
            image_embedder=self.image,
            quality_meter=self.quality,
            batch_size=batch_size,
            hook=hook,
            on_begin=self.start_loading,
            models_ready=self.wait_loaded,
            during_media=during_media,
        )

    @staticmethod
    def report(folder: Path, result: FeedResult) -> ExtractionReport:
        """The `ExtractionReport` of a feed's result, as `extract` gives for a folder."""
        return ExtractionReport(
            folder, result.store_path, len(result.store.line_ids), dict(result.computed)
        )

    def close(self) -> None:
        """Stop worker processes the embedders keep (anime-colour's detector pool)."""
        if self._loading is not None:
            self._loading.join()
        for embedder in (self.voice, self.image):
            close = getattr(embedder, "close", None)
            if close is not None:
                close()
