"""Real-voice episodes: the game-data reader on files built here in the documented layout, the
episode builder on them, the episode table, and (when apt can fetch it) the real game."""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path

import av
import numpy as np
import pysubs2
import pytest

from bench.real_voices.episodes import (
    CHARACTERS,
    EPISODES,
    HERO,
    BuildOptions,
    EpisodeDefinition,
    build_episode,
    game_data,
)
from bench.real_voices.queen import (
    GameDataError,
    ResourceFile,
    decode_speech,
    parse_dialogue,
    read_dialogues,
    segments,
    speech_lines,
)
from importers.pipeline import import_episode

SR = 16000


# ---------------------------------------------------------------------------------------------
# Writers of the documented layouts (the reader's docstring), used only to build test inputs


def _string(text: str, offset: int, align: int) -> bytes:
    """A length byte and the text, padded so the next item starts aligned (offset = where the
    length byte goes, counted inside the data after the 20-byte header)."""
    raw = bytes([len(text)]) + text.encode("latin-1")
    if not text:
        return raw
    end = offset + len(raw)
    return raw + b"\0" * ((-end) % align)


def _sentence_list(entries: list[tuple[int, str]], offset: int) -> bytes:
    out = b""
    for sentence_id, text in entries:
        head = b"\0\0" + struct.pack(">h", sentence_id)
        out += head + _string(text, offset + len(out) + 4, 4)
    return out


def dog_file(
    talk_key: int,
    joe: list[tuple[int, str]],
    person: list[tuple[int, str]],
    first_person: int,
    greetings: tuple[str, str] = ("Hello again.", "Hi."),
) -> bytes:
    """A one-level dialogue file: header, tree, Joe's then the person's sentences, greetings."""
    levels = 1
    tree = bytearray(96 * levels)
    tree[2:4] = struct.pack(">h", first_person)
    joe_at = 32 + 96 * levels
    joe_bytes = _sentence_list(joe, joe_at)
    person_at = joe_at + len(joe_bytes)
    person_bytes = _sentence_list(person, person_at)
    greeting_at = person_at + len(person_bytes)
    first = _string(greetings[0], greeting_at, 2)
    second = _string(greetings[1], greeting_at + len(first), 2)
    header = struct.pack(">5h", levels, 1, talk_key, len(joe), len(person)) + b"\0" * 12
    header += struct.pack(">3H", person_at, 0, greeting_at) + b"\0" * 4
    body = header + bytes(tree) + joe_bytes + person_bytes + first + second
    return b"\0" * 20 + body


def resource_file(path: Path, entries: dict[str, bytes], compression: int) -> Path:
    """A ``QTBL`` file holding ``entries`` (names sorted, as the game's table is)."""
    names = sorted(entries)
    table_size = 15 + 21 * len(names)
    table, data, offset = b"", b"", table_size
    for name in names:
        blob = entries[name]
        table += name.encode("ascii").ljust(12, b"\0") + bytes([1])
        table += struct.pack(">II", offset, len(blob))
        data += blob
        offset += len(blob)
    head = b"QTBL" + b"CEM10\0" + b"\0\0" + bytes([compression]) + struct.pack(">H", len(names))
    path.write_bytes(head + table + data)
    return path


def voice(frequency: float, seconds: float, sample_rate: int = SR) -> np.ndarray:
    """A vowel-like harmonic tone with a syllable envelope: non-silent, and distinct by pitch."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = sum(np.sin(2 * np.pi * frequency * k * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.3 * tone * envelope / 2.3).astype(np.float32)


def raw_sb(samples: np.ndarray) -> bytes:
    """An uncompressed .SB: 2 bytes, version 104 (little-endian), header to 110 bytes, u8 PCM."""
    pcm = np.clip(np.round(samples * 127 + 128), 0, 255).astype(np.uint8)
    return b"\0\0" + struct.pack("<H", 104) + b"\0" * 106 + pcm.tobytes()


def flac_sb(samples: np.ndarray, sample_rate: int = 22050) -> bytes:
    """A compressed build's .SB: a whole FLAC stream."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=sample_rate, layout="mono")
        pcm = np.round(samples * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


JOE_SENTENCES = [(0, "Hi Bob.*02"), (6, "Got any planes?*03"), (7, "Bye.*FLSee you*XY00(237,112)")]
BOB_SENTENCES = [(1, "Howdy!*02What'll it be?*03"), (6, "Nope.*04"), (7, "So long.*02")]


@pytest.fixture(scope="module")
def game(tmp_path_factory) -> dict[str, Path]:
    """Two small resource files: raw 8-bit speech (compression 0) and FLAC (compression 3)."""
    folder = tmp_path_factory.mktemp("queen")
    dog = dog_file(6, JOE_SENTENCES, BOB_SENTENCES, first_person=1)
    made = {}
    for codec, compression, encode, rate in (
        ("raw", 0, raw_sb, 11025),
        ("flac", 3, flac_sb, 22050),
    ):
        speech = {
            "06SSSSJ1.SB": voice(120, 0.9, rate),  # Joe's opening line
            "060001P1.SB": voice(220, 0.7, rate),
            "060001P2.SB": voice(220, 1.1, rate),
            "060006J1.SB": voice(120, 1.2, rate),
            "060006P1.SB": voice(220, 0.6, rate),
            "060007J1.SB": voice(120, 0.5, rate),
            "060007J2.SB": voice(120, 0.6, rate),
            "060007P1.SB": voice(220, 0.8, rate),
            "06XXXXP1.SB": voice(220, 0.8, rate),
        }
        entries = {name: encode(samples) for name, samples in speech.items()}
        entries["BOB1.DOG"] = dog
        made[codec] = resource_file(folder / f"{codec}.1c", entries, compression)
    return made


# ---------------------------------------------------------------------------------------------
# Reader


@pytest.mark.parametrize("codec", ["raw", "flac"])
def test_resource_table_lists_entries_and_reads_their_bytes(game, codec):
    resources = ResourceFile(game[codec])
    assert resources.version == "CEM10"
    assert resources.codec == codec
    assert resources.names(".DOG") == ["BOB1.DOG"]
    assert len(resources.names(".SB")) == 9
    assert resources.read("bob1.dog")[:20] == b"\0" * 20


@pytest.mark.parametrize("codec", ["raw", "flac"])
def test_speech_decodes_to_16k_mono_with_the_tone_it_was_made_from(game, codec):
    resources = ResourceFile(game[codec])
    joe = resources.speech("060006J1.SB")
    bob = resources.speech("060001P2.SB")
    assert joe.dtype == np.float32
    assert abs(len(joe) / SR - 1.2) < 0.06
    assert abs(len(bob) / SR - 1.1) < 0.06

    def pitch(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        return float(np.argmax(spectrum) * SR / len(x))

    assert abs(pitch(joe) - 120) < 6
    assert abs(pitch(bob) - 220) < 6


def test_dialogue_sentences_in_spoken_order_with_heads_and_slots(game):
    resources = ResourceFile(game["raw"])
    dialogue = parse_dialogue("BOB1.DOG", resources.read("BOB1.DOG"))
    assert dialogue.talk_key == 6
    assert [(s.slot, s.head) for s in dialogue.sentences] == [
        ("J", "SSSS"),
        ("P", "0001"),
        ("J", "0006"),
        ("P", "0006"),
        ("J", "0007"),
        ("P", "0007"),
        ("J", "XXXX"),
        ("P", "XXXX"),
    ]
    assert dialogue.sentences[1].text == "Howdy!*02What'll it be?*03"
    assert dialogue.sentences[-1].text == "Hello again."
    assert dialogue.sentences[-2].text == "Hi."


def test_segments_split_at_commands_and_skip_coordinates():
    assert segments("Howdy!*02What'll it be?*03") == ["Howdy!", "What'll it be?"]
    assert segments("*19*18Hello.") == ["", "", "Hello."]
    assert segments("Bye.*FLSee you*XY00(237,112)") == ["Bye.", "See you"]
    assert segments("Plain") == ["Plain"]


def test_speech_lines_pair_each_voice_file_with_its_segment_text(game):
    resources = ResourceFile(game["raw"])
    dialogue = parse_dialogue("BOB1.DOG", resources.read("BOB1.DOG"))
    lines = list(speech_lines(dialogue, frozenset(resources.names(".SB"))))
    assert [(line.resource, line.slot, line.text) for line in lines] == [
        ("06SSSSJ1.SB", "J", "Hi Bob."),
        ("060001P1.SB", "P", "Howdy!"),
        ("060001P2.SB", "P", "What'll it be?"),
        ("060006J1.SB", "J", "Got any planes?"),
        ("060006P1.SB", "P", "Nope."),
        ("060007J1.SB", "J", "Bye."),
        ("060007J2.SB", "J", "See you"),
        ("060007P1.SB", "P", "So long."),
        # Joe's greeting "Hi." has no voice file here: skipped, not guessed.
        ("06XXXXP1.SB", "P", "Hello again."),
    ]


def test_not_a_resource_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "queen.1c"
    bad.write_bytes(b"RIFF" + b"\0" * 40)
    with pytest.raises(GameDataError, match=r"queen\.1c.*no QTBL"):
        ResourceFile(bad)


def test_table_running_past_the_file_is_named(tmp_path, game):
    data = bytearray(game["raw"].read_bytes())
    cut = tmp_path / "cut.1c"
    cut.write_bytes(bytes(data[:-50]))
    with pytest.raises(GameDataError, match=r"cut\.1c: entry \d+ \(.*\) runs past the end"):
        ResourceFile(cut)


def test_cut_short_dialogue_names_the_file_and_the_dialogue(tmp_path):
    broken = resource_file(tmp_path / "q.1c", {"BOB1.DOG": b"\0" * 30}, compression=1)
    with pytest.raises(GameDataError, match=r"q\.1c: BOB1\.DOG: dialogue header cut short"):
        read_dialogues(ResourceFile(broken))


def test_undecodable_speech_names_the_resource():
    with pytest.raises(GameDataError, match=r"X\.SB: cannot decode mp3"):
        decode_speech(b"not an mp3 stream at all" * 4, "mp3", SR, name="X.SB")


# ---------------------------------------------------------------------------------------------
# Episodes


def test_episode_from_the_reader_has_truth_subtitles_and_video(game, tmp_path):
    resources = ResourceFile(game["flac"])
    files = build_episode(
        resources,
        "test",
        tmp_path / "ep",
        definition=EpisodeDefinition("evaluation", ("BOB1.DOG",)),
        options=BuildOptions(bed_share=1.0),
    )
    with files.truth.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["index", "start", "end", "speaker", "character", "condition"]
    assert [row["character"] for row in rows] == [
        HERO,
        "Bob",
        "Bob",
        HERO,
        "Bob",
        HERO,
        HERO,
        "Bob",
        "Bob",
    ]
    assert all(row["speaker"] == row["character"] for row in rows)
    assert all(row["condition"].split(";")[0].endswith("db") for row in rows)
    subs = pysubs2.load(str(files.subtitles))
    assert [event.plaintext for event in subs][:3] == ["Hi Bob.", "Howdy!", "What'll it be?"]
    assert len(subs) == len(rows) == files.lines == 9
    starts = [float(row["start"]) for row in rows]
    ends = [float(row["end"]) for row in rows]
    assert all(a < b for a, b in zip(starts, ends, strict=True))
    assert all(end <= start for end, start in zip(ends, starts[1:], strict=False))
    with av.open(str(files.video)) as container:
        kinds = {stream.type for stream in container.streams}
        assert kinds == {"video", "audio"}
        audio = np.concatenate(
            [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
        )
    assert len(audio) / SR >= ends[-1]
    # Speech sits under each cue: louder inside the first cue than in the lead-in before it.
    first = audio[int(starts[0] * SR) : int(ends[0] * SR)]
    lead_in = audio[: int(0.4 * SR)]
    assert np.sqrt(np.mean(first**2)) > 3 * np.sqrt(np.mean(lead_in**2)) + 1e-4


def test_max_lines_keeps_whole_lines_in_order(game, tmp_path):
    resources = ResourceFile(game["raw"])
    files = build_episode(
        resources,
        "short",
        tmp_path / "short",
        definition=EpisodeDefinition("training", ("BOB1.DOG",)),
        options=BuildOptions(max_lines=4, bed_share=0.0),
    )
    assert files.lines == 4
    assert files.truth.read_text().count("two_on_screen") == 4


def test_episode_table_splits_by_dialogue_and_names_every_person():
    seen: dict[str, str] = {}
    for name, definition in EPISODES.items():
        for dialogue in definition.dialogues:
            assert dialogue not in seen, f"{dialogue} in {seen.get(dialogue)} and {name}"
            seen[dialogue] = name
            assert dialogue in CHARACTERS
    assert {definition.split for definition in EPISODES.values()} == {"training", "evaluation"}


# ---------------------------------------------------------------------------------------------
# The real game, when Debian's archive is reachable


@pytest.fixture(scope="module")
def real_game() -> Path:
    try:
        return game_data()
    except (RuntimeError, OSError) as error:
        pytest.skip(f"flight-of-the-amazon-queen not downloadable here: {error}")


@pytest.mark.slow
@pytest.mark.game_data
def test_real_game_builds_a_short_episode_of_real_speech(real_game, tmp_path):
    resources = ResourceFile(real_game)
    assert resources.version == "CEM10"
    assert len(resources.names(".SB")) > 6000
    assert len(resources.names(".DOG")) > 60
    files = build_episode(
        resources, "queen-return", tmp_path / "ep", options=BuildOptions(max_lines=36)
    )
    with files.truth.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 36
    assert len({row["character"] for row in rows}) >= 2
    detail = json.loads(files.spec.read_text())["lines_detail"]
    assert all(line["text"] for line in detail)
    for line in detail:
        clip = resources.speech(line["resource"])
        assert len(clip) > 0.2 * SR, line["resource"]
        assert float(np.sqrt(np.mean(clip**2))) > 0.01, line["resource"]
    # The normal importer cuts one clip per line, and each holds the actor's voice.
    imported = import_episode(files.video, subtitles=files.subtitles, out_dir=tmp_path / "imp")
    assert len(imported.tasks) == 36
    for wav in sorted((imported.episode_dir / "audio").glob("*.wav")):
        with av.open(str(wav)) as container:
            audio = np.concatenate(
                [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
            )
        if audio.dtype.kind == "i":
            audio = audio.astype(np.float32) / 32768.0
        assert float(np.sqrt(np.mean(audio**2))) > 0.01, wav
