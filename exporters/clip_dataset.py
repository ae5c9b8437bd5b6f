"""A per-speaker clip dataset for voice and TTS training.

Layout::

    OUT/<speaker>/<episode>_<index>.wav   the importer's clip of the line, copied
    OUT/metadata.csv                      one row per clip, columns METADATA_COLUMNS

``file`` is relative to OUT with "/" separators; ``duration`` is the clip's own length in seconds
(the importer pads each line, so it is a little longer than ``end - start``). Only lines with a
speaker are exported; a line whose clip is missing is counted and left out.

Speaker names come from annotators and may be anything, so folder and file names go through
`safe_path_names`: no path separators, no "." or "..", no control characters, no Windows-reserved
names, and two different names never share a folder (not even on a case-insensitive file system).
Re-exporting into the same OUT replaces the clips the previous export listed in its
``metadata.csv`` and nothing else.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import unicodedata
import wave
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from exporters import SpeakerLine
from exporters.table import spreadsheet_safe
from foundation.atomic import atomic_write_bytes, atomic_write_text
from foundation.hook import Hook

__all__ = ["METADATA_COLUMNS", "ClipDatasetResult", "safe_path_names", "write_clip_dataset"]

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.csv"
METADATA_COLUMNS = (
    "file",
    "speaker",
    "text",
    "episode",
    "index",
    "start",
    "end",
    "duration",
    "source",
)
MAX_NAME_CHARS = 80
MAX_NAME_BYTES = 200
"""Names are cut at 80 characters and 200 UTF-8 bytes: 80 four-byte characters made a 320-byte
name, over the 255-byte file name limit, and the export stopped with an OSError. 200 leaves room
for the hash suffix and an extension."""

# Control characters (C0, DEL, C1), path separators and Windows' reserved characters, and the
# explicit bidi controls, which make a name read differently on screen than on disk (U+202E).
_UNSAFE_CHARS = re.compile(
    '[\x00-\x1f\x7f-\x9f/\\\\:*?"<>|\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]'
)
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{port}{n}" for port in ("com", "lpt") for n in range(1, 10)
}


@dataclass(frozen=True)
class ClipDatasetResult:
    metadata_path: Path
    clips_written: int
    per_speaker: dict[str, int] = field(default_factory=dict)
    missing_clips: list[str] = field(default_factory=list)  # line ids whose clip was not found


def safe_path_names(names: Iterable[str]) -> dict[str, str]:
    """A file-system-safe, distinct folder/file name for each distinct name.

    A name that is already safe and unique (case-insensitively) is kept as it is; any other gets
    its cleaned form plus 8 hex digits of a hash of the original, so "a/b" and "a:b" stay apart.
    A name's result depends on the others only when they differ from it by case alone ("Mika",
    "mika"): the first in sorted order keeps its name.
    """
    unique = sorted(set(names))
    chosen: dict[str, str] = {}
    taken: set[str] = set()
    pending: list[str] = []
    for name in unique:
        cleaned = _cleaned(name)
        if cleaned == name and cleaned.casefold() not in taken:
            chosen[name] = cleaned
            taken.add(cleaned.casefold())
        else:
            pending.append(name)
    for name in pending:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()
        candidate = f"{_cleaned(name)}-{digest[:8]}"
        extra = 8
        while candidate.casefold() in taken:  # astronomically rare; stay correct anyway
            extra += 1
            candidate = f"{_cleaned(name)}-{digest[:extra]}"
        chosen[name] = candidate
        taken.add(candidate.casefold())
    return chosen


def _cleaned(name: str) -> str:
    cleaned = unicodedata.normalize("NFC", name)
    cleaned = _UNSAFE_CHARS.sub("_", cleaned)
    cleaned = " ".join(cleaned.split())
    # Leading dots hide files and make "." and ".."; Windows drops trailing dots and spaces.
    cleaned = cleaned.strip(". ")[:MAX_NAME_CHARS]
    cleaned = cleaned.encode("utf-8", "ignore")[:MAX_NAME_BYTES].decode("utf-8", "ignore")
    cleaned = cleaned.rstrip(". ")
    if not cleaned:
        return "_"
    if cleaned.split(".")[0].casefold() in _WINDOWS_RESERVED:
        return "_" + cleaned
    return cleaned


def write_clip_dataset(
    rows: Iterable[SpeakerLine], out_dir: str | Path, *, hook: Hook | None = None
) -> ClipDatasetResult:
    """Copy each named line's clip into ``out_dir/<speaker>/`` and write ``metadata.csv``."""
    out_dir = Path(out_dir)
    named = [row for row in rows if row.speaker]
    folders = safe_path_names(row.speaker for row in named)  # type: ignore[misc]
    stems = safe_path_names(f"{row.episode}_{row.index:04d}" for row in named)
    previous = _listed_files(out_dir)

    records: list[tuple[object, ...]] = []
    written: set[str] = set()
    missing: list[str] = []
    per_speaker: Counter[str] = Counter()
    for done, row in enumerate(named, start=1):
        speaker = row.speaker or ""
        relative = f"{folders[speaker]}/{stems[f'{row.episode}_{row.index:04d}']}.wav"
        try:
            if row.clip is None:
                raise FileNotFoundError("no clip found for it")
            data = Path(row.clip).read_bytes()
        except OSError as error:
            logger.warning("%s: clip not copied (%s)", row.line_id, error.strerror or error)
            missing.append(row.line_id)
        else:
            atomic_write_bytes(out_dir / relative, data)
            written.add(relative)
            per_speaker[speaker] += 1
            records.append(
                (
                    spreadsheet_safe(relative),
                    spreadsheet_safe(speaker),
                    spreadsheet_safe(row.text),
                    spreadsheet_safe(row.episode),
                    row.index,
                    f"{row.start:.3f}",
                    f"{row.end:.3f}",
                    f"{_duration(data, row):.3f}",
                    spreadsheet_safe(row.source),
                )
            )
        if hook is not None:
            hook("clips", completed=done, total=len(named))

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    writer.writerows(records)
    metadata_path = out_dir / METADATA_FILE
    atomic_write_text(metadata_path, buffer.getvalue())
    _remove_stale(out_dir, previous - written)
    return ClipDatasetResult(metadata_path, len(records), dict(per_speaker), missing)


def _duration(data: bytes, row: SpeakerLine) -> float:
    try:
        with wave.open(io.BytesIO(data)) as clip:
            return clip.getnframes() / clip.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        return row.end - row.start


def _listed_files(out_dir: Path) -> set[str]:
    """The clips a previous export listed, confined to ``out_dir``: the file is data, not trust."""
    try:
        text = (out_dir / METADATA_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    listed: set[str] = set()
    for record in csv.DictReader(io.StringIO(text)):
        name = record.get("file") or ""
        parts = PurePosixPath(name).parts
        if (
            len(parts) == 2
            and name.endswith(".wav")
            and not PurePosixPath(name).is_absolute()
            and all(part not in ("", ".", "..") and "\\" not in part for part in parts)
        ):
            listed.add(name)
    return listed


def _remove_stale(out_dir: Path, stale: Iterable[str]) -> None:
    folders: set[Path] = set()
    for name in stale:
        path = out_dir / name
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            logger.warning("%s: old clip not removed (%s)", path, error.strerror or error)
            continue
        folders.add(path.parent)
    for folder in folders:
        if not any(folder.iterdir()):
            os.rmdir(folder)
