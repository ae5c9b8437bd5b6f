"""Label Studio tasks for an imported episode: one task per spoken line.

The task is the contract between the importer, Label Studio and the ML backend
(docs/architecture.md §3): the backend finds a line's stored features by ``line_id``, so the id
must be stable across re-imports of the same file, and the media URLs must be ones Label Studio
can serve.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from foundation.layout import LOCAL_FILES_PREFIX, local_files_url, make_line_id  # noqa: F401
from importers.subtitles import SubtitleLine

_HASHED_BYTES = 1 << 20


def episode_id_for(video: str | Path) -> str:
    """A slug of the file name plus a short content hash.

    The slug keeps ids readable in Label Studio; the hash keeps two different files called
    ``ep01.mkv`` apart. Only the size and the first and last MiB are hashed, so an id costs
    milliseconds even for a 2 GB episode and survives the file being moved or renamed.
    """
    path = Path(video)
    size = path.stat().st_size
    digest = hashlib.sha1(str(size).encode())
    with path.open("rb") as stream:
        digest.update(stream.read(_HASHED_BYTES))
        if size > _HASHED_BYTES:
            stream.seek(max(size - _HASHED_BYTES, _HASHED_BYTES))
            digest.update(stream.read(_HASHED_BYTES))
    return f"{slugify(path.stem)}-{digest.hexdigest()[:8]}"


def slugify(name: str, *, max_length: int = 40) -> str:
    """ASCII letters, digits and dashes only: the id ends up in URLs, paths and CSV cells."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_name).strip("-").lower()
    return slug[:max_length].strip("-") or "episode"


@dataclass(frozen=True)
class MediaUrls:
    """How task media are addressed.

    Label Studio serves local files only below its document root, as
    ``/data/local-files/?d=<path relative to the root>``; a web server or bucket in front of
    the media is addressed with a plain prefix instead.
    """

    document_root: Path | None = None
    url_prefix: str | None = None

    def __post_init__(self) -> None:
        if (self.document_root is None) == (self.url_prefix is None):
            raise ValueError("give exactly one of document_root and url_prefix")

    def url_for(self, path: Path) -> str:
        if self.url_prefix is not None:
            base = self.url_prefix.rstrip("/")
            return f"{base}/{quote(path.as_posix())}"
        root = self.document_root.resolve()  # type: ignore[union-attr]
        absolute = path.resolve()
        if not absolute.is_relative_to(root):
            raise ValueError(f"{absolute}: media file is outside the document root {root}")
        return local_files_url(absolute.relative_to(root).as_posix())


@dataclass(frozen=True)
class LineMedia:
    """The files cut for one line; paths are relative to the import's output folder."""

    audio: Path
    frames: tuple[Path, ...]


def build_task(
    episode_id: str,
    line: SubtitleLine,
    media: LineMedia,
    *,
    out_dir: Path,
    urls: MediaUrls,
    extra_data: Mapping[str, Any] | None = None,
) -> dict:
    """One Label Studio import task; ``image`` is the midpoint frame, ``frames`` all of them.

    extra_data : episode-wide fields added to ``data``, e.g. the ``audio_track`` cut from.
    """
    frame_urls = [_url(urls, out_dir, frame) for frame in media.frames]
    task = {
        "data": {
            "line_id": make_line_id(episode_id, line.index),
            "episode": episode_id,
            "index": line.index,
            "start": round(line.start, 3),
            "end": round(line.end, 3),
            "text": line.text,
            "audio": _url(urls, out_dir, media.audio),
            "image": frame_urls[len(frame_urls) // 2],
            "frames": frame_urls,
            "flags": sorted(line.flags),
            "style": line.style,
            "actor": line.actor,
            "source_line": line.source_line,
            "time": f"{_clock(line.start)} → {_clock(line.end)}",
        }
    }
    task["data"].update(extra_data or {})
    return task


def build_tasks(
    episode_id: str,
    lines: Sequence[SubtitleLine],
    media: Sequence[LineMedia],
    *,
    out_dir: Path,
    urls: MediaUrls,
    extra_data: Mapping[str, Any] | None = None,
) -> list[dict]:
    return [
        build_task(episode_id, line, line_media, out_dir=out_dir, urls=urls, extra_data=extra_data)
        for line, line_media in zip(lines, media, strict=True)
    ]


def _url(urls: MediaUrls, out_dir: Path, relative: Path) -> str:
    if urls.url_prefix is not None:
        return urls.url_for(relative)
    return urls.url_for(out_dir / relative)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:d}:{minutes:02d}:{rest:06.3f}"
