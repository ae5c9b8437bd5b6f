"""Speaker-tagged subtitles: SRT with a ``Name: `` prefix, ASS with the Actor (Name) field filled.

Given the episode's original ASS file, the ASS export is that file with only the Name field of
the dialogue events changed: styles, fonts, comments, typesetting, layer order and line endings
are kept as they were, because fansub ASS files carry hours of typesetting that a rewrite through
a subtitle library would flatten. The file is edited line by line, not re-serialised, for the same
reason the importer reads it line by line (pysubs2's parser aborts on one bad timestamp and
ignores the ``Format:`` field order).

Rows map to events through the cue's ``source_line`` (the line of the file where its
``Dialogue:`` sits; tasks carry it), or, failing that, through the 1-based index the importer
gave the cue. Layered copies of a cue that the importer merged get the same name; sign and song
events the importer left out are not touched.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pysrt
import pysubs2

from exporters import SpeakerLine
from foundation.atomic import atomic_write_text
from foundation.options import coerce_options
from importers.subtitle_encoding import EncodingError, decode_subtitle_bytes
from importers.subtitles import SubtitleError, SubtitleLine, SubtitleOptions, parse_subtitles

__all__ = ["SpeakerLine", "actor_field", "srt_text", "write_tagged_ass", "write_tagged_srt"]

_LINE_BREAK = re.compile(r"(\r\n|\r|\n)")  # the importer's line numbering (not str.splitlines)
_SECTION = re.compile(r"\s*\[([^\]]+)\]\s*$")
_DEFAULT_FIELDS = {
    "ass": ["layer", "start", "end", "style", "name", "marginl", "marginr", "marginv", "effect"],
    "ssa": ["marked", "start", "end", "style", "name", "marginl", "marginr", "marginv", "effect"],
}


UNTRANSCRIBED = "[speech]"
"""Shown for a line without text (cut from detected speech) whose speaker is not named."""


def srt_text(row: SpeakerLine) -> str:
    """``"Name: text"``, or the bare text when nobody is named.

    A line without text (imported without subtitles) shows ``"[Name]"``, or ``"[speech]"``
    when nobody is named: a SubRip cue with no text is read as a malformed block (our importer
    skips it, and some players stop there), so every cue keeps a visible line.
    """
    if not row.text.strip():
        return f"[{row.speaker}]" if row.speaker else UNTRANSCRIBED
    return f"{row.speaker}: {row.text}" if row.speaker else row.text


def actor_field(speaker: str | None) -> str:
    """A speaker name as an ASS Name field can hold it: one line, and no comma, which would end
    the field (a comma becomes the full-width "，")."""
    if not speaker:
        return ""
    return " ".join(speaker.split()).replace(",", "，")


def write_tagged_srt(rows: Iterable[SpeakerLine], path: str | Path) -> None:
    """SubRip, one cue per row in the order given, numbered 1..n, UTF-8, written atomically."""
    subtitles = pysrt.SubRipFile(
        items=[
            pysrt.SubRipItem(
                index=number,
                start=pysrt.SubRipTime.from_ordinal(_ms(row.start)),
                end=pysrt.SubRipTime.from_ordinal(_ms(row.end)),
                text=srt_text(row),
            )
            for number, row in enumerate(rows, start=1)
        ]
    )
    buffer = io.StringIO()
    subtitles.write_into(buffer, eol="\n")
    atomic_write_text(path, buffer.getvalue())


def write_tagged_ass(
    rows: Iterable[SpeakerLine],
    path: str | Path,
    source: str | Path | None = None,
    *,
    subtitle_options: SubtitleOptions | Mapping[str, Any] | None = None,
) -> None:
    """Advanced SubStation Alpha with each row's speaker in the Name (Actor) field.

    ``source``: the ASS/SSA file the episode was imported from; its events are kept and only their
    Name fields change. Rows without ``source_line`` are matched by index, parsing ``source`` with
    ``subtitle_options`` (those of the import). Raises `SubtitleError` when ``source`` is not an
    ASS/SSA file or a row's cue is not in it (another file than the one imported).
    """
    rows = list(rows)
    if source is None:
        atomic_write_text(path, _fresh_ass(rows))
    else:
        options = coerce_options(SubtitleOptions, subtitle_options, what="subtitle")
        atomic_write_text(path, _tagged_copy(rows, Path(source), options))


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _fresh_ass(rows: Sequence[SpeakerLine]) -> str:
    subtitles = pysubs2.SSAFile()
    for row in rows:
        # Braces would open override blocks; line breaks are "\N" in ASS.
        text = row.text.replace("{", "(").replace("}", ")").replace("\n", "\\N")
        if not text.strip():  # a line cut from speech: show who speaks, as the SRT does
            text = f"[{actor_field(row.speaker)}]" if row.speaker else UNTRANSCRIBED
        subtitles.events.append(
            pysubs2.SSAEvent(
                start=_ms(row.start), end=_ms(row.end), text=text, name=actor_field(row.speaker)
            )
        )
    return subtitles.to_string("ass")


def _tagged_copy(rows: Sequence[SpeakerLine], source: Path, options: SubtitleOptions) -> str:
    # Every Dialogue cue, signs and merged layers included, to find each row's event and copies.
    every_cue = parse_subtitles(
        source, options=replace(options, merge_duplicates=False, import_non_dialogue=True)
    )
    if every_cue.format not in ("ass", "ssa"):
        raise SubtitleError(
            f"{source}: is {every_cue.format.upper()}, not ASS/SSA; "
            "write the ASS export without a source file"
        )
    cue_at = {cue.source_line: cue for cue in every_cue.lines}
    by_index: dict[int, int] | None = None
    if any(row.source_line is None for row in rows):
        imported = parse_subtitles(source, options=options)
        by_index = {line.index: line.source_line for line in imported.lines}

    actors: dict[int, str] = {}
    layer_actors: dict[tuple[int, int, str], str] = {}
    for row in rows:
        number = row.source_line if row.source_line is not None else by_index.get(row.index)  # type: ignore[union-attr]
        cue = cue_at.get(number) if number is not None else None
        if cue is None or _ms(cue.start) != _ms(row.start) or cue.text != row.text:
            raise SubtitleError(
                f"{source}: line {row.index} ({row.text[:40]!r} at {row.start:.3f} s) is not "
                "in this file; was the episode imported from another subtitle file?"
            )
        actors[cue.source_line] = actor_field(row.speaker)
        layer_actors[_layer_key(cue)] = actors[cue.source_line]
    for cue in every_cue.lines:
        if cue.source_line not in actors and _layer_key(cue) in layer_actors:
            actors[cue.source_line] = layer_actors[_layer_key(cue)]
    return _with_actors(_read_text(source), actors, every_cue.format, source)


def _layer_key(cue: SubtitleLine) -> tuple[int, int, str]:
    """What the importer's duplicate merging compares: copies of one cue in several styles."""
    return (_ms(cue.start), _ms(cue.end), cue.text)


def _read_text(source: Path) -> str:
    try:
        return decode_subtitle_bytes(source.read_bytes()).text
    except OSError as error:
        raise SubtitleError(f"{source}: cannot read: {error.strerror or error}") from None
    except EncodingError as error:
        raise SubtitleError(f"{source}: {error}") from None


def _with_actors(text: str, actors: Mapping[int, str], subtitle_format: str, source: Path) -> str:
    """``text`` with the Name field of the Dialogue lines numbered in ``actors`` replaced."""
    pieces = _LINE_BREAK.split(text)  # line, break, line, break, ..., line
    section = ""
    fields = list(_DEFAULT_FIELDS[subtitle_format])
    for position in range(0, len(pieces), 2):
        number = position // 2 + 1
        line = pieces[position]
        stripped = line.strip()
        heading = _SECTION.match(stripped)
        if heading:
            section = heading.group(1).strip().lower()
            continue
        if section == "events" and stripped.lower().startswith("format:"):
            names = [name.strip().lower() for name in stripped.split(":", 1)[1].split(",")]
            fields = ["name" if name == "actor" else name for name in names]
            continue
        if number not in actors:
            continue
        if "name" not in fields:
            raise SubtitleError(f"{source}: its [Events] Format line has no Name/Actor field")
        head, _, rest = line.partition(":")
        values = rest.split(",", len(fields) - 1)
        at = fields.index("name")
        values[at] = (" " if at == 0 else "") + actors[number]
        pieces[position] = head + ":" + ",".join(values)
    return "".join(pieces)
