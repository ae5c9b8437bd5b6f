"""The episode folder's layout, line ids and media URLs: one definition of each.

Every layer names the same files (docs/architecture.md §3), builds and splits the same line
ids, and turns the same task media URLs back into files. Written once here, a change of any of
them is one edit, not a search through the tree.

- **Episode folder** (what ``speaker-grouping import`` writes): ``tasks.json`` (one Label
  Studio task per line), ``report.json`` and ``report.txt`` (what the import did),
  ``audio/NNNN.wav`` and ``frames/NNNN.jpg`` (the media of line NNNN) and, after
  ``speaker-grouping features``, ``features.npz``.
- **Line id**: ``<episode_id>:<index>``, index the 1-based dialogue line number.
- **Media URL**: Label Studio serves local files as ``/data/local-files/?d=<path under its
  document root>``; `media_url_path` is the one parser of such URLs, and `file_under_roots`
  the one confinement check of the path it gives (no ``..``, no symlink out of a root).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, unquote, urlsplit

TASKS_FILE = "tasks.json"
"""One Label Studio task per line (``importers.tasks``), a JSON list."""
FEATURES_FILE = "features.npz"
"""The per-line vectors and quality stats (``ml_backend.features.store``)."""
REPORT_FILE = "report.json"
"""What the import did, machine-readable: tracks chosen, lines kept and dropped, the sources."""
REPORT_TEXT_FILE = "report.txt"
"""The same report for a person."""
AUDIO_DIR = "audio"
"""``audio/NNNN.wav``: a line's 16 kHz mono clip."""
FRAMES_DIR = "frames"
"""``frames/NNNN.jpg`` (or ``NNNN_k.jpg`` with several frames a line): a line's frames."""

LINE_ID_SEPARATOR = ":"
LOCAL_FILES_PATH = "/data/local-files/"
"""The path of Label Studio's local-files view; the file is the ``d`` query parameter."""
LOCAL_FILES_PREFIX = LOCAL_FILES_PATH + "?d="


# --------------------------------------------------------------------------- the episode folder


def tasks_path(episode_dir: str | Path) -> Path:
    return Path(episode_dir) / TASKS_FILE


def features_path(episode_dir: str | Path) -> Path:
    return Path(episode_dir) / FEATURES_FILE


def report_path(episode_dir: str | Path) -> Path:
    return Path(episode_dir) / REPORT_FILE


def report_text_path(episode_dir: str | Path) -> Path:
    return Path(episode_dir) / REPORT_TEXT_FILE


def is_imported(folder: str | Path) -> bool:
    """Whether ``folder`` is an imported episode (it holds ``tasks.json``)."""
    return tasks_path(folder).is_file()


def is_grouping_ready(folder: str | Path) -> bool:
    """Whether ``folder`` holds both files the grouping reads: ``tasks.json`` and features."""
    return tasks_path(folder).is_file() and features_path(folder).is_file()


def clip_file(stem: str) -> PurePosixPath:
    """``audio/<stem>.wav``, relative to the episode folder."""
    return PurePosixPath(AUDIO_DIR) / f"{stem}.wav"


def frame_file(stem: str, suffix: str = ".jpg") -> PurePosixPath:
    """``frames/<stem><suffix>``, relative to the episode folder."""
    return PurePosixPath(FRAMES_DIR) / f"{stem}{suffix}"


# --------------------------------------------------------------------------- line ids


def make_line_id(episode_id: str, index: int) -> str:
    """``<episode_id>:<index>``: the id every layer keys a line by."""
    return f"{episode_id}{LINE_ID_SEPARATOR}{index}"


def split_line_id(line_id: str) -> tuple[str, str]:
    """``(episode, index text)`` of ``<episode>:<index>``, split at the last ``:``.

    The episode is ``""`` when there is no ``:``; the index text is not checked (see
    `line_index` for the number).
    """
    episode, _, index = line_id.rpartition(LINE_ID_SEPARATOR)
    return episode, index


def line_episode(line_id: str) -> str:
    """The episode part of a line id (``""`` when it has no ``:``)."""
    return split_line_id(line_id)[0]


def line_index(line_id: str) -> int:
    """The line number at the end of a line id; ValueError naming the id when there is none."""
    episode, index = split_line_id(line_id)
    try:
        if not episode:
            raise ValueError
        return int(index)
    except ValueError:
        raise ValueError(
            f"line id {line_id[:80]!r} is not '<episode>{LINE_ID_SEPARATOR}<index>'"
        ) from None


# --------------------------------------------------------------------------- media URLs


def local_files_url(relative: str | PurePosixPath) -> str:
    """The local-files URL of a file at ``relative`` (POSIX) under the document root."""
    return LOCAL_FILES_PREFIX + quote(PurePosixPath(relative).as_posix())


def is_local_files_url(url: str) -> bool:
    """Whether ``url``'s path is Label Studio's local-files view."""
    path = urlsplit(url).path
    return path.endswith(LOCAL_FILES_PATH) or path.endswith(LOCAL_FILES_PATH.rstrip("/"))


def media_url_path(url: str) -> tuple[str, bool]:
    """``(path, local)``: the file path a media URL names, and whether it is a local-files URL.

    A local-files URL gives its ``d`` parameter, a path relative to the document root; any
    other URL gives its unquoted path. Raises ValueError (one line naming the URL) for a
    local-files URL without ``d`` or a path with a NUL byte, which no file can have.
    """
    if "\x00" in url:
        raise ValueError(f"media URL {url[:80]!r} contains a NUL byte")
    parts = urlsplit(url)
    if is_local_files_url(url):
        values = parse_qs(parts.query).get("d")
        if not values:
            raise ValueError(f"local-files URL {url!r} has no ?d= path")
        path = values[0]
    else:
        path = unquote(parts.path)
    if "\x00" in path:
        raise ValueError(f"media URL {url[:80]!r} contains a NUL byte (%00); refused")
    return path, is_local_files_url(url)


def lexically_under(path: Path, root: Path) -> bool:
    """Whether ``path`` lies under ``root`` as written or as resolved, before any file check."""
    return path.is_relative_to(Path(os.path.abspath(root))) or path.is_relative_to(root.resolve())


def file_under_root(root: Path, relative_parts: tuple[str, ...] | list[str]) -> Path | None:
    """``root/relative_parts`` resolved, when it is a file strictly inside ``root``, else None.

    Parts with ``..`` or none at all give None: a URL must never lead out of its root, neither
    by ``..`` nor by a symlink.
    """
    if not relative_parts or ".." in relative_parts:
        return None
    root = root.resolve()
    path = root.joinpath(*relative_parts).resolve()
    if path.is_relative_to(root) and path.is_file():
        return path
    return None


def episode_media_file(episode_dir: Path, url: str) -> Path:
    """Where a task's media file of this episode lies inside the episode folder itself.

    The importer writes ``<episode>/audio/NNNN.wav`` and ``<episode>/frames/NNNN.jpg``, so the
    last two parts of the URL's path are the file inside ``episode_dir``, wherever the folder
    was served from.
    """
    path, _ = media_url_path(url)
    parts = Path(path).parts
    return episode_dir.joinpath(*parts[-2:]) if len(parts) >= 2 else episode_dir / path
