"""Exporters on real files: tagged SRT/ASS read back with pysrt/pysubs2, the CSV, the clip
dataset from a really imported episode, and Label Studio export parsing."""

from __future__ import annotations

import csv
import subprocess
import sys
import wave
from dataclasses import replace
from pathlib import Path

import pysrt
import pysubs2
import pytest

from exporters import SpeakerLine
from exporters.clip_dataset import METADATA_COLUMNS, safe_path_names, write_clip_dataset
from exporters.label_studio_export import lines_from_tasks, media_path, original_subtitles
from exporters.table import COLUMNS, write_table
from exporters.tagged_subtitles import write_tagged_ass, write_tagged_srt
from importers.pipeline import ImportResult, import_episode
from importers.subtitles import SubtitleError
from importers.tasks import LOCAL_FILES_PREFIX

REPO = Path(__file__).resolve().parents[1]

# Added to the generated ASS so the export must keep what the importer leaves out: a second
# style, a comment, a sign (not speech, so not a task) and a layered copy of cue 3.
EXTRA_STYLE = (
    "Style: Sign,Arial,18,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,2,"
    "2,8,10,10,10,1"
)
EXTRA_EVENTS = [
    "Comment: 0,0:00:00.00,0:00:01.00,Default,,0,0,0,,timing checked",
    "Dialogue: 0,0:00:00.50,0:00:01.50,Sign,,0,0,0,,{\\an8}SCHOOL",
]


def make_imported_episode(
    folder: Path, *, out_dir: Path | None = None, document_root: Path | None = None
) -> ImportResult:
    """The ``tiny`` benchmark episode (ASS, CRLF, with EXTRA_*) made in ``folder`` and imported
    into ``out_dir`` (default ``folder/import``) with media URLs under ``document_root``."""
    source = folder / "source"
    command = [sys.executable, "-m", "bench.make_episode", "--preset", "tiny", "--seed", "1"]
    subprocess.run(
        [*command, "--format", "ass", "--no-mbrola", "--out", str(source)],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    ass = source / "episode.ass"
    lines = ass.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Style: Default"))
    lines.insert(at + 1, EXTRA_STYLE)
    at = next(i for i, line in enumerate(lines) if line.startswith("Format: Layer"))
    values = lines[at + 3].removeprefix("Dialogue: 0,").split(",", 8)
    layer = "Dialogue: 1," + ",".join(values[:8]) + ",{\\blur3}" + values[8]
    lines[at + 1 : at + 1] = [*EXTRA_EVENTS, layer]
    ass.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return import_episode(
        source / "episode.mp4",
        out_dir=out_dir or folder / "import",
        options={"document_root": document_root} if document_root else None,
    )


def truth_characters(result: ImportResult) -> dict[int, str]:
    truth = result.subtitles.path.parent / "truth.csv"
    with truth.open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    # The truth is numbered like the generated file; match on start time, not on index.
    by_start = {round(float(row["start"]), 2): row["character"] for row in rows}
    return {line.index: by_start[round(line.start, 2)] for line in result.subtitles.lines}


def rows_of(result: ImportResult, speakers: dict[int, str | None]) -> list[SpeakerLine]:
    return [
        SpeakerLine(
            index=task["data"]["index"],
            start=task["data"]["start"],
            end=task["data"]["end"],
            text=task["data"]["text"],
            speaker=speakers.get(task["data"]["index"]),
            episode=task["data"]["episode"],
            source_line=task["data"]["source_line"],
            clip=result.episode_dir / "audio" / f"{task['data']['index']:04d}.wav",
        )
        for task in result.tasks
    ]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> ImportResult:
    return make_imported_episode(tmp_path_factory.mktemp("tiny"))


ROWS = [
    SpeakerLine(1, 1.0, 2.5, "Good morning!", "Mika", episode="ep"),
    SpeakerLine(2, 3.25, 4.0, "Who's there?", None, episode="ep"),
    SpeakerLine(3, 61.005, 62.5, "鈴木です, よろしく", "鈴木", episode="ep"),
    SpeakerLine(4, 3600.0, 3601.0, "a {curly} line", "Tom, Jr.", episode="ep"),
]


# --------------------------------------------------------------------------- SRT and fresh ASS


def test_tagged_srt_reads_back_with_names_prefixed(tmp_path: Path):
    path = tmp_path / "out" / "ep.srt"
    write_tagged_srt(ROWS, path)

    items = pysrt.open(str(path), encoding="utf-8")
    assert [item.index for item in items] == [1, 2, 3, 4]
    assert [item.text for item in items] == [
        "Mika: Good morning!",
        "Who's there?",
        "鈴木: 鈴木です, よろしく",
        "Tom, Jr.: a {curly} line",
    ]
    assert [item.start.ordinal for item in items] == [1000, 3250, 61005, 3_600_000]
    assert [item.end.ordinal for item in items] == [2500, 4000, 62500, 3_601_000]
    assert not list(tmp_path.joinpath("out").glob(".*.tmp"))  # atomic write left nothing behind


def test_fresh_tagged_ass_fills_the_actor_field(tmp_path: Path):
    path = tmp_path / "ep.ass"
    write_tagged_ass(ROWS, path)

    events = pysubs2.load(str(path), encoding="utf-8").events
    assert [event.name for event in events] == ["Mika", "", "鈴木", "Tom， Jr."]
    assert [event.plaintext for event in events] == [
        "Good morning!",
        "Who's there?",
        "鈴木です, よろしく",
        "a (curly) line",  # braces would have opened an override block
    ]
    # ASS times are centiseconds.
    assert [(event.start, event.end) for event in events] == [
        (1000, 2500),
        (3250, 4000),
        (61010, 62500),
        (3_600_000, 3_601_000),
    ]


# --------------------------------------------------------------------------- ASS from the source


def _without_names(text: str) -> list[str]:
    """Every line, with the Name field of Dialogue lines emptied."""
    out = []
    for line in text.split("\r\n"):
        if line.startswith("Dialogue:"):
            values = line.split(",", 9)
            values[4] = ""
            line = ",".join(values)
        out.append(line)
    return out


def test_tagged_ass_from_the_source_changes_only_the_names(imported: ImportResult, tmp_path: Path):
    characters = truth_characters(imported)
    speakers: dict[int, str | None] = dict(characters)
    speakers[2] = None  # nobody named: the field stays empty
    rows = rows_of(imported, speakers)
    path = tmp_path / "ep.ass"
    write_tagged_ass(rows, path, imported.subtitles.path)

    original = imported.subtitles.path.read_bytes().decode("utf-8")
    written = path.read_bytes().decode("utf-8")
    assert "\r\n" in written and written.count("\n") == written.count("\r\n")  # CRLF kept
    assert _without_names(written) == _without_names(original)

    loaded = pysubs2.load(str(path), encoding="utf-8")
    assert "Sign" in loaded.styles and "Default" in loaded.styles
    comment = next(event for event in loaded.events if event.is_comment)
    assert comment.text == "timing checked" and comment.name == ""
    sign = next(event for event in loaded.events if event.style == "Sign")
    assert sign.name == ""  # left out by the importer, so not ours to name
    by_start: dict[int, list[pysubs2.SSAEvent]] = {}
    for event in loaded.events:
        if not event.is_comment and event.style == "Default":
            by_start.setdefault(event.start, []).append(event)
    for row in rows:
        for event in by_start[round(row.start * 1000)]:
            assert event.name == (row.speaker or "")
    layered = by_start[round(rows[2].start * 1000)]
    assert len(layered) == 2  # the copy the importer merged carries the same name
    assert {event.name for event in layered} == {characters[3]}


def test_tagged_ass_finds_cues_by_index_without_source_lines(
    imported: ImportResult, tmp_path: Path
):
    rows = rows_of(imported, truth_characters(imported))
    write_tagged_ass(rows, tmp_path / "by_line.ass", imported.subtitles.path)
    bare = [replace(row, source_line=None) for row in rows]
    write_tagged_ass(bare, tmp_path / "by_index.ass", imported.subtitles.path)
    assert (tmp_path / "by_index.ass").read_bytes() == (tmp_path / "by_line.ass").read_bytes()


def test_tagged_ass_refuses_a_source_the_lines_did_not_come_from(
    imported: ImportResult, tmp_path: Path
):
    rows = rows_of(imported, truth_characters(imported))
    moved = [replace(rows[0], start=rows[0].start + 0.5), *rows[1:]]
    with pytest.raises(SubtitleError, match=r"line 1 .* is not in this file"):
        write_tagged_ass(moved, tmp_path / "x.ass", imported.subtitles.path)
    srt = tmp_path / "ep.srt"
    write_tagged_srt(rows, srt)
    with pytest.raises(SubtitleError, match="is SRT, not ASS/SSA"):
        write_tagged_ass(rows, tmp_path / "y.ass", srt)
    assert not (tmp_path / "x.ass").exists() and not (tmp_path / "y.ass").exists()


# --------------------------------------------------------------------------- CSV


def test_table_round_trips_through_the_csv_module(tmp_path: Path):
    rows = [
        *ROWS,
        SpeakerLine(5, 9.0, 9.5, 'she said "no",\nthen left', None, episode="ep", flags=("A",)),
        replace(ROWS[0], index=6, source="prediction", flags=("Two speakers", "Not speech")),
    ]
    path = tmp_path / "lines.csv"
    assert write_table(rows, path) == 6

    with path.open(encoding="utf-8", newline="") as stream:
        read = list(csv.DictReader(stream))
    assert tuple(read[0]) == COLUMNS
    assert [row["speaker"] for row in read] == ["Mika", "", "鈴木", "Tom, Jr.", "", "Mika"]
    assert read[2]["text"] == "鈴木です, よろしく"
    assert read[4]["text"] == 'she said "no",\nthen left'
    assert (read[2]["start"], read[2]["end"]) == ("61.005", "62.500")
    assert read[5]["source"] == "prediction"
    assert read[5]["flags"] == "Two speakers;Not speech"


# --------------------------------------------------------------------------- clip dataset


def test_clip_dataset_from_a_real_import(imported: ImportResult, tmp_path: Path):
    characters = truth_characters(imported)
    speakers: dict[int, str | None] = dict(characters)
    speakers[1] = None  # unnamed lines are not training data
    rows = rows_of(imported, speakers)
    rows[2] = replace(rows[2], clip=tmp_path / "nowhere.wav")
    out = tmp_path / "clips"
    progress: list[tuple[str, int, int]] = []

    result = write_clip_dataset(
        rows, out, hook=lambda step, *, completed, total: progress.append((step, completed, total))
    )

    named = [row for row in rows if row.speaker]
    assert result.missing_clips == [rows[2].line_id]
    assert result.clips_written == len(named) - 1
    assert progress[-1] == ("clips", len(named), len(named))
    with result.metadata_path.open(encoding="utf-8", newline="") as stream:
        records = list(csv.DictReader(stream))
    assert tuple(records[0]) == METADATA_COLUMNS
    assert len(records) == result.clips_written
    for record in records:
        row = next(r for r in rows if r.index == int(record["index"]))
        clip = out / record["file_name"]
        assert clip.parent.name == record["speaker"] == row.speaker
        assert clip.name == f"{row.episode}_{row.index:04d}.wav"
        assert clip.read_bytes() == row.clip.read_bytes()  # type: ignore[union-attr]
        with wave.open(str(clip)) as audio:
            seconds = audio.getnframes() / audio.getframerate()
        assert float(record["duration"]) == pytest.approx(seconds, abs=1e-3)
        assert float(record["duration"]) >= row.end - row.start  # clips are padded
        assert record["text"] == row.text and record["episode"] == row.episode
    assert sorted(p.name for p in out.iterdir()) == sorted(
        {*(r.speaker for r in named), "metadata.csv"}  # type: ignore[misc]
    )
    assert result.per_speaker == {
        name: sum(1 for record in records if record["speaker"] == name)
        for name in {record["speaker"] for record in records}
    }


def test_clip_dataset_reexport_replaces_only_its_own_old_clips(
    imported: ImportResult, tmp_path: Path
):
    rows = rows_of(imported, dict.fromkeys(range(1, 4), "Aoi"))
    out = tmp_path / "clips"
    write_clip_dataset(rows, out)
    (out / "notes.txt").write_text("mine")
    renamed = rows_of(imported, {1: "Aoi", 2: "Riku"})
    write_clip_dataset(renamed, out)

    wavs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    episode = rows[0].episode
    assert wavs == [f"Aoi/{episode}_0001.wav", f"Riku/{episode}_0002.wav"]
    assert (out / "notes.txt").read_text() == "mine"


def test_clip_dataset_keeps_hostile_speaker_names_inside_the_folder(
    imported: ImportResult, tmp_path: Path
):
    names = ["../escape", "/etc", "..", "a\x00b", "Mika", "mika", "a/b", "a:b", "CON", ""]
    speakers = {index: name for index, name in enumerate(names, start=1) if name}
    rows = rows_of(imported, speakers)
    out = tmp_path / "data" / "clips"
    result = write_clip_dataset(rows, out)

    assert result.clips_written == len(speakers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["clips"]
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == len(speakers)  # distinct names, distinct folders
    for folder in folders:
        assert len(list(folder.iterdir())) == 1
    with result.metadata_path.open(encoding="utf-8", newline="") as stream:
        assert sorted(r["speaker"] for r in csv.DictReader(stream)) == sorted(speakers.values())


@pytest.mark.parametrize(
    "name",
    ["../x", "..", ".", "/", "", " ", "a\x00b", "a/../../b", "C:\\x", ".hidden", "con", "Nul.txt"],
)
def test_safe_path_names_are_single_harmless_components(name: str):
    safe = safe_path_names([name])[name]
    assert safe not in ("", ".", "..")
    assert not any(char in safe for char in "/\\\x00:")
    assert not safe.startswith(".") and not safe.endswith((".", " "))
    assert safe.split(".")[0].lower() not in ("con", "nul")
    assert Path(safe).name == safe


def test_safe_path_names_keep_safe_names_and_keep_distinct_names_apart():
    names = ["Mika", "鈴木", "Tom & Jerry", "mika", "MIKA", "a/b", "a:b", "a_b", "x" * 300]
    safe = safe_path_names(names)
    assert safe["鈴木"] == "鈴木" and safe["Tom & Jerry"] == "Tom & Jerry"
    # Names equal but for case share a folder on macOS and Windows: one keeps its name.
    assert sum(safe[name] == name for name in ("Mika", "mika", "MIKA")) == 1
    assert safe["a_b"] == "a_b"
    assert len({value.casefold() for value in safe.values()}) == len(names)
    assert all(len(value.encode()) < 255 for value in safe.values())
    assert safe_path_names(["a/b", "zzz"])["a/b"] == safe["a/b"]  # independent of the others


# --------------------------------------------------------------------------- Label Studio JSON


def _region(control: str, kind: str, value: list[str]) -> dict:
    key = "text" if kind == "textarea" else "choices"
    return {"from_name": control, "to_name": "audio", "type": kind, "value": {key: value}}


def _task(index: int, annotations=(), predictions=()) -> dict:
    return {
        "id": 100 + index,
        "data": {
            "line_id": f"ep-1:{index}",
            "episode": "ep-1",
            "index": index,
            "start": index * 2.0,
            "end": index * 2.0 + 1,
            "text": f"line {index}",
            "audio": f"{LOCAL_FILES_PREFIX}media/ep-1/audio/{index:04d}.wav",
            "source_line": index + 10,
        },
        "annotations": list(annotations),
        "predictions": list(predictions),
    }


def _annotation(result: list[dict], *, at: str, cancelled: bool = False, id: int = 1) -> dict:
    return {"id": id, "result": result, "was_cancelled": cancelled, "updated_at": at}


SPEAKER = _region("speaker", "choices", ["Aoi"])
TASKS = [
    _task(1, [_annotation([SPEAKER], at="2026-01-01T10:00:00Z")]),
    _task(  # the later annotation wins; a typed name wins over the drop-down
        2,
        [
            _annotation([SPEAKER], at="2026-01-01T10:00:00Z", id=2),
            _annotation(
                [SPEAKER, _region("new_speaker", "textarea", [" Old  Man\n"])],
                at="2026-01-02T10:00:00Z",
                id=3,
            ),
        ],
    ),
    _task(3, [_annotation([_region("speaker", "choices", ["Unknown"])], at="2026-01-01")]),
    _task(4, [_annotation([SPEAKER, _region("line_flags", "choices", ["Two speakers"])], at="x")]),
    _task(5, [_annotation([SPEAKER], at="2026-01-03", cancelled=True)]),  # a skip names nobody
    _task(6, predictions=[{"id": 9, "result": [SPEAKER], "score": 0.7, "created_at": "2026"}]),
    {"id": 7, "data": {"text": "not one of ours"}},
]


def test_lines_from_tasks_take_the_latest_real_annotation():
    exported = lines_from_tasks(TASKS)
    by_index = {task.line.index: task.line for task in exported}
    assert sorted(by_index) == [1, 2, 3, 4, 5, 6]  # the foreign task is left out
    assert {i: line.speaker for i, line in by_index.items()} == {
        1: "Aoi",
        2: "Old Man",
        3: None,
        4: None,
        5: None,
        6: None,
    }
    assert by_index[4].flags == ("Two speakers",)
    assert [by_index[i].source for i in range(1, 7)] == [
        "annotation",
        "annotation",
        "annotation",
        "annotation",
        "",
        "",
    ]
    assert by_index[1].source_line == 11 and by_index[1].episode == "ep-1"
    assert exported[0].audio_url == f"{LOCAL_FILES_PREFIX}media/ep-1/audio/0001.wav"


def test_predictions_fill_only_unannotated_lines_when_asked():
    by_index = {t.line.index: t.line for t in lines_from_tasks(TASKS, include_predictions=True)}
    assert (by_index[6].speaker, by_index[6].source) == ("Aoi", "prediction")
    assert by_index[4].speaker is None  # flagged by an annotator: the prediction does not count
    assert by_index[3].speaker is None


def test_media_path_resolves_urls_and_refuses_escapes(tmp_path: Path):
    root = tmp_path / "root"
    clip = root / "media" / "ep-1" / "audio" / "0001.wav"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"RIFF")
    (tmp_path / "secret.wav").write_bytes(b"no")
    local = f"{LOCAL_FILES_PREFIX}media/ep-1/audio/0001.wav"

    assert media_path(local, episode="ep-1", document_root=root) == clip.resolve()
    assert media_path(local, episode="ep-1", media_root=root / "media") == clip.resolve()
    prefixed = "https://cdn.example/x/ep-1/audio/0001.wav"
    assert media_path(prefixed, episode="ep-1", media_root=root / "media") == clip.resolve()
    assert media_path(local, episode="ep-1") is None
    assert media_path(None, episode="ep-1", document_root=root) is None
    for hostile in (f"{LOCAL_FILES_PREFIX}../secret.wav", f"{LOCAL_FILES_PREFIX}%2E%2E/secret.wav"):
        assert media_path(hostile, episode="ep-1", document_root=root) is None
    (root / "link.wav").symlink_to(tmp_path / "secret.wav")
    assert media_path(f"{LOCAL_FILES_PREFIX}link.wav", episode="x", document_root=root) is None


def test_original_subtitles_are_found_from_the_import_report(imported: ImportResult):
    assert original_subtitles(imported.episode_dir) == imported.subtitles.path


def test_an_srt_source_gets_a_plain_ass_without_a_note(tmp_path: Path, capsys):
    """Regression: export noted "original ASS not found" for every episode imported from SRT,
    which has no styles to keep; the note is for an ASS original that could not be used."""
    from exporters.label_studio_export import EpisodeExport
    from speaker_grouping.commands.export import _write_ass

    source = tmp_path / "episode.srt"
    write_tagged_srt(ROWS, source)
    _write_ass(EpisodeExport("ep", ROWS, tmp_path, source), tmp_path / "ep.ass")
    assert "note:" not in capsys.readouterr().err
    events = [e for e in pysubs2.load(str(tmp_path / "ep.ass")).events if not e.is_comment]
    # An ASS Actor field cannot hold a comma, so the writer swaps in a full-width one.
    assert [event.name for event in events] == [
        (row.speaker or "").replace(",", "\uff0c") for row in ROWS
    ]

    _write_ass(EpisodeExport("ep", ROWS, tmp_path, None), tmp_path / "ep2.ass")
    assert "note: ep: original subtitles not found" in capsys.readouterr().err
