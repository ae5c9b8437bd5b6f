"""Read the speech, its subtitle text and its speaker from Flight of the Amazon Queen's data.

Debian's ``flight-of-the-amazon-queen`` package ships the CD talkie as one ScummVM "rebuilt"
resource file, ``queen.1c``. Its layout, learned from reading ScummVM's public engine sources
(``engines/queen/resource.cpp``, ``sound.cpp``, ``talk.cpp``) and written here in our own words:

Resource file (all integers big-endian)::

    "QTBL"            4 bytes  magic
    version           6 bytes  NUL-padded, e.g. "CEM10" (C = CD talkie, E = English)
    (unused)          2 bytes
    compression       1 byte   speech codec: 0 raw .SB, 1 MP3, 2 Ogg Vorbis, 3 FLAC
    entry count       uint16
    entries           count x 21 bytes: name (12, NUL-padded, upper case), bundle (1),
                      offset (uint32, from the start of the file), size (uint32)

Speech resources are ``<key:2 dec><head:4 hex><slot:1><segment:1 hex>.SB``, for example
``020009P2.SB``: dialogue with talk key 2, sentence id 0x9, spoken by slot ``P`` (the person Joe
talks to) or ``J`` (Joe, the hero), second segment. ``SSSS`` as head is Joe's opening line and
``XXXX`` the greeting pair used when Joe has talked to that person before. With compression 0
an .SB is a small header (2 bytes, a little-endian version 104 or 110 giving a 110- or 122-byte
header) before unsigned 8-bit PCM at 11025 Hz; otherwise it is a complete MP3/Ogg/FLAC stream.

Dialogue files (``*.DOG``) hold the sentences. After a 20-byte header that the game skips::

    0   levels (int16, negative = the player cannot leave)   2  unique key   4  talk key
    6   Joe sentence count   8  person sentence count   10..21  game-state fields
    22  offset of the person's sentences   24  cutaway   26  offset of the greeting pair
    32  dialogue tree: levels x 6 nodes x 4 (pad, value) int16 pairs; node (1, 0)'s value is
        the person's first sentence id
    32 + 96 * levels   Joe's sentences

A sentence list entry is 2 unused bytes, an int16 id, then a string: one length byte and the
characters, the next entry starting at the following multiple of 4 (of the offset inside the
data after the header). The greeting pair is two such strings aligned to 2: the person's, then
Joe's. A string is spoken in segments split at ``*`` commands (``*FL``, ``*02``; ``*XY`` carries
11 more characters of coordinates); segment k (1-based, counting every command) plays voice
file ``...<slot><k>.SB`` when that file exists.
"""

from __future__ import annotations

import io
import logging
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

MAGIC = b"QTBL"
HEADER_SIZE = 15
"""Magic, version, unused, compression byte, entry count."""
ENTRY_SIZE = 21
DOG_HEADER_SIZE = 20
RAW_SB_RATE = 11025
RAW_SB_HEADERS = {104: 110, 110: 122}
COMPRESSION_CODECS = {0: "raw", 1: "mp3", 2: "ogg", 3: "flac"}
SLOT_JOE, SLOT_PERSON = "J", "P"
_COMMAND_EXTRA = {"XY": 11}
"""Characters a command takes beyond its two letters (``*XY00(237,112)``)."""


class GameDataError(ValueError):
    """The game data is not in the layout this reader knows; the message names the file."""


@dataclass(frozen=True)
class ResourceEntry:
    """One resource of the table: where its bytes lie in the file."""

    name: str
    bundle: int
    offset: int
    size: int


class ResourceFile:
    """The table of a ``queen.1c`` file, and random access to each resource's bytes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as stream:
                head = stream.read(HEADER_SIZE)
                if len(head) < HEADER_SIZE or head[:4] != MAGIC:
                    raise GameDataError(f"{self.path}: not a rebuilt Queen resource file (no QTBL)")
                self.version = head[4:10].rstrip(b"\0").decode("ascii", "replace")
                self.compression = head[12]
                (count,) = struct.unpack(">H", head[13:15])
                table = stream.read(count * ENTRY_SIZE)
        except OSError as error:
            raise GameDataError(f"{self.path}: cannot read ({error.strerror})") from None
        if len(table) < count * ENTRY_SIZE:
            raise GameDataError(f"{self.path}: table of {count} entries is cut short")
        if self.compression not in COMPRESSION_CODECS:
            raise GameDataError(f"{self.path}: unknown speech compression {self.compression}")
        size = self.path.stat().st_size
        self.entries: dict[str, ResourceEntry] = {}
        for number in range(count):
            raw = table[number * ENTRY_SIZE : (number + 1) * ENTRY_SIZE]
            name = raw[:12].split(b"\0", 1)[0].decode("ascii", "replace").upper()
            offset, length = struct.unpack(">II", raw[13:21])
            if offset + length > size:
                raise GameDataError(
                    f"{self.path}: entry {number} ({name}) runs past the end of the file"
                )
            self.entries[name] = ResourceEntry(name, raw[12], offset, length)

    @property
    def codec(self) -> str:
        """``raw``, ``mp3``, ``ogg`` or ``flac``: how every speech resource is encoded."""
        return COMPRESSION_CODECS[self.compression]

    def names(self, suffix: str = "") -> list[str]:
        """Resource names ending in ``suffix`` (e.g. ``.DOG``), sorted."""
        return sorted(name for name in self.entries if name.endswith(suffix.upper()))

    def read(self, name: str) -> bytes:
        entry = self.entries.get(name.upper())
        if entry is None:
            raise GameDataError(f"{self.path}: no resource {name}")
        with self.path.open("rb") as stream:
            stream.seek(entry.offset)
            return stream.read(entry.size)

    def speech(self, name: str, sample_rate: int = 16000) -> np.ndarray:
        """The speech resource ``name`` as ``(num_samples,) float32`` mono at ``sample_rate``."""
        return decode_speech(self.read(name), self.codec, sample_rate, name=f"{self.path}:{name}")


def decode_speech(data: bytes, codec: str, sample_rate: int, *, name: str) -> np.ndarray:
    """Decode one speech resource to ``(num_samples,) float32`` mono at ``sample_rate``.

    Raw .SB data is unsigned 8-bit PCM behind a versioned header; the compressed builds store
    whole MP3/Ogg/FLAC streams, which PyAV's FFmpeg decodes.
    """
    if codec == "raw":
        if len(data) < 4:
            raise GameDataError(f"{name}: .SB header cut short")
        (version,) = struct.unpack("<H", data[2:4])
        skip = RAW_SB_HEADERS.get(version, RAW_SB_HEADERS[104])
        pcm = (np.frombuffer(data[skip:], dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        return _resample(pcm, RAW_SB_RATE, sample_rate)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), format=codec) as container:
            for frame in container.decode(audio=0):
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except (av.error.FFmpegError, ValueError) as error:
        raise GameDataError(f"{name}: cannot decode {codec} speech ({error})") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)


def _resample(pcm: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear resampling: enough for 11 kHz speech going to a 16 kHz embedder."""
    if rate == target or not len(pcm):
        return pcm.astype(np.float32)
    count = round(len(pcm) * target / rate)
    times = np.arange(count) * (rate / target)
    return np.interp(times, np.arange(len(pcm)), pcm).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Dialogues


@dataclass(frozen=True)
class Sentence:
    """A sentence of a dialogue file: who says it (slot), its voice-file head, its raw text."""

    slot: str
    head: str
    """Four characters: the id in upper-case hex, or ``SSSS``/``XXXX`` for the greetings."""
    text: str


@dataclass(frozen=True)
class Dialogue:
    """One ``*.DOG`` file: its talk key and sentences in a plausible spoken order."""

    name: str
    talk_key: int
    sentences: tuple[Sentence, ...]


@dataclass(frozen=True)
class SpeechLine:
    """One voice file with the subtitle text shown while it plays."""

    resource: str
    dialogue: str
    slot: str
    text: str


def parse_dialogue(name: str, data: bytes) -> Dialogue:
    """Parse a ``*.DOG`` resource (header included) into its sentences.

    Order: Joe's opening line, the person's first sentence, then each of Joe's choices followed
    by the person's answer to it, then the person's remaining sentences, then the greeting pair.
    The game walks a tree; this order is one path a player could hear, close enough for a
    benchmark whose unit is the line.
    """
    body = data[DOG_HEADER_SIZE:]
    if len(body) < 32:
        raise GameDataError(f"{name}: dialogue header cut short")
    try:
        levels, _, talk_key, joe_count, person_count = struct.unpack(">5h", body[:10])
        person_at, _, greeting_at = struct.unpack(">3H", body[22:28])
        levels = abs(levels)
        (first_person,) = struct.unpack(">h", body[32 + 2 : 32 + 4]) if levels else (0,)
        joe = _sentence_list(body, 32 + 96 * levels, joe_count)
        person = _sentence_list(body, person_at, person_count)
        person_greeting, offset = _string(body, greeting_at, 2)
        joe_greeting, _ = _string(body, offset, 2)
    except (struct.error, IndexError):
        raise GameDataError(f"{name}: dialogue data cut short") from None
    answers = dict(person)
    sentences: list[Sentence] = []
    used: set[int] = set()
    if joe and joe[0][0] == 0:
        sentences.append(Sentence(SLOT_JOE, "SSSS", joe[0][1]))
    if first_person in answers:
        sentences.append(Sentence(SLOT_PERSON, _head(first_person), answers[first_person]))
        used.add(first_person)
    for sentence_id, text in joe:
        if sentence_id <= 0:
            continue
        sentences.append(Sentence(SLOT_JOE, _head(sentence_id), text))
        if sentence_id in answers and sentence_id not in used:
            sentences.append(Sentence(SLOT_PERSON, _head(sentence_id), answers[sentence_id]))
            used.add(sentence_id)
    for sentence_id, text in person:
        if sentence_id > 0 and sentence_id not in used:
            sentences.append(Sentence(SLOT_PERSON, _head(sentence_id), text))
            used.add(sentence_id)
    sentences.append(Sentence(SLOT_JOE, "XXXX", joe_greeting))
    sentences.append(Sentence(SLOT_PERSON, "XXXX", person_greeting))
    return Dialogue(name=name, talk_key=talk_key, sentences=tuple(sentences))


def _head(sentence_id: int) -> str:
    return f"{sentence_id:04X}"


def _string(body: bytes, offset: int, align: int) -> tuple[str, int]:
    """A length-prefixed string at ``offset``; returns it and the aligned offset after it."""
    length = body[offset]
    offset += 1
    if not length:
        return "", offset
    text = body[offset : offset + length].decode("latin-1")
    return text, (offset + length + align - 1) & ~(align - 1)


def _sentence_list(body: bytes, offset: int, count: int) -> list[tuple[int, str]]:
    out = []
    for _ in range(max(count, 0)):
        (sentence_id,) = struct.unpack(">h", body[offset + 2 : offset + 4])
        text, offset = _string(body, offset + 4, 4)
        out.append((sentence_id, text))
    return out


def segments(text: str) -> list[str]:
    """The spoken segments of a sentence, split at ``*`` commands, commands removed.

    Segment k (0-based) plays voice file number k + 1; empty segments keep their number.
    """
    out: list[str] = []
    start = index = 0
    while index < len(text):
        if text[index] == "*":
            out.append(text[start:index])
            command = text[index + 1 : index + 3]
            index += 3 + _COMMAND_EXTRA.get(command, 0)
            start = index
        else:
            index += 1
    if start < len(text):
        out.append(text[start:])
    return out


def speech_lines(dialogue: Dialogue, available: set[str] | frozenset[str]) -> Iterator[SpeechLine]:
    """Every segment of the dialogue that has a voice file in ``available``, in order.

    A ``0`` as a whole sentence means "nothing to say" in these files, and is skipped.
    """
    for sentence in dialogue.sentences:
        if sentence.text.strip() in ("", "0"):
            continue
        prefix = f"{dialogue.talk_key:02d}{sentence.head}{sentence.slot}"
        for number, text in enumerate(segments(sentence.text), start=1):
            resource = f"{prefix}{number:X}.SB"
            if resource in available and text.strip():
                yield SpeechLine(resource, dialogue.name, sentence.slot, _clean(text))


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def read_dialogues(resources: ResourceFile, names: Sequence[str] | None = None) -> list[Dialogue]:
    """Parse the named ``*.DOG`` files (default: all of them)."""
    chosen = names if names is not None else resources.names(".DOG")
    dialogues = []
    for name in chosen:
        try:
            dialogues.append(parse_dialogue(name, resources.read(name)))
        except GameDataError as error:
            message = str(error)
            if not message.startswith(str(resources.path)):
                message = f"{resources.path}: {message}"
            raise GameDataError(message) from None
    return dialogues
