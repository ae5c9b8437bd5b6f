"""A CSV of lines and their speakers: ``episode,index,start,end,text,speaker,source,flags``.

UTF-8 without a byte-order mark (names such as 鈴木 stay as they are), one row per line in the
order given, times in seconds with millisecond precision, an empty ``speaker`` when nobody is
named, ``flags`` joined with ``;``. Written atomically.

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written
with a leading ``'``: spreadsheets run such a cell as a formula (CSV injection), and subtitle
text and speaker names come from whoever edited the subtitles or the project.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from exporters import SpeakerLine
from foundation.atomic import atomic_write_text

__all__ = ["COLUMNS", "spreadsheet_safe", "write_table"]

COLUMNS = ("episode", "index", "start", "end", "text", "speaker", "source", "flags")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """``cell``, with a leading ``'`` when a spreadsheet would read it as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def write_table(rows: Iterable[SpeakerLine], path: str | Path) -> int:
    """Write the CSV; returns the number of rows written."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(
            (
                spreadsheet_safe(row.episode),
                row.index,
                f"{row.start:.3f}",
                f"{row.end:.3f}",
                spreadsheet_safe(row.text),
                spreadsheet_safe(row.speaker or ""),
                spreadsheet_safe(row.source),
                spreadsheet_safe(";".join(row.flags)),
            )
        )
        count += 1
    atomic_write_text(path, buffer.getvalue())
    return count
