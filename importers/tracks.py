"""The tracks inside a video file: listing them, choosing the audio and subtitle track to use,
and reading a text subtitle track out of the container.

A typical fan release is one MKV holding the video, a Japanese (default) and an English audio
track, the full subtitles as an ASS track, often a "Signs & Songs" track, and font attachments.
So the subtitles may be inside the video, and the voices are in whichever audio track the
user wants. Choices follow what a player does, and every choice that matches nothing is a
one-line error that lists what the file holds:

- audio: ``--audio-track N`` (a stream index as ``--list-tracks`` prints it), else
  ``--audio-language LANG``, else the default-flagged decodable track, else the first
  decodable one;
- subtitles: ``--subs FILE`` always; else ``--subtitle-track N`` / ``--subtitle-language LANG``;
  else a file beside the video with its name (players load it over the embedded tracks, and
  putting it there is a deliberate act), unless it is tagged forced (signs only) and the video
  has a full dialogue track; else the embedded text track a player would show:
  full dialogue before signs/songs or forced tracks, the default-flagged one first, then the
  first. Image subtitles (PGS, VobSub, DVB) need OCR, which we do not do.

Languages are compared as languages, not strings: ``en``, ``eng`` and ``en-US`` all match an
English track, and ``fre``/``fra`` or ``ger``/``deu`` match each other (langcodes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import langcodes

from foundation.options import coerce_options
from importers.media.container import (
    MediaError,
    decodable,
    demux,
    discard_other_streams,
    open_media,
    timeline_origin,
)
from importers.subtitles import (
    EMBEDDED_TEXT_CODECS,
    SUBTITLE_EXTENSIONS,
    EmbeddedSubtitles,
    ParsedSubtitles,
    SubtitleError,
    SubtitleOptions,
    TrackEvent,
    find_subtitles_for,
    parse_subtitle_track,
    parse_subtitles,
)

logger = logging.getLogger(__name__)

SIGNS_TITLE = re.compile(
    r"\bsigns?\b|\bsongs?\b|\bS\s*&\s*S\b|\bforced\b|\blyrics?\b|\bkaraoke\b|\btypeset",
    re.IGNORECASE,
)
"""Track titles of signs/songs-only tracks ("Signs & Songs", "Signs/Songs", "S&S", "Forced"),
which a player skips when a full dialogue track exists."""


def language_key(code: str) -> str | None:
    """The language of an ISO 639-1/-2 code or BCP 47 tag ("en", "eng", "en-US" → "en");
    None for "und" (undetermined). Raises ValueError for a code that is not a language."""
    if not langcodes.tag_is_valid(code):
        raise ValueError(f"{code!r} is not an ISO 639 language code (e.g. jpn, eng, ja, en)")
    return langcodes.Language.get(code).language


@dataclass(frozen=True)
class TrackChoice:
    """Which audio and subtitle track of the video to use; None everywhere: as a player would.

    Indexes are stream indexes as ``--list-tracks`` prints them; languages are ISO 639-2
    (``jpn``, ``eng``) or 639-1 (``ja``, ``en``) codes.
    """

    audio_track: int | None = None
    audio_language: str | None = None
    subtitle_track: int | None = None
    subtitle_language: str | None = None

    def __post_init__(self) -> None:
        for index_field, language_field in (
            ("audio_track", "audio_language"),
            ("subtitle_track", "subtitle_language"),
        ):
            index, language = getattr(self, index_field), getattr(self, language_field)
            if index is not None and language is not None:
                raise ValueError(f"give {index_field} or {language_field}, not both")
            if index is not None and (isinstance(index, bool) or index < 0):
                raise ValueError(f"{index_field} must be a stream index (0 or more), not {index}")
            if language is not None:
                try:
                    language_key(language)
                except ValueError as error:
                    raise ValueError(f"{language_field}: {error}") from None

    @property
    def picks_subtitles(self) -> bool:
        return self.subtitle_track is not None or self.subtitle_language is not None

    @classmethod
    def coerce(cls, choice: TrackChoice | Mapping[str, Any] | None) -> TrackChoice:
        return coerce_options(cls, choice, what="track")


@dataclass(frozen=True)
class Track:
    """One stream of a container, as ``--list-tracks`` shows it."""

    index: int  # stream index: what --audio-track / --subtitle-track take
    kind: str  # "video" | "audio" | "subtitle" | "attachment" | "data"
    codec: str  # FFmpeg's codec name, e.g. "hevc", "opus", "ass", "hdmv_pgs_subtitle"
    language: str | None  # as the container says it ("jpn"); None when unset or "und"
    title: str | None
    default: bool
    forced: bool
    decodable: bool  # this FFmpeg has a decoder (video, audio) or we read it (subtitles)
    image: bool = False  # bitmap subtitles (PGS, VobSub, DVB): need OCR
    details: str = ""  # "Main 10, 1920x1080", "2 ch, 48000 Hz", an attachment's file name

    @property
    def text(self) -> bool:
        """A subtitle track whose text we read."""
        return self.kind == "subtitle" and self.codec in EMBEDDED_TEXT_CODECS

    @property
    def signs_only(self) -> bool:
        """Forced-flagged, or titled like a signs/songs track: not the full dialogue."""
        return self.forced or bool(self.title and SIGNS_TITLE.search(self.title))

    def label(self) -> str:
        """'[track 3, eng, "Full Subs"]': how reports name the track."""
        parts = [f"track {self.index}"]
        if self.language:
            parts.append(self.language)
        if self.title:
            parts.append(f'"{self.title}"')
        return "[" + ", ".join(parts) + "]"

    def summary(self) -> str:
        """'3 (ass, eng, "Full Subs", default)': one item of an error's list of tracks."""
        parts = [self.codec, *([self.language] if self.language else [])]
        if self.title:
            parts.append(f'"{self.title}"')
        parts += [flag for flag, on in (("default", self.default), ("forced", self.forced)) if on]
        return f"{self.index} ({', '.join(parts)})"

    def record(self) -> dict[str, Any]:
        """What report.json and each task's data record of a track used."""
        return {
            "index": self.index,
            "codec": self.codec,
            "language": self.language,
            "title": self.title,
            "default": self.default,
            "forced": self.forced,
        }


def list_tracks(video: str | Path) -> list[Track]:
    """Every stream of ``video`` in index order; raises MediaError for a file FFmpeg cannot open."""
    video = Path(video)
    with open_media(video) as container:
        return [_track(stream) for stream in container.streams]


def _track(stream: av.stream.Stream) -> Track:
    metadata = {key.lower(): value for key, value in (stream.metadata or {}).items()}
    language = (metadata.get("language") or "").strip()
    disposition = stream.disposition
    common = {
        "index": stream.index,
        "kind": stream.type,
        "language": None if language in ("", "und") else language,
        "title": (metadata.get("title") or "").strip() or None,
        "default": bool(disposition & av.stream.Disposition.default),
        "forced": bool(disposition & av.stream.Disposition.forced),
    }
    if stream.type == "attachment":  # fonts: listed, never used
        mimetype = getattr(stream, "mimetype", None) or metadata.get("mimetype") or "unknown"
        name = getattr(stream, "name", None) or metadata.get("filename") or ""
        return Track(**common, codec=mimetype, decodable=False, details=name)
    context = stream.codec_context
    codec = context.codec if context is not None else None
    if codec is not None:
        codec_name = codec.canonical_name  # "ass", not the decoder's name "ssa"
    else:
        codec_name = (context.name if context is not None else None) or "unknown"
    if stream.type == "subtitle":
        image = bool(codec is not None and codec.bitmap_sub)
        return Track(
            **common, codec=codec_name, decodable=codec_name in EMBEDDED_TEXT_CODECS, image=image
        )
    details: list[str] = []
    if stream.type == "video" and context is not None:
        profile = getattr(context, "profile", None)
        details += [profile] if isinstance(profile, str) else []
        details += [f"{context.width}x{context.height}"] if context.width else []
        details += ["cover art"] if disposition & av.stream.Disposition.attached_pic else []
    elif stream.type == "audio" and context is not None:
        details.append(f"{context.channels} ch, {context.sample_rate} Hz")
    return Track(
        **common, codec=codec_name, decodable=decodable(stream), details=", ".join(details)
    )


# --------------------------------------------------------------------------- choosing


def _player_order(track: Track) -> tuple[bool, bool, bool, int]:
    """Sort key, best first: usable, full dialogue (subtitles), default-flagged, then first."""
    return (not track.decodable, track.signs_only, not track.default, track.index)


def _in_language(tracks: Iterable[Track], language: str) -> list[Track]:
    wanted = language_key(language)
    found = []
    for track in tracks:
        try:
            if track.language and language_key(track.language) == wanted:
                found.append(track)
        except ValueError:  # a container's odd language tag matches nothing
            continue
    return found


def _listing(tracks: list[Track]) -> str:
    return ", ".join(track.summary() for track in tracks) or "none"


def choose_audio_track(
    video: str | Path, tracks: list[Track], choice: TrackChoice | None = None
) -> Track | None:
    """The audio track whose voices are cut; None when the file has no audio at all.

    Raises MediaError (one line, listing the audio tracks) when the choice matches nothing.
    """
    video = Path(video)
    choice = TrackChoice.coerce(choice)
    audio = [track for track in tracks if track.kind == "audio"]
    if choice.audio_track is not None:
        chosen, problem = _by_index(tracks, choice.audio_track, "audio")
        if chosen is None:
            raise MediaError(video, f"{problem}, not audio; audio tracks: {_listing(audio)}")
        return chosen
    if choice.audio_language is not None:
        audio = _in_language(audio, choice.audio_language)
        if not audio:
            every = [track for track in tracks if track.kind == "audio"]
            raise MediaError(
                video,
                f"no audio track in language {choice.audio_language!r}; "
                f"audio tracks: {_listing(every)}",
            )
    # Without subtitles' signs rule: only decodability and the default flag matter for audio.
    return min(
        audio,
        key=lambda track: (not track.decodable, not track.default, track.index),
        default=None,
    )


def _by_index(tracks: list[Track], index: int, kind: str) -> tuple[Track | None, str]:
    """The track at stream ``index`` if it is of ``kind``; else None and what is wrong."""
    chosen = next((track for track in tracks if track.index == index), None)
    if chosen is None:
        return None, f"track {index} does not exist"
    if chosen.kind != kind:
        return None, f"track {index} is {chosen.kind}"
    return chosen, ""


def choose_subtitle_track(
    video: str | Path, tracks: list[Track], choice: TrackChoice | None = None
) -> Track | None:
    """The embedded text track to read; None when nothing was asked for and there is none.

    Raises SubtitleError (one line, listing the subtitle tracks) when an explicit choice
    matches nothing, or matches only image subtitles.
    """
    video = Path(video)
    choice = TrackChoice.coerce(choice)
    subtitles = [track for track in tracks if track.kind == "subtitle"]
    if choice.subtitle_track is not None:
        chosen, problem = _by_index(tracks, choice.subtitle_track, "subtitle")
        if chosen is None:
            raise SubtitleError(
                f"{video}: {problem}, not subtitles; subtitle tracks: {_listing(subtitles)}"
            )
        candidates = [chosen]
    elif choice.subtitle_language is not None:
        candidates = _in_language(subtitles, choice.subtitle_language)
        if not candidates:
            raise SubtitleError(
                f"{video}: no subtitle track in language {choice.subtitle_language!r}; "
                f"subtitle tracks: {_listing(subtitles)}"
            )
    else:
        candidates = subtitles
    text = [track for track in candidates if track.text]
    if text:
        return min(text, key=_player_order)
    if not choice.picks_subtitles:
        return None
    raise _unreadable_tracks_error(video, candidates)


def _unreadable_tracks_error(video: Path, tracks: list[Track]) -> SubtitleError:
    images = [track for track in tracks if track.image]
    if images:
        return SubtitleError(
            f"{video}: subtitle track(s) {_listing(images)} are images, which need OCR; "
            "give a text subtitle file (SRT/ASS/VTT) with --subs instead"
        )
    return SubtitleError(
        f"{video}: cannot read subtitle track(s) {_listing(tracks)}; "
        "give a text subtitle file (SRT/ASS/VTT) with --subs instead"
    )


@dataclass(frozen=True)
class SubtitleSource:
    """Where an import's subtitles come from: a file, or a text track inside the video."""

    file: Path | None
    track: Track | None
    reason: str  # why this one, for logs and --list-tracks

    def record(self) -> dict[str, Any]:
        """report.json's account of the subtitles used."""
        if self.track is not None:
            return {
                "source": "embedded",
                "reason": self.reason,
                **self.track.record(),
                "source_line": "the event number in this track",
            }
        return {"source": "file", "reason": self.reason, "path": str(self.file)}


def choose_subtitles(
    video: str | Path,
    tracks: list[Track],
    *,
    given: str | Path | None = None,
    choice: TrackChoice | None = None,
) -> SubtitleSource:
    """Decide where the subtitles come from (see the module's docstring for the order).

    Raises SubtitleError (one line) when there are none usable: a choice that matches
    nothing, image subtitles only, or nothing at all.
    """
    video = Path(video)
    choice = TrackChoice.coerce(choice)
    if given is not None:
        if choice.picks_subtitles:
            raise ValueError(
                "--subs and --subtitle-track/--subtitle-language both choose the subtitles; "
                "give one"
            )
        return SubtitleSource(Path(given), None, "given with --subs")
    if choice.picks_subtitles:
        track = choose_subtitle_track(video, tracks, choice)
        return SubtitleSource(None, track, "chosen with --subtitle-track/--subtitle-language")
    beside = find_subtitles_for(video)
    full_tracks = [track for track in tracks if track.text and not track.signs_only]
    if beside is not None and _forced_tag(video, beside) and full_tracks:
        logger.info("%s: %s is forced (signs) only; reading the embedded track", video, beside)
        beside = None
    if beside is not None:
        embedded = [track for track in tracks if track.text]
        if embedded:
            logger.info(
                "%s: using %s beside it, not its %d text track(s); --subtitle-track picks one",
                video,
                beside.name,
                len(embedded),
            )
        return SubtitleSource(beside, None, "found beside the video")
    track = choose_subtitle_track(video, tracks, choice)
    if track is not None:
        if track.signs_only:
            reason = "the only readable text track, though signs/songs"
        else:
            reason = f"the {'default-flagged ' if track.default else 'first '}full dialogue track"
        return SubtitleSource(None, track, reason)
    unreadable = [track for track in tracks if track.kind == "subtitle"]
    if unreadable:
        raise _unreadable_tracks_error(video, unreadable)
    raise SubtitleError(
        f"{video}: no subtitles given with --subs, none found beside it (looked for the same "
        f"name with {', '.join(SUBTITLE_EXTENSIONS)}) and no embedded text subtitle track in it"
    )


def _forced_tag(video: Path, subtitle_file: Path) -> bool:
    """ "ep01.en.forced.ass" beside "ep01.mkv": signs only, no dialogue."""
    return "forced" in subtitle_file.name[len(video.stem) :].lower()


# --------------------------------------------------------------------------- reading


def read_subtitle_track(
    video: str | Path,
    track: Track,
    *,
    options: SubtitleOptions | Mapping[str, object] | None = None,
    media_duration: float | None = None,
) -> ParsedSubtitles:
    """Demux ``track``'s packets (no decoding) and parse them as `parse_subtitle_track` does.

    Times come from each packet's pts and duration, on the same timeline as the media
    (relative to the container's start time). mov_text's empty samples, which only mark the
    gaps between cues in MP4, are not events. Raises SubtitleError for a track that is not
    a text subtitle track we read.
    """
    video = Path(video)
    if not track.text:
        raise _unreadable_tracks_error(video, [track])
    with open_media(video) as container:
        stream = container.streams[track.index]
        # Only ASS/SSA keep text there (the script header); mov_text keeps binary defaults.
        header = bytes(stream.codec_context.extradata or b"") if track.codec == "ass" else b""
        origin_ms = timeline_origin(container) * 1000
        time_base = stream.time_base
        discard_other_streams(container, stream)
        events: list[TrackEvent] = []
        for packet in demux(video, container, stream):
            payload = bytes(packet)
            if track.codec == "mov_text":
                payload = _mov_text_payload(payload)
                if not payload:
                    continue
            timestamp = packet.pts if packet.pts is not None else packet.dts
            if timestamp is None or not time_base:
                events.append(TrackEvent(None, None, payload))
                continue
            start_ms = round(float(timestamp * time_base) * 1000 - origin_ms)
            end_ms = start_ms + round(float((packet.duration or 0) * time_base) * 1000)
            events.append(TrackEvent(start_ms, end_ms, payload))
    embedded = EmbeddedSubtitles(video, track.label(), track.codec, header, events)
    return parse_subtitle_track(embedded, options=options, media_duration=media_duration)


def _mov_text_payload(sample: bytes) -> bytes:
    """A 3GPP timed-text sample: a 16-bit big-endian text length, the text, then style boxes."""
    if len(sample) < 2:
        return b""
    length = int.from_bytes(sample[:2], "big")
    return sample[2 : 2 + length]


def read_subtitles(
    video: str | Path,
    source: SubtitleSource,
    *,
    options: SubtitleOptions | Mapping[str, object] | None = None,
    media_duration: float | None = None,
) -> ParsedSubtitles:
    """The chosen subtitles, parsed: the file, or the track read out of the video."""
    if source.track is not None:
        return read_subtitle_track(
            video, source.track, options=options, media_duration=media_duration
        )
    assert source.file is not None
    return parse_subtitles(source.file, options=options, media_duration=media_duration)


# --------------------------------------------------------------------------- listing


def track_table(
    video: str | Path,
    tracks: list[Track],
    *,
    given: str | Path | None = None,
    choice: TrackChoice | None = None,
) -> list[str]:
    """What ``import --list-tracks`` prints: one row per stream, marking the audio and
    subtitle track an import with these choices would use, and why; or why it would stop."""
    video = Path(video)
    choice = TrackChoice.coerce(choice)
    notes: list[str] = []
    audio: Track | None = None
    subtitles: SubtitleSource | None = None
    try:
        audio = choose_audio_track(video, tracks, choice)
    except MediaError as error:
        notes.append(f"audio: would stop: {error.reason}")
    try:
        subtitles = choose_subtitles(video, tracks, given=given, choice=choice)
    except ValueError as error:
        notes.append(f"subtitles: would stop: {error}")
    rows = [f"{video}: {len(tracks)} tracks"]
    for track in tracks:
        if track.kind == "attachment":
            rows.append(f"  {track.index:>3}  attachment  {track.codec}  {track.details}")
            continue
        flags = [flag for flag, on in (("default", track.default), ("forced", track.forced)) if on]
        if track.image:
            flags.append("image: needs OCR")
        elif track.kind == "subtitle" and not track.text:
            flags.append("not readable")
        elif not track.decodable and track.kind in ("video", "audio"):
            flags.append("no decoder")
        if track.kind == "subtitle" and track.signs_only:
            flags.append("signs/songs")
        used = ""
        if audio is not None and track.index == audio.index:
            used = "  <- audio used"
        if subtitles is not None and subtitles.track is not None and track == subtitles.track:
            used = f"  <- subtitles used ({subtitles.reason})"
        title = f'"{track.title}"' if track.title else ""
        rows.append(
            f"  {track.index:>3}  {track.kind:<10}  {track.codec:<18} {track.language or '-':<4} "
            f"{title:<24} {', '.join(flags):<24} {track.details}{used}".rstrip()
        )
    if audio is None and not notes:
        notes.append("audio: none in the file")
    if subtitles is not None and subtitles.file is not None:
        notes.append(f"subtitles: {subtitles.file} ({subtitles.reason})")
    return rows + notes
