"""Read an episode's subtitles into dialogue lines: one cue, one speaker, one task.

Fansub files are messy, and one bad cue must never cost the rest of the episode, so:

- every cue remembers the 1-based line of the file where it starts, and each cue that cannot be
  used is reported with that line and a reason (`SkippedCue`) while the others import;
- only a failure of the whole file (unreadable, binary, undecodable, not subtitles) raises
  `SubtitleError`, whose message is one line, "path: reason";
- SubRip goes through pysrt one block at a time, because pysrt's file parser drops bad blocks
  silently and forgets line numbers;
- ASS/SSA goes through pysubs2's timestamp, event and tag helpers one ``Dialogue:`` line at a
  time, because pysubs2's file parser aborts on the first bad timestamp, ignores the
  ``Format:`` line's field order and forgets line numbers;
- WebVTT is split into blocks here (pysubs2 reads it as SubRip, leaking cue identifiers and
  NOTE blocks into the text) and its timestamps go through pysubs2's WebVTT pattern.

Text subtitle tracks inside a container (an MKV's ASS or SubRip track, an MP4's mov_text) come
in as `EmbeddedSubtitles` (read by `importers.tracks`) and go through the same cue reading, checks
and report, with "event N" of the track where a file has a line number.

Signs, songs and karaoke are not speech: lines of such ASS styles are kept apart
(`ParsedSubtitles.non_dialogue`) unless the caller asks to import them flagged.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pysrt
import pysubs2
from pysubs2.formats.substation import EVENT_FIELDS, parse_tags
from pysubs2.formats.webvtt import WebVTTFormat
from pysubs2.time import TIMESTAMP, TIMESTAMP_SHORT, timestamp_to_ms

from foundation.options import coerce_options
from importers.subtitle_encoding import EncodingError, decode_subtitle_bytes

logger = logging.getLogger(__name__)

FLAG_TWO_SPEAKERS = "two_speakers"
FLAG_OVERLAP = "overlap"
FLAG_NON_DIALOGUE = "non_dialogue"
FLAG_CLAMPED = "clamped"

SUBTITLE_EXTENSIONS = (".ass", ".ssa", ".srt", ".vtt")
"""Preference order of `find_subtitles_for`: ASS/SSA first because only they name styles, which
is what separates signs and songs from speech."""

MAX_SUBTITLE_BYTES = 32 * 1024 * 1024
"""A real episode's subtitles are well under 1 MiB even with embedded fonts; anything this big is
a video or an archive passed by mistake, and detecting its encoding would take minutes."""

# Searched case-insensitively in the ASS style name and in the Name/Actor field, after both are
# split into words (see `_style_words`: "EpisodeTitle" -> "Episode Title", "Sign_2" -> "Sign 2").
# OP and ED count only in capitals or in lower case, so that a character styled "Ed" still talks.
DEFAULT_NON_DIALOGUE_STYLES: tuple[str, ...] = (
    r"(?-i:\b(?:OP|ED|op|ed)(?![a-z]))",
    r"opening|ending",
    r"song|lyric|karaoke|kara\b|\bkfx\b|\bfx\b",
    r"\bsign",
    r"\btitle",
    r"notes?\b",
    r"\binsert",
    r"\btypeset|\bts\b",
    r"eyecatch|\bpreview\b|\bnext ?ep|\bcredits?\b|\bstaff\b|\blogo\b",
    r"歌词|歌詞|片头|片頭|片尾|注释|註釋|注釋|标题|標題|屏幕字|特效",
)

_REPORTED_TEXT_CHARS = 80
_DASHES = "-‐‑–—－"
_DASH_CLASS = re.escape(_DASHES)
_TIMING_ARROW = "-->"


class SubtitleError(ValueError):
    """The whole file is unusable; the message is one line, "path: reason"."""


@dataclass(frozen=True)
class SubtitleLine:
    """One cue that becomes (or, for signs and songs, could become) one labelling task."""

    index: int  # 1-based position after sorting by start, end, then source line
    start: float  # seconds
    end: float  # seconds
    text: str  # tags stripped; the cue's line breaks are single spaces
    style: str | None  # ASS style name; None for SRT and WebVTT
    actor: str | None  # ASS Name/Actor field, or the WebVTT <v Name> voice
    source_line: int  # 1-based line of the file where the cue starts
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SkippedCue:
    source_line: int
    reason: str
    text: str  # raw, cut to about 80 characters


@dataclass(frozen=True)
class SubtitleOptions:
    """How to read a subtitle file; accepted as this dataclass or as a dict of its fields."""

    non_dialogue_styles: tuple[str, ...] = DEFAULT_NON_DIALOGUE_STYLES
    import_non_dialogue: bool = False  # True: signs/songs become lines flagged "non_dialogue"
    merge_duplicates: bool = True  # same start, end and text: layered copies of one cue
    encoding: str | None = None  # force an encoding instead of detecting it

    def __post_init__(self) -> None:
        if isinstance(self.non_dialogue_styles, str):
            raise TypeError("non_dialogue_styles must be a sequence of regexes, not one string")
        object.__setattr__(self, "non_dialogue_styles", tuple(self.non_dialogue_styles))
        for pattern in self.non_dialogue_styles:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"non_dialogue_styles: bad regex {pattern!r}: {error}") from None


@dataclass
class ParsedSubtitles:
    path: Path  # the subtitle file, or the video whose track was read
    format: str  # "srt" | "ass" | "ssa" | "vtt", or "mov_text" for an MP4 track
    encoding: str  # as used to decode, e.g. "utf_8", "utf_16", "gb18030", "big5", "shift_jis"
    lines: list[SubtitleLine]  # what becomes tasks
    non_dialogue: list[SubtitleLine]  # signs/songs left out (empty if import_non_dialogue)
    skipped: list[SkippedCue]
    duplicates_merged: int
    drawings_dropped: int = 0  # ASS vector drawings: shapes, not text
    track: str | None = None
    """Set for a container's track, e.g. '[track 3, eng, "Full Subs"]'; then every
    ``source_line`` is the 1-based event number in that track, not a line of a file."""

    def report_lines(self) -> list[str]:
        """One "file:LINE: reason" (or "video [track N, ...] event N: reason" for a track read
        from the container) per cue that was skipped, clamped or needs a second look."""
        located: list[tuple[int, str]] = [(cue.source_line, cue.reason) for cue in self.skipped]
        for line in self.lines:
            if FLAG_CLAMPED in line.flags:
                located.append((line.source_line, "end clamped to the media's duration"))
            if FLAG_TWO_SPEAKERS in line.flags:
                located.append((line.source_line, "two speakers in one cue (dash dialogue)"))
            if FLAG_OVERLAP in line.flags:
                located.append((line.source_line, "overlaps another dialogue line"))
        source = f"{self.path} {self.track}" if self.track else str(self.path)
        report = [
            f"{source} event {number}: {reason}" if self.track else f"{source}:{number}: {reason}"
            for number, reason in sorted(located)
        ]
        if self.duplicates_merged:
            report.append(f"{source}: merged {self.duplicates_merged} duplicate cue(s)")
        if self.non_dialogue:
            styles = sorted({line.style or line.actor or "karaoke" for line in self.non_dialogue})
            report.append(
                f"{source}: left out {len(self.non_dialogue)} sign/song line(s) "
                f"(styles: {', '.join(styles)})"
            )
        return report


@dataclass(frozen=True)
class TrackEvent:
    """One packet of a text subtitle track inside a container, as stored.

    payload : the packet's bytes. ASS/SSA: the event's fields without its times
    (``ReadOrder,Layer,Style,Name,MarginL,MarginR,MarginV,Effect,Text``); SubRip, WebVTT and
    mov_text: the cue's text only (for mov_text, without its length prefix and style boxes).
    """

    start_ms: int | None  # on the video's timeline; None when the packet has no timestamp
    end_ms: int | None
    payload: bytes


@dataclass(frozen=True)
class EmbeddedSubtitles:
    """A text subtitle track read out of a container, before parsing (see importers.tracks)."""

    path: Path  # the video
    label: str  # e.g. '[track 3, eng, "Full Subs"]': reports say "<path> <label> event N: ..."
    codec: str  # FFmpeg's codec name: one of EMBEDDED_TEXT_CODECS
    header: bytes  # the codec private data: for ASS/SSA the script's [Script Info], styles, Format
    events: list[TrackEvent]


EMBEDDED_TEXT_CODECS = {
    "ass": "ass",  # Matroska S_TEXT/ASS and S_TEXT/SSA; the header says which
    "subrip": "srt",
    "text": "srt",  # Matroska S_TEXT/UTF8 as some muxers label it
    "webvtt": "vtt",
    "mov_text": "mov_text",
}
"""FFmpeg codec name of each container text track we read → how its cue text is read."""


def parse_subtitles(
    path: str | Path,
    *,
    options: SubtitleOptions | Mapping[str, object] | None = None,
    media_duration: float | None = None,
) -> ParsedSubtitles:
    """Read SRT, ASS/SSA or WebVTT; `media_duration` (seconds) skips or clamps cues past the end."""
    path = Path(path)
    opts = coerce_options(SubtitleOptions, options, what="subtitle")
    data = _read_bytes(path)
    try:
        decoded = decode_subtitle_bytes(data, opts.encoding)
    except EncodingError as error:
        raise SubtitleError(f"{path}: {error}") from None
    source_lines = re.split(r"\r\n|\r|\n", decoded.text)
    try:
        subtitle_format = _detect_format(source_lines, path.suffix.lower())
    except ValueError as error:
        raise SubtitleError(f"{path}: {error}") from None
    if subtitle_format in ("ass", "ssa"):
        cues, skipped, _event_fields = _parse_substation(source_lines, subtitle_format)
    else:
        cues, skipped = _parse_blocks(source_lines, subtitle_format)
    result = _assemble(path, subtitle_format, decoded.encoding, cues, skipped, opts, media_duration)
    logger.debug(
        "%s: %s in %s, %d lines, %d non-dialogue, %d skipped, %d duplicates merged",
        path,
        subtitle_format,
        decoded.encoding,
        len(result.lines),
        len(result.non_dialogue),
        len(result.skipped),
        result.duplicates_merged,
    )
    return result


def parse_subtitle_track(
    track: EmbeddedSubtitles,
    *,
    options: SubtitleOptions | Mapping[str, object] | None = None,
    media_duration: float | None = None,
) -> ParsedSubtitles:
    """Parse a container's text track with the same cue reading, checks and report as a file.

    Events are numbered 1, 2, ... in the order the track holds them; FFmpeg-muxed ASS tracks
    may hold a few events (the zero-length ones) in their header, which count first. Raises
    `SubtitleError` (one line, naming the video and the track) for a track that is unusable
    as a whole: undecodable text, or no events at all.
    """
    opts = coerce_options(SubtitleOptions, options, what="subtitle")
    where = f"{track.path} {track.label}"
    if track.codec not in EMBEDDED_TEXT_CODECS:
        raise SubtitleError(f"{where}: cannot read {track.codec!r} subtitles")
    pieces = [track.header, *(event.payload for event in track.events)]
    try:
        # One encoding for the whole track, found from all of its text at once.
        encoding = decode_subtitle_bytes(b"\n".join(pieces), opts.encoding).encoding
    except EncodingError as error:
        raise SubtitleError(f"{where}: {error}") from None
    header, *payloads = (
        piece.decode(encoding, errors="replace").lstrip("\ufeff") for piece in pieces
    )
    header_lines = re.split(r"\r\n|\r|\n", header)
    subtitle_format = EMBEDDED_TEXT_CODECS[track.codec]
    if subtitle_format == "ass":
        # Matroska's S_TEXT/SSA and S_TEXT/ASS are one FFmpeg codec; the styles heading tells.
        headings = {line.strip().lower() for line in header_lines}
        if "[v4 styles]" in headings and "[v4+ styles]" not in headings:
            subtitle_format = "ssa"
        cues, skipped = _track_substation_cues(header_lines, payloads, track, subtitle_format)
    else:
        cues, skipped = _track_block_cues(payloads, track, subtitle_format)
    if not cues and not skipped:
        raise SubtitleError(f"{where}: the track holds no subtitle events")
    result = _assemble(track.path, subtitle_format, encoding, cues, skipped, opts, media_duration)
    result.track = track.label
    logger.debug(
        "%s: %s track, %d lines, %d non-dialogue, %d skipped",
        where,
        subtitle_format,
        len(result.lines),
        len(result.non_dialogue),
        len(result.skipped),
    )
    return result


def find_subtitles_for(video: str | Path) -> Path | None:
    """The subtitle file beside `video`: "ep01.ass" before "ep01.zh.ass", then .ass, .ssa, .srt,
    .vtt; "forced" tracks (signs only) last. Directory listing, not glob: fansub names are full
    of brackets, which glob would read as patterns."""
    video = Path(video)
    try:
        siblings = [entry for entry in video.parent.iterdir() if entry.is_file()]
    except OSError:
        return None
    stem = video.stem
    ranked: list[tuple[tuple[int, int, int, str], Path]] = []
    for candidate in siblings:
        suffix = candidate.suffix.lower()
        if suffix not in SUBTITLE_EXTENSIONS:
            continue
        name = candidate.name[: -len(suffix)]
        if name == stem:
            tag = ""
        elif name.startswith(stem + ".") and _LANGUAGE_TAG.fullmatch(name[len(stem) + 1 :]):
            tag = name[len(stem) + 1 :]
        else:
            continue
        forced = int("forced" in tag.lower())
        key = (forced, int(bool(tag)), SUBTITLE_EXTENSIONS.index(suffix), candidate.name)
        ranked.append((key, candidate))
    return min(ranked)[1] if ranked else None


# Letters only, so "ep01.5.srt" (episode 1.5) is not taken for "ep01.mkv"'s subtitles.
_LANGUAGE_TAG = re.compile(r"[^\W\d_][\w-]*(?:\.[^\W\d_][\w-]*)*")


# --------------------------------------------------------------------------- reading the file


def _read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_SUBTITLE_BYTES:
            raise SubtitleError(
                f"{path}: {size / 2**20:.0f} MiB is too big for a subtitle file (a video?)"
            )
        data = path.read_bytes()
    except OSError as error:
        raise SubtitleError(f"{path}: cannot read: {error.strerror or error}") from None
    if not data.strip():
        raise SubtitleError(f"{path}: file is empty")
    return data


_SUBSTATION_SECTION = re.compile(r"\s*\[(script info|v4\+? styles|events)\]\s*$", re.IGNORECASE)


def _detect_format(lines: list[str], suffix: str) -> str:
    """Content first (it cannot lie about itself), the extension only to break a tie."""
    first = next((line.strip() for line in lines if line.strip()), "")
    if first.startswith("WEBVTT"):
        return "vtt"
    headings = {match.group(1).lower() for match in map(_SUBSTATION_SECTION.match, lines) if match}
    if headings:
        if "v4+ styles" in headings:
            return "ass"
        return "ssa" if "v4 styles" in headings or suffix == ".ssa" else "ass"
    if any(_TIMING_ARROW in line for line in lines):
        return "vtt" if suffix == ".vtt" else "srt"
    raise ValueError(
        "not a subtitle file: no WEBVTT header, no [Script Info]/[Events] section "
        "and no '-->' timing line"
    )


# --------------------------------------------------------------------------- shared cue model


@dataclass
class _Cue:
    """A cue whose times parsed; text and sanity checks come later, the same for every format."""

    source_line: int
    start_ms: int
    end_ms: int
    text_lines: list[str]  # markup removed, whitespace collapsed, empty lines dropped
    raw_text: str
    style: str | None = None
    actor: str | None = None
    karaoke: bool = False
    drawing_only: bool = False


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= _REPORTED_TEXT_CHARS:
        return flat
    return flat[: _REPORTED_TEXT_CHARS - 1] + "…"


def _format_time(ms: int, subtitle_format: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    separator = "," if subtitle_format == "srt" else "."
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


# Tags that SubRip writers and some ASS typesetters put in text; other "<...>" (like "<3") stay.
# Every repeat is bounded ({0,N}): with "[^>]*" each of a megabyte of "<i" scanned to the end of
# the line, quadratic time (issue 12 row 6). No real tag or ruby reading is that long.
_HTML_TAG = re.compile(r"</?(?:i|b|u|s|font|c|span|ruby|lang)\b[^>]{0,100}>", re.IGNORECASE)
_RUBY_TEXT = re.compile(r"<(rt|rp)\b[^>]{0,100}>.{0,100}?</\1\s*>", re.IGNORECASE | re.DOTALL)
_SSA_OVERRIDE_IN_TEXT = re.compile(r"\{\\[^}]{0,200}\}")  # "{\an8}" in SRT; "{laughs}" is text
_WHITESPACE = re.compile(r"\s+")


def _tidy_lines(text: str) -> list[str]:
    lines = (_WHITESPACE.sub(" ", line).strip() for line in text.split("\n"))
    return [line for line in lines if line]


def _has_two_speakers(text_lines: list[str]) -> bool:
    """Dash dialogue: "- Hi!\\n- Hello.", "Hi!\\n- Hello." or "-Hi! -Hello." on one line."""
    led_by_dash = [
        line[0] in _DASHES and len(line.lstrip(_DASHES).strip()) > 0 for line in text_lines
    ]
    if sum(led_by_dash) >= 2 or any(led_by_dash[1:]):
        return True
    return any(_SAME_LINE_DIALOGUE.search(line) for line in text_lines)


_SAME_LINE_DIALOGUE = re.compile(
    rf"^[{_DASH_CLASS}]+\s*\S.*?[.!?…。！？~～」』)）]\s*[{_DASH_CLASS}]+\s*[^\s{_DASH_CLASS}]"
)


# --------------------------------------------------------------------------- SubRip and WebVTT


@dataclass
class _Block:
    """Lines of one cue as found in the file: optional identifier, timing line, text."""

    first_line: int
    timing_line: int
    timing: str
    text: list[str] = field(default_factory=list)


_LOOKS_LIKE_TIME = re.compile(r"\s*\d+:\d+:\d+")


def _split_blocks(lines: list[str], subtitle_format: str) -> tuple[list[_Block], list[SkippedCue]]:
    """Group lines into cues. A blank line ends a cue; a timing line always starts one (files
    that lost their blank lines still parse); text with no timing line continues the previous
    cue, the way players show a cue with a blank line inside."""
    groups: list[list[tuple[int, str]]] = [[]]
    for number, line in enumerate(lines, start=1):
        if line.strip():
            groups[-1].append((number, line.rstrip()))
        elif groups[-1]:
            groups.append([])
    blocks: list[_Block] = []
    skipped: list[SkippedCue] = []
    for position, group in enumerate(group for group in groups if group):
        if subtitle_format == "vtt":
            if position == 0 and group[0][1].startswith("WEBVTT"):
                group = group[1:]
                # A header's metadata lines run until the first cue or the blank line.
                while (
                    group
                    and _TIMING_ARROW not in group[0][1]
                    and (len(group) < 2 or _TIMING_ARROW not in group[1][1])
                ):
                    group = group[1:]
                if not group:
                    continue
            if re.match(r"(NOTE|STYLE|REGION)(\s|$)", group[0][1]):
                continue
        timings = [i for i, (_, line) in enumerate(group) if _TIMING_ARROW in line]
        if not timings:
            _place_orphan_lines(group, blocks, skipped)
            continue
        starts: list[int] = []
        for order, at in enumerate(timings):
            previous_end = timings[order - 1] + 1 if order else 0
            has_number = at - 1 >= previous_end and group[at - 1][1].strip().isdigit()
            first_cue_identifier = order == 0 and subtitle_format == "vtt" and at == 1
            starts.append(at - 1 if has_number or first_cue_identifier else at)
        if starts[0] > 0:
            _place_orphan_lines(group[: starts[0]], blocks, skipped)
        for order, at in enumerate(timings):
            end = starts[order + 1] if order + 1 < len(timings) else len(group)
            blocks.append(
                _Block(
                    first_line=group[starts[order]][0],
                    timing_line=group[at][0],
                    timing=group[at][1],
                    text=[line for _, line in group[at + 1 : end]],
                )
            )
    return blocks, skipped


def _place_orphan_lines(
    orphans: list[tuple[int, str]], blocks: list[_Block], skipped: list[SkippedCue]
) -> None:
    """Lines outside any timing: plain text continues the previous cue; a lone number or a
    time-like first line is a cue whose timing line is broken, so it is reported."""
    first = orphans[0][1].strip()
    if blocks and not first.isdigit() and not _LOOKS_LIKE_TIME.match(first):
        blocks[-1].text.extend(line for _, line in orphans)
        return
    raw = "\n".join(line for _, line in orphans)
    skipped.append(SkippedCue(orphans[0][0], "no '-->' timing line", _excerpt(raw)))


_SUBRIP_TIMESTAMP = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")
_WEBVTT_VOICE = re.compile(r"<v(?:\.[^\s>]{0,100})?\s+([^>]{1,100})>")
_WEBVTT_TAG = re.compile(r"<[^>\n]{0,100}>")


def _subrip_times(timing: str) -> tuple[int, int]:
    try:
        start, end, _position = pysrt.SubRipItem.split_timestamps(timing)
    except pysrt.Error:
        raise ValueError(f"unparsable timing line {timing.strip()!r}") from None
    return _subrip_ms(start), _subrip_ms(end)


def _subrip_ms(stamp: str) -> int:
    """pysrt reads "00:00:xx,000" as 0 s without complaint, so check the shape first."""
    match = _SUBRIP_TIMESTAMP.fullmatch(stamp.strip())
    if match is None:
        raise ValueError(f"unparsable timestamp {stamp.strip()!r}")
    hours, minutes, seconds, fraction = match.groups()
    # "1,5" means 1.5 s (a decimal fraction), not 1.005 s as pysrt would read it.
    normalised = f"{hours}:{minutes}:{seconds},{fraction.ljust(3, '0')}"
    return int(pysrt.SubRipTime.from_string(normalised).ordinal)


def _subrip_text(lines: list[str]) -> tuple[list[str], str | None]:
    text = "\n".join(lines)
    text = _RUBY_TEXT.sub("", text)
    text = _HTML_TAG.sub("", text)
    text = _SSA_OVERRIDE_IN_TEXT.sub("", text)
    return _tidy_lines(text.replace("\\N", "\n")), None


def _webvtt_times(timing: str) -> tuple[int, int]:
    start, _, rest = timing.partition(_TIMING_ARROW)
    end = rest.split()[0] if rest.split() else ""  # cue settings follow the end time
    return _webvtt_ms(start), _webvtt_ms(end)


def _webvtt_ms(stamp: str) -> int:
    match = WebVTTFormat.TIMESTAMP.fullmatch(stamp.strip())
    if match is None:
        # Converters often write SubRip commas into .vtt files; the meaning is unambiguous.
        return _subrip_ms(stamp)
    hours, minutes, seconds, fraction = match.groups()
    return WebVTTFormat.timestamp_to_ms((hours, minutes, seconds, fraction.ljust(3, "0")))


def _webvtt_text(lines: list[str]) -> tuple[list[str], str | None]:
    """Every "<...>" is markup in WebVTT (a literal "<" is written "&lt;"); "<v Name>" is the
    speaker, which is exactly what we are after."""
    text = "\n".join(lines)
    voice = _WEBVTT_VOICE.search(text)
    text = _RUBY_TEXT.sub("", text)
    text = _WEBVTT_TAG.sub("", text)
    text = html.unescape(text)
    return _tidy_lines(text), voice.group(1).strip() if voice else None


def _parse_blocks(lines: list[str], subtitle_format: str) -> tuple[list[_Cue], list[SkippedCue]]:
    """SubRip cues start at their number line, WebVTT cues at their timing line."""
    if subtitle_format == "srt":
        read_times, read_text = _subrip_times, _subrip_text
    else:
        read_times, read_text = _webvtt_times, _webvtt_text
    blocks, skipped = _split_blocks(lines, subtitle_format)
    cues: list[_Cue] = []
    for block in blocks:
        source_line = block.first_line if subtitle_format == "srt" else block.timing_line
        raw = "\n".join(block.text)
        try:
            start_ms, end_ms = read_times(block.timing)
        except ValueError as error:
            skipped.append(SkippedCue(source_line, str(error), _excerpt(raw)))
            continue
        text_lines, actor = read_text(block.text)
        cues.append(_Cue(source_line, start_ms, end_ms, text_lines, raw, actor=actor))
    return cues, skipped


# --------------------------------------------------------------------------- ASS / SSA

MAX_EVENT_TEXT = 20_000
"""No dialogue event is this long; a longer one is skipped and reported."""
_KARAOKE_TAG = re.compile(r"\{[^}]{0,100}?\\(?:k|K|kf|ko|kt)\d")
_SECTION = re.compile(r"\s*\[([^\]]+)\]\s*$")


def _parse_substation(
    lines: list[str], subtitle_format: str
) -> tuple[list[_Cue], list[SkippedCue], list[str]]:
    """One ``Dialogue:`` line at a time, honouring the ``[Events]`` ``Format:`` line, whose
    (lower-case) field names come back too: a container's ASS packets are laid out by it."""
    cues: list[_Cue] = []
    skipped: list[SkippedCue] = []
    section = ""
    event_fields = list(EVENT_FIELDS[subtitle_format])
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        heading = _SECTION.match(stripped)
        if heading:
            section = heading.group(1).strip().lower()
            continue
        if section in ("fonts", "graphics"):
            continue  # uuencoded attachments
        if section == "events" and stripped.lower().startswith("format:"):
            names = [name.strip().lower() for name in stripped.split(":", 1)[1].split(",")]
            event_fields = ["name" if name == "actor" else name for name in names]
            continue
        if not stripped.startswith("Dialogue:"):
            continue  # Comment: lines, styles, script info
        try:
            cues.append(_substation_cue(number, stripped, event_fields))
        except ValueError as error:
            raw = stripped.split(":", 1)[1].split(",", len(event_fields) - 1)[-1]
            skipped.append(SkippedCue(number, str(error), _excerpt(raw)))
    return cues, skipped, event_fields


def _substation_cue(number: int, line: str, event_fields: list[str]) -> _Cue:
    values = line.split(":", 1)[1].strip().split(",", len(event_fields) - 1)
    if len(values) != len(event_fields) or "text" not in event_fields:
        raise ValueError(
            f"malformed Dialogue line: {len(values)} fields where Format names {len(event_fields)}"
        )
    record = dict(zip(event_fields, values, strict=True))
    start_ms = _substation_ms(record.get("start", ""))
    return _substation_record_cue(number, record, start_ms, _substation_ms(record.get("end", "")))


def _substation_record_cue(
    number: int, record: Mapping[str, str], start_ms: int, end_ms: int
) -> _Cue:
    """A cue from an event's fields by (lower-case) name; times come apart because a
    container's ASS packets carry theirs in the packet, not in the fields."""
    if len(record["text"]) > MAX_EVENT_TEXT:
        # pysubs2's override-tag split is quadratic in runs of "{" (issue 12 row 6).
        raise ValueError(
            f"event text of {len(record['text'])} characters; at most {MAX_EVENT_TEXT}"
        )
    event = pysubs2.SSAEvent(
        start=start_ms,
        end=end_ms,
        style=record.get("style", "").strip(),
        name=record.get("name", "").strip(),
        text=record["text"],
    )
    fragments = parse_tags(event.text)
    spoken = "".join(fragment for fragment, style in fragments if not style.drawing)
    drawn = "".join(fragment for fragment, style in fragments if style.drawing)
    text = spoken.replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " ")
    text = _RUBY_TEXT.sub("", text)
    text_lines = _tidy_lines(_HTML_TAG.sub("", text))
    return _Cue(
        source_line=number,
        start_ms=event.start,
        end_ms=event.end,
        text_lines=text_lines,
        raw_text=event.text,
        style=event.style or None,
        actor=event.name or None,
        karaoke=bool(_KARAOKE_TAG.search(event.text)),
        drawing_only=bool(drawn.strip()) and not text_lines,
    )


def _substation_ms(stamp: str) -> int:
    stamp = stamp.strip()
    match = TIMESTAMP.fullmatch(stamp) or TIMESTAMP_SHORT.fullmatch(stamp)
    if match is None:
        raise ValueError(f"unparsable timestamp {stamp!r}")
    return timestamp_to_ms(match.groups())


# --------------------------------------------------------------------------- container tracks


def _track_substation_cues(
    header_lines: list[str],
    payloads: list[str],
    track: EmbeddedSubtitles,
    subtitle_format: str,
) -> tuple[list[_Cue], list[SkippedCue]]:
    """The header's own Dialogue lines (events 1..k), then one event per packet.

    A packet holds the Format line's fields minus Start and End, after a ReadOrder field.
    """
    cues, skipped, event_fields = _parse_substation(header_lines, subtitle_format)
    # Header events are numbered by their place among the header's Dialogue lines.
    dialogue_lines = [
        number
        for number, line in enumerate(header_lines, start=1)
        if line.strip().startswith("Dialogue:")
    ]
    event_number = {line: number for number, line in enumerate(dialogue_lines, start=1)}
    for cue in cues:
        cue.source_line = event_number[cue.source_line]
    skipped = [replace(cue, source_line=event_number[cue.source_line]) for cue in skipped]
    packet_fields = ["readorder", *(name for name in event_fields if name not in ("start", "end"))]
    for number, (payload, event) in enumerate(
        zip(payloads, track.events, strict=True), start=len(dialogue_lines) + 1
    ):
        values = payload.strip("\r\n").split(",", len(packet_fields) - 1)
        if event.start_ms is None or event.end_ms is None:
            skipped.append(SkippedCue(number, "the packet has no timestamp", _excerpt(payload)))
        elif len(values) != len(packet_fields) or "text" not in packet_fields:
            reason = (
                f"malformed event: {len(values)} fields where the track's Format "
                f"names {len(packet_fields)} (with ReadOrder, without Start and End)"
            )
            skipped.append(SkippedCue(number, reason, _excerpt(payload)))
        else:
            record = dict(zip(packet_fields, values, strict=True))
            cues.append(_substation_record_cue(number, record, event.start_ms, event.end_ms))
    return cues, skipped


def _track_block_cues(
    payloads: list[str], track: EmbeddedSubtitles, subtitle_format: str
) -> tuple[list[_Cue], list[SkippedCue]]:
    """SubRip, WebVTT and mov_text packets: the cue's text, read as in a file of that kind."""
    read_text = _webvtt_text if subtitle_format == "vtt" else _subrip_text
    cues: list[_Cue] = []
    skipped: list[SkippedCue] = []
    for number, (payload, event) in enumerate(zip(payloads, track.events, strict=True), start=1):
        raw = payload.replace("\r\n", "\n").replace("\r", "\n")
        if event.start_ms is None or event.end_ms is None:
            skipped.append(SkippedCue(number, "the packet has no timestamp", _excerpt(raw)))
            continue
        text_lines, actor = read_text(raw.split("\n"))
        cues.append(_Cue(number, event.start_ms, event.end_ms, text_lines, raw, actor=actor))
    return cues, skipped


# --------------------------------------------------------------------------- checks and order


def _style_words(name: str) -> str:
    """ "EpisodeTitle" -> "Episode Title", "Sign_2" -> "Sign 2", so patterns can use \\b."""
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    name = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", " ", name)
    return re.sub(r"[\W_]+", " ", name).strip()


def _non_dialogue_matcher(patterns: Iterable[str]) -> Callable[[_Cue], bool]:
    compiled = [re.compile(pattern, re.IGNORECASE) for pattern in patterns]

    def is_non_dialogue(cue: _Cue) -> bool:
        if cue.karaoke:
            return True
        names = [_style_words(name) for name in (cue.style, cue.actor) if name]
        return any(pattern.search(name) for pattern in compiled for name in names)

    return is_non_dialogue


def _assemble(
    path: Path,
    subtitle_format: str,
    encoding: str,
    cues: list[_Cue],
    skipped: list[SkippedCue],
    options: SubtitleOptions,
    media_duration: float | None,
) -> ParsedSubtitles:
    is_non_dialogue = _non_dialogue_matcher(options.non_dialogue_styles)
    duration_ms = None if media_duration is None else round(media_duration * 1000)
    kept: list[tuple[_Cue, frozenset[str]]] = []
    drawings = 0
    for cue in cues:
        if cue.drawing_only:
            drawings += 1
            continue
        reason = _timing_problem(cue, subtitle_format, duration_ms)
        if reason is None and not cue.text_lines:
            reason = "empty text after removing formatting"
        if reason is not None:
            skipped.append(SkippedCue(cue.source_line, reason, _excerpt(cue.raw_text)))
            continue
        flags: set[str] = set()
        if duration_ms is not None and cue.end_ms > duration_ms:
            cue.end_ms = duration_ms
            flags.add(FLAG_CLAMPED)
        if _has_two_speakers(cue.text_lines):
            flags.add(FLAG_TWO_SPEAKERS)
        if is_non_dialogue(cue):
            flags.add(FLAG_NON_DIALOGUE)
        kept.append((cue, frozenset(flags)))

    duplicates = 0
    if options.merge_duplicates:
        kept, duplicates = _merge_duplicates(kept)

    speech = [(cue, flags) for cue, flags in kept if FLAG_NON_DIALOGUE not in flags]
    others = [(cue, flags) for cue, flags in kept if FLAG_NON_DIALOGUE in flags]
    if options.import_non_dialogue:
        speech, others = speech + others, []
    skipped.sort(key=lambda cue: cue.source_line)
    return ParsedSubtitles(
        path=path,
        format=subtitle_format,
        encoding=encoding,
        lines=_numbered(speech, flag_overlaps=True),
        non_dialogue=_numbered(others, flag_overlaps=False),
        skipped=skipped,
        duplicates_merged=duplicates,
        drawings_dropped=drawings,
    )


def _timing_problem(cue: _Cue, subtitle_format: str, duration_ms: int | None) -> str | None:
    if cue.end_ms <= cue.start_ms:
        start = _format_time(cue.start_ms, subtitle_format)
        end = _format_time(cue.end_ms, subtitle_format)
        return f"end {end} is not after start {start}"
    if duration_ms is not None and cue.start_ms >= duration_ms:
        start = _format_time(cue.start_ms, subtitle_format)
        end = _format_time(duration_ms, subtitle_format)
        return f"starts at {start}, at or after the end of the media ({end})"
    return None


def _merge_duplicates(
    kept: list[tuple[_Cue, frozenset[str]]],
) -> tuple[list[tuple[_Cue, frozenset[str]]], int]:
    """Typesetters layer one cue in several styles (glow, border, fill); it is one line of
    speech. The first copy in the file survives, a spoken copy before a sign/song copy."""
    survivors: dict[tuple[int, int, str], tuple[_Cue, frozenset[str]]] = {}
    for cue, flags in kept:
        key = (cue.start_ms, cue.end_ms, " ".join(cue.text_lines))
        held = survivors.get(key)
        if held is None or (FLAG_NON_DIALOGUE in held[1] and FLAG_NON_DIALOGUE not in flags):
            survivors[key] = (cue, flags)
    return list(survivors.values()), len(kept) - len(survivors)


def _numbered(
    entries: list[tuple[_Cue, frozenset[str]]], *, flag_overlaps: bool
) -> list[SubtitleLine]:
    entries = sorted(
        entries, key=lambda entry: (entry[0].start_ms, entry[0].end_ms, entry[0].source_line)
    )
    overlapping = _overlapping(entries) if flag_overlaps else set()
    return [
        SubtitleLine(
            index=position,
            start=cue.start_ms / 1000,
            end=cue.end_ms / 1000,
            text=" ".join(cue.text_lines),
            style=cue.style,
            actor=cue.actor,
            source_line=cue.source_line,
            flags=flags | {FLAG_OVERLAP} if position - 1 in overlapping else flags,
        )
        for position, (cue, flags) in enumerate(entries, start=1)
    ]


def _overlapping(entries: list[tuple[_Cue, frozenset[str]]]) -> set[int]:
    """Positions (in start order) whose interval meets another's. Touching is not overlapping.
    Line i overlaps an earlier line iff the latest end so far is after its start, and a later
    line iff the next start is before its end; so one pass each way suffices."""
    found: set[int] = set()
    latest_end = None
    for position, (cue, _) in enumerate(entries):
        if latest_end is not None and latest_end > cue.start_ms:
            found.add(position)
        if position + 1 < len(entries) and entries[position + 1][0].start_ms < cue.end_ms:
            found.add(position)
        latest_end = cue.end_ms if latest_end is None else max(latest_end, cue.end_ms)
    return found
