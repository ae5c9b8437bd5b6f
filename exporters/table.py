"""A CSV of lines and their speakers: ``episode,index,start,end,text,speaker,source,flags``.

UTF-8 without a byte-order mark (names such as 鈴木 stay as they are), one row per line in the
order given, times in seconds with millisecond precision, an empty ``speaker`` when nobody is
named, ``flags`` joined with ``;``. Written atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from exporters import SpeakerLine
from speaker_grouping.atomic import atomic_write_text

__all__ = ["COLUMNS", "write_table"]

COLUMNS = ("episode", "index", "start", "end", "text", "speaker", "source", "flags")


def write_table(rows: Iterable[SpeakerLine], path: str | Path) -> int:
    """Write the CSV; returns the number of rows written."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(
            (
                row.episode,
                row.index,
                f"{row.start:.3f}",
                f"{row.end:.3f}",
                row.text,
                row.speaker or "",
                row.source,
                ";".join(row.flags),
            )
        )
        count += 1
    atomic_write_text(path, buffer.getvalue())
    return count
