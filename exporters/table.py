"""The line table: a CSV (``episode,index,start,end,text,speaker,source,flags``) and the same
rows as Parquet, which dataset builders (pandas, Hugging Face ``datasets``, Spark) load typed.

UTF-8 without a byte-order mark (names such as 鈴木 stay as they are), one row per line in the
order given, times in seconds with millisecond precision, an empty ``speaker`` when nobody is
named, ``flags`` joined with ``;``. Written atomically.

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written
with a leading ``'``: spreadsheets run such a cell as a formula (CSV injection), and subtitle
text and speaker names come from whoever edited the subtitles or the project. The Parquet file
holds the values as they are (typed columns run nothing), ``speaker`` null when nobody is named
and ``flags`` a list of strings.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from exporters import SpeakerLine
from foundation.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["COLUMNS", "spreadsheet_safe", "write_table", "write_table_parquet"]

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


def write_table_parquet(rows: Iterable[SpeakerLine], path: str | Path) -> int:
    """Write the rows as Parquet through pandas (pyarrow engine); returns the number of rows.

    Columns as in the CSV, typed: ``index`` int64, ``start``/``end`` float64 seconds,
    ``speaker`` string or null, ``flags`` list of strings. Written atomically.
    """
    import pandas as pd

    records = [
        {
            "episode": row.episode,
            "index": row.index,
            "start": round(row.start, 3),
            "end": round(row.end, 3),
            "text": row.text,
            "speaker": row.speaker,
            "source": row.source,
            "flags": list(row.flags),
        }
        for row in rows
    ]
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    frame = frame.astype({"index": "int64", "start": "float64", "end": "float64"})
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", index=False)
    atomic_write_bytes(path, buffer.getvalue())
    return len(records)
