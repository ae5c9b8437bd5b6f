"""Finding a task's media and features, safely.

A task names its media by URL. Label Studio's local-files URLs
(``/data/local-files/?d=<path under the document root>``) are read straight from disk, but only
strictly inside the configured roots: the path is resolved (symlinks followed) and refused if it
is absolute, contains ``..``, or lands outside every root. Anything else on Label Studio's own
origin is fetched over HTTP with the API key; a URL on another host is refused, because the key
must never be sent elsewhere and the backend must not become a proxy to arbitrary addresses.

Episodes are what the grouping reads (``tasks.json`` + ``features.npz``, see
docs/architecture.md §3). An imported episode folder under a root is used as it is. When it
has no features, or the media are only reachable over HTTP, the backend builds a cache folder
under ``MODEL_DIR/<project>/episodes`` with the tasks (and downloaded media), and computes the
features there with the configured embedders.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from foundation.atomic import atomic_write_bytes, atomic_write_json
from foundation.label_studio import Credentials, LabelStudioClient, LabelStudioError
from foundation.layout import (
    clip_file,
    features_path,
    frame_file,
    is_imported,
    lexically_under,
    media_url_path,
    tasks_path,
)

__all__ = [
    "Credentials",
    "EpisodeCache",
    "TaskMediaError",
    "episode_folder",
    "fetch_to",
    "local_path",
    "safe_episode_name",
]

logger = logging.getLogger(__name__)

MAX_MEDIA_BYTES = 256 * 1024 * 1024
FETCH_TIMEOUT_S = 30.0
_EPISODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


class TaskMediaError(ValueError):
    """A task's media cannot be used (a URL refused, a file missing or too big); the message is
    one line naming the task or URL. A media file that cannot be decoded is
    `importers.media.TaskMediaError`."""


def local_path(url: str, roots: Sequence[Path]) -> Path | None:
    """The file behind ``url`` strictly under one of ``roots``, or None for a remote URL.

    Raises `TaskMediaError` for a URL that names a local file the backend must not read (traversal,
    absolute path outside the roots, a symlink out of them) or that does not exist.
    """
    if not isinstance(url, str) or not url:
        raise TaskMediaError("empty media URL")
    try:
        path_text, local = media_url_path(url)
    except ValueError as error:
        raise TaskMediaError(str(error)) from None
    if local:
        return _under_roots(path_text, roots, url=url, relative=True)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return _under_roots(path_text, roots, url=url, relative=False)
    if not parts.scheme and not parts.netloc and url.startswith("/"):
        # A rooted path is a file path when it lies under a root; Label Studio's own
        # ``/data/upload/...`` and the like are fetched from it; anything else is refused.
        path = Path(os.path.normpath(path_text))
        if "?" not in url and any(lexically_under(path, root) for root in roots):
            return _under_roots(path_text, roots, url=url, relative=False)
        if url.startswith("/data/") and ".." not in PurePosixPath(path_text).parts:
            return None
        return _under_roots(path_text, roots, url=url, relative=False)
    return None


def _under_roots(path_text: str, roots: Sequence[Path], *, url: str, relative: bool) -> Path:
    if "\x00" in path_text:
        raise TaskMediaError(f"media URL {url[:80]!r} contains a NUL byte (%00); refused")
    path = PurePosixPath(path_text)
    if ".." in path.parts:
        raise TaskMediaError(f"media URL {url!r} climbs out with '..'; refused")
    if relative and path.is_absolute():
        raise TaskMediaError(
            f"media URL {url!r} gives an absolute path where a relative one belongs; refused"
        )
    if not relative and not path.is_absolute():
        raise TaskMediaError(f"media URL {url!r} is not an absolute path")
    if not roots:
        raise TaskMediaError(
            f"media URL {url!r} is a local file but no media root is configured "
            "(set LOCAL_FILES_DOCUMENT_ROOT)"
        )
    outside = True
    for root in roots:
        lexical_root = Path(os.path.abspath(root))
        root = root.resolve()
        if path.is_absolute():
            candidate = Path(path)
            if not (candidate.is_relative_to(lexical_root) or candidate.is_relative_to(root)):
                continue
        else:
            candidate = root / path
        outside = False
        try:
            resolved = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop
            raise TaskMediaError(f"media URL {url!r}: cannot resolve ({error})") from None
        if not resolved.is_relative_to(root):
            raise TaskMediaError(
                f"media URL {url!r} leads outside the media root by a symlink; refused"
            )
        if not resolved.is_file():
            raise TaskMediaError(f"media URL {url!r} is not a file")
        return resolved
    if outside:
        raise TaskMediaError(f"media URL {url!r} is outside the configured media roots; refused")
    raise TaskMediaError(f"media file of {url!r} not found under the media roots")


def episode_folder(data: Mapping[str, Any], roots: Sequence[Path]) -> Path | None:
    """The imported episode folder (with ``tasks.json``) that holds this task's audio.

    None when the audio is only reachable over HTTP, or is a local file outside the importer's
    layout (then the media are copied into a cache folder instead). The importer writes
    ``<out>/<episode>/audio/0001.wav``, so the folder is two levels above the clip.
    """
    audio = data.get("audio")
    if not isinstance(audio, str):
        raise TaskMediaError("task has no data.audio URL")
    path = local_path(audio, roots)
    if path is None:
        return None
    folder = path.parent.parent
    if not is_imported(folder):
        return None
    if not any(folder.is_relative_to(root.resolve()) for root in roots):
        return None
    return folder


def safe_episode_name(episode: str) -> str:
    if not isinstance(episode, str) or not _EPISODE_NAME.fullmatch(episode):
        raise TaskMediaError(f"episode id {str(episode)[:80]!r} is not a plain slug; refused")
    return episode


class EpisodeCache:
    """Cache folders (tasks + media + features) for episodes not usable in place.

    One per project: ``<folder>/<episode>/``. Feature extraction is serialised by a lock, since
    the embedders are loaded once and each uses every core.
    """

    def __init__(
        self,
        folder: Path,
        *,
        roots: Sequence[Path],
        credentials: Credentials,
        voice_model: str | None = None,
        image_model: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.roots = tuple(roots)
        self.credentials = credentials
        self.voice_model = voice_model
        self.image_model = image_model

    def folder_for(self, episode: str) -> Path:
        return self.folder / safe_episode_name(episode)

    def from_import(self, import_dir: Path) -> Path:
        """A cache folder with the import's tasks and freshly computed features."""
        tasks = json.loads(tasks_path(import_dir).read_text(encoding="utf-8"))
        episode = _episode_of(tasks, import_dir)
        target = self.folder_for(episode)
        if _cache_is_current(target, tasks_path(import_dir)):
            return target
        with _EXTRACT_LOCK:
            atomic_write_json(tasks_path(target), tasks)
            _extract(import_dir, features_path(target), self.voice_model, self.image_model)
        return target

    def from_tasks(self, episode: str, tasks: Iterable[Mapping[str, Any]]) -> Path:
        """A cache folder for tasks whose media are fetched (or copied) one by one.

        Tasks already in the folder are kept, so the cache grows as Label Studio asks about
        more of the episode. Raises `TaskMediaError` naming the first task whose media fail.
        """
        target = self.folder_for(episode)
        with _folder_lock(target):
            return self._merge_tasks(target, tasks)

    def _merge_tasks(self, target: Path, tasks: Iterable[Mapping[str, Any]]) -> Path:
        # Read, extend and write tasks.json under one lock: two predicts on the same episode
        # that each read it first would otherwise each write back only their own lines.
        known: dict[str, dict[str, Any]] = {}
        tasks_file = tasks_path(target)
        if tasks_file.is_file():
            for task in json.loads(tasks_file.read_text(encoding="utf-8")):
                known[task["data"]["line_id"]] = task
        added = 0
        for task in tasks:
            data = task.get("data") or {}
            line_id = str(data.get("line_id"))
            if line_id in known:
                continue
            index = int(data["index"])
            stem = f"{index:04d}"
            audio = self._store(str(data["audio"]), target / clip_file(stem))
            entry = dict(data)
            entry["audio"] = audio
            image_url = data.get("image")
            if isinstance(image_url, str) and image_url:
                suffix = PurePosixPath(urlsplit(image_url).path or "x.jpg").suffix.lower()
                suffix = suffix if suffix in _IMAGE_SUFFIXES else ".jpg"
                entry["image"] = self._store(image_url, target / frame_file(stem, suffix))
                entry["frames"] = [entry["image"]]
            else:
                entry.pop("image", None)
                entry["frames"] = []
            known[line_id] = {"data": entry}
            added += 1
        if added or not features_path(target).is_file():
            with _EXTRACT_LOCK:
                atomic_write_json(tasks_file, list(known.values()))
                _extract(target, features_path(target), self.voice_model, self.image_model)
        return target

    def _store(self, url: str, destination: Path) -> str:
        """Copy or fetch one medium into the cache; the relative path the cache tasks use."""
        relative = f"{destination.parent.name}/{destination.name}"
        if destination.is_file():
            return relative
        local = local_path(url, self.roots)
        if local is not None:
            if local.stat().st_size > MAX_MEDIA_BYTES:
                raise TaskMediaError(f"media {url[:120]!r} is larger than {MAX_MEDIA_BYTES} bytes")
            atomic_write_bytes(destination, local.read_bytes())
        else:
            fetch_to(url, self.credentials, destination)
        return relative


def fetch_to(
    url: str, credentials: Credentials, destination: Path, *, max_bytes: int = MAX_MEDIA_BYTES
) -> int:
    """Download ``url`` from Label Studio's own origin into ``destination``; returns the size.

    The key goes only to the configured origin: a URL on another host is refused before any
    connection, and so is a redirect off the origin (`foundation.label_studio`). The body is
    streamed to disk, so memory stays at one chunk whatever the file's size.
    """
    if not credentials.usable:
        raise TaskMediaError(
            f"media {url[:120]!r} are not local and no Label Studio URL and API key are set "
            "(LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)"
        )
    if not url.startswith("/") and not urlsplit(url).scheme:
        raise TaskMediaError(f"media URL {url[:120]!r} is neither absolute nor rooted; refused")
    try:
        with LabelStudioClient(
            str(credentials.url), str(credentials.api_key), timeout=FETCH_TIMEOUT_S
        ) as client:
            return client.download(url, destination, max_bytes=max_bytes)
    except LabelStudioError as error:
        raise TaskMediaError(f"media: {error}") from None


_FOLDER_LOCKS: dict[Path, threading.Lock] = {}
_FOLDER_LOCKS_GUARD = threading.Lock()


def _folder_lock(folder: Path) -> threading.Lock:
    """One lock per cache folder, for the whole process (several projects never share one)."""
    with _FOLDER_LOCKS_GUARD:
        return _FOLDER_LOCKS.setdefault(Path(folder), threading.Lock())


_EXTRACT_LOCK = threading.Lock()
_EMBEDDERS: dict[tuple[str, str | None], Any] = {}


def _embedder(kind: str, name: str | None) -> Any:
    """Embedders load once per process: a model load costs seconds, a request must not."""
    key = (kind, name)
    if key not in _EMBEDDERS:
        from ml_backend.features.embedder import image_embedder, voice_embedder

        _EMBEDDERS[key] = voice_embedder(name) if kind == "voice" else image_embedder(name)
    return _EMBEDDERS[key]


def _extract(episode_dir: Path, store_path: Path, voice: str | None, image: str | None) -> None:
    """The features half of `ml_backend.features.prepare.prepare_episode`: the episode was
    imported elsewhere, and only its features are made, into the backend's own cache."""
    from ml_backend.features.extractor import FeatureExtractor
    from ml_backend.features.quality import QualityMeter

    logger.info("computing features of %s into %s", episode_dir, store_path)
    extractor = FeatureExtractor(
        voice=_embedder("voice", voice), image=_embedder("image", image), quality=QualityMeter()
    )
    extractor.extract(episode_dir, store_path=store_path)


def _episode_of(tasks: Any, folder: Path) -> str:
    if isinstance(tasks, list) and tasks and isinstance(tasks[0], dict):
        episode = (tasks[0].get("data") or {}).get("episode")
        if isinstance(episode, str):
            return safe_episode_name(episode)
    raise TaskMediaError(f"{tasks_path(folder)}: no episode id in its tasks")


def _cache_is_current(target: Path, source_tasks: Path) -> bool:
    """The cache was built after the import's tasks last changed."""
    features, tasks = features_path(target), tasks_path(target)
    if not (features.is_file() and tasks.is_file()):
        return False
    return features.stat().st_mtime >= source_tasks.stat().st_mtime
