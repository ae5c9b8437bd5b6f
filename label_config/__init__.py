"""The Label Studio labelling config for "who speaks this line?", and the helpers that edit it.

The config (``speaker.xml``) is one task per subtitle line: the line's text, its audio clip and a
frame, a ``speaker`` drop-down, a ``new_speaker`` box for a name that is not listed yet, and
``line_flags`` for lines that are not one speaker's speech.

Why the speaker list is edited only by appending: Label Studio accepts a config edit that removes
or renames a choice, and every annotation that used it then fails validation. So the backend only
ever adds names (:func:`append_speakers`), and it must add a name *before* it pushes predictions
that use it, because Label Studio silently drops predictions whose choice is not in the config.

Why ``Unknown`` is always there: a ``<Choices>`` tag with no ``<Choice>`` is invalid in Label
Studio, so the shipped config always carries the choice :data:`UNKNOWN_CHOICE`. It is
a real, selectable answer ("I cannot tell who speaks this"), which is also what the backend's
naming step calls a line it abstains on.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from importlib import resources
from typing import Any
from xml.parsers import expat
from xml.sax.saxutils import escape

__all__ = [
    "AUDIO_OBJECT",
    "FLAGS_CONTROL",
    "FLAG_HOTKEYS",
    "FLAG_NOT_SPEECH",
    "FLAG_TWO_SPEAKERS",
    "NEW_SPEAKER_CONTROL",
    "NUMBERED_SPEAKER_PREFIX",
    "SPEAKER_CONTROL",
    "UNKNOWN_CHOICE",
    "append_speakers",
    "clean_speaker_name",
    "flags_from_annotation",
    "is_unnamed_speaker",
    "load_config",
    "speaker_from_annotation",
    "speaker_prediction",
    "speakers_in_config",
]

SPEAKER_CONTROL = "speaker"
NEW_SPEAKER_CONTROL = "new_speaker"
FLAGS_CONTROL = "line_flags"
AUDIO_OBJECT = "audio"
UNKNOWN_CHOICE = "Unknown"
FLAG_TWO_SPEAKERS = "Two speakers"
FLAG_NOT_SPEECH = "Not speech"
FLAG_HOTKEYS = {FLAG_TWO_SPEAKERS: "shift+t", FLAG_NOT_SPEECH: "shift+n"}
"""The flags' fixed hotkeys (set in ``speaker.xml``). Label Studio gives every choice without a
hotkey the next free key of ``1234567890qwet...`` in config order, so unset flag keys moved
([9]/[0], then [0]/[q], then [q]/[w]) each time the backend appended a name. Keys an explicit
``hotkey`` holds are skipped by that automatic assignment, and ``shift+`` letters are free in
Label Studio 1.23's own keymap."""
NUMBERED_SPEAKER_PREFIX = "Speaker "
"""How the backend calls a cluster nobody has named yet: ``Speaker 7``."""
_NUMBERED_SPEAKER = re.compile(re.escape(NUMBERED_SPEAKER_PREFIX) + r"\d+")

_CONFIG_FILE = "speaker.xml"
# Characters XML 1.0 cannot carry at all, not even escaped.
_XML_INVALID = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
MAX_SPEAKER_NAME = 200
"""Characters a speaker name may have: a name is a label in a drop-down, not a document."""
# Explicit bidi controls: U+202E turns "Ann\u202eoJ" into a name that reads differently on
# screen than in the file, in every list, export and file name it reaches.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def clean_speaker_name(name: str) -> str:
    """Collapse whitespace, so a name typed with a trailing newline matches the listed choice.

    Label Studio compares choice values exactly; every helper here cleans names the same way so a
    name appended to the config and the same name in a prediction cannot drift apart.
    """
    cleaned = " ".join(str(name).split())
    shown = repr(cleaned[:40]) + ("..." if len(cleaned) > 40 else "")
    if not cleaned:
        raise ValueError(f"speaker name {name!r} is empty")
    if len(cleaned) > MAX_SPEAKER_NAME:
        raise ValueError(
            f"speaker name {shown} has {len(cleaned)} characters; at most {MAX_SPEAKER_NAME}"
        )
    if _XML_INVALID.search(cleaned):
        raise ValueError(f"speaker name {shown} contains a character XML cannot hold")
    for character in cleaned:
        if character in _BIDI_CONTROLS or unicodedata.category(character) == "Cc":
            raise ValueError(
                f"speaker name {shown} contains the control character U+{ord(character):04X}"
            )
    return cleaned


def is_unnamed_speaker(name: str | None) -> bool:
    """Whether ``name`` stands for nobody in particular: the "Unknown" choice, or a backend
    placeholder for an unnamed cluster (``Speaker 7``). Such lines must not train a voice."""
    return name is not None and (
        name == UNKNOWN_CHOICE or _NUMBERED_SPEAKER.fullmatch(name) is not None
    )


def load_config(speakers: Sequence[str] = ()) -> str:
    """The shipped config with ``speakers`` listed after ``Unknown``, in the order given."""
    template = resources.files(__name__).joinpath(_CONFIG_FILE).read_text(encoding="utf-8")
    return append_speakers(template, speakers)


def speakers_in_config(xml: str) -> list[str]:
    """Every choice of the ``speaker`` control, in config order (``Unknown`` included)."""
    names, _ = _scan_speaker_choices(xml.encode("utf-8"))
    return names


def append_speakers(xml: str, names: Sequence[str]) -> str:
    """Add the names the config does not list yet at the end of the ``speaker`` choices.

    Existing choices are never removed or reordered, and the rest of the text (comments, layout,
    a user's own edits) is kept byte for byte, because the result is sent back to a live project.
    Appending names that are all listed already returns ``xml`` unchanged.
    """
    if isinstance(names, str):
        raise TypeError("append_speakers() takes a sequence of names, not a single string")
    data = xml.encode("utf-8")
    existing, close_at = _scan_speaker_choices(data)
    seen = set(existing)
    new_names: list[str] = []
    for name in names:
        cleaned = clean_speaker_name(name)
        if cleaned not in seen:
            seen.add(cleaned)
            new_names.append(cleaned)
    if not new_names:
        return xml

    # Match the surrounding indentation when the closing tag sits on its own line.
    line_start = data.rfind(b"\n", 0, close_at) + 1
    closing_indent = data[line_start:close_at]
    if closing_indent.strip():
        block = "".join(_choice_tag(name) for name in new_names).encode("utf-8")
    else:
        indent = closing_indent.decode("utf-8")
        block = "".join(f"  {_choice_tag(name)}\n{indent}" for name in new_names).encode("utf-8")
    return (data[:close_at] + block + data[close_at:]).decode("utf-8")


def speaker_prediction(speaker: str, *, score: float | None = None) -> list[dict[str, Any]]:
    """The ``result`` list of a prediction that picks ``speaker`` for the line."""
    # ``value`` first: the Data Manager's "Prediction results" column shows the result as text,
    # cut after a few lines, so the speaker's name is what an annotator sees in the task list.
    region: dict[str, Any] = {
        "value": {"choices": [clean_speaker_name(speaker)]},
        "from_name": SPEAKER_CONTROL,
        "to_name": AUDIO_OBJECT,
        "type": "choices",
    }
    if score is not None:
        try:
            probability = float(score)
        except (TypeError, ValueError):
            probability = math.nan
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"prediction score {score!r} is not a probability in [0, 1]")
        region["score"] = probability
    return [region]


def speaker_from_annotation(result: Sequence[dict[str, Any]]) -> str | None:
    """The speaker an annotation names: a typed new name wins over the drop-down choice.

    An annotator types a name exactly when the list lacks it, while the drop-down may still hold
    the pre-filled prediction they did not touch; so the typed name is the deliberate answer.
    None when the annotation names nobody.
    """
    chosen: str | None = None
    for region in result:
        value = region.get("value") or {}
        if region.get("from_name") == NEW_SPEAKER_CONTROL:
            for text in value.get("text") or []:
                if str(text).strip():
                    return clean_speaker_name(text)
        elif region.get("from_name") == SPEAKER_CONTROL and value.get("choices"):
            chosen = clean_speaker_name(value["choices"][0])
    return chosen


def flags_from_annotation(result: Sequence[dict[str, Any]]) -> list[str]:
    """The ``line_flags`` an annotation ticked ("Two speakers", "Not speech"), in config order."""
    flags: list[str] = []
    for region in result:
        if region.get("from_name") == FLAGS_CONTROL:
            flags.extend(str(flag) for flag in (region.get("value") or {}).get("choices") or [])
    return flags


def _choice_tag(name: str) -> str:
    return f'<Choice value="{escape(name, {chr(34): "&quot;"})}"/>'


def _scan_speaker_choices(data: bytes) -> tuple[list[str], int]:
    """The speaker choices and the byte offset of the ``</Choices>`` that closes them.

    expat reports the exact byte offset of every tag, which lets :func:`append_speakers` insert
    text without re-serialising (and so reformatting) the whole config.
    """
    parser = expat.ParserCreate()
    names: list[str] = []
    depth = 0
    speaker_depth: int | None = None
    close_at: int | None = None

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth, speaker_depth
        depth += 1
        if close_at is not None:
            return
        if speaker_depth is None:
            if tag == "Choices" and attrs.get("name") == SPEAKER_CONTROL:
                speaker_depth = depth
        elif tag == "Choice" and "value" in attrs:
            names.append(attrs["value"])

    def end(tag: str) -> None:
        nonlocal depth, speaker_depth, close_at
        if speaker_depth == depth:
            close_at = parser.CurrentByteIndex
            speaker_depth = None
        depth -= 1

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise ValueError(f"label config is not well-formed XML: {error}") from None
    if close_at is None:
        raise ValueError(f'label config has no <Choices name="{SPEAKER_CONTROL}"> control')
    # expat reports a self-closing <Choices/> at an offset that is not an end tag.
    if not data.startswith(b"</Choices", close_at):
        raise ValueError(
            f'label config\'s <Choices name="{SPEAKER_CONTROL}"> is empty: '
            "Label Studio needs at least one <Choice>"
        )
    return names, close_at
