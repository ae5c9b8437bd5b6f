"""Issue 12 row 12: export file names and CSV cells that are safe on any file system and in any
spreadsheet, and paths from report.json or task data that cannot lead the export elsewhere."""

from __future__ import annotations

import csv
import io
import json
import wave
from pathlib import Path

import pytest

from exporters import SpeakerLine
from exporters.clip_dataset import safe_path_names, write_clip_dataset
from exporters.label_studio_export import episode_folder_under, original_subtitles
from exporters.table import spreadsheet_safe, write_table


def clip(path: Path, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * int(16000 * seconds))
    path.write_bytes(buffer.getvalue())
    return path


def test_a_name_of_80_four_byte_characters_exports_with_its_metadata(tmp_path):
    """80 four-byte characters made a 320-byte file name; the export stopped with an OSError
    traceback before metadata.csv."""
    long_names = ["𝒜" * 80, "𝒜" * 79 + "𝒝", "😀" * 300]
    rows = [
        SpeakerLine(
            i + 1, i, i + 0.5, f"line {i}", name, episode="ep", clip=clip(tmp_path / f"{i}.wav")
        )
        for i, name in enumerate(long_names)
    ]
    result = write_clip_dataset(rows, tmp_path / "clips")
    assert result.clips_written == 3
    folders = [p for p in (tmp_path / "clips").iterdir() if p.is_dir()]
    assert len(folders) == 3  # distinct names stay distinct
    assert all(len(p.name.encode("utf-8")) <= 255 for p in folders)
    with open(result.metadata_path, encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert sorted(r["speaker"] for r in records) == sorted(long_names)


@pytest.mark.parametrize(
    "name",
    ["Ann\u202eoJ", "A\u2066B\u2069", "x\u200fy", "bell\x07", "c1\x9bname", "tab\tname"],
)
def test_bidi_and_control_characters_never_reach_a_file_name(name):
    (safe,) = safe_path_names([name]).values()
    assert not any(ch in safe for ch in "\u202e\u2066\u2069\u200f\x07\x9b\t")
    assert safe != name


@pytest.mark.parametrize("cell", ["=1+1", "+cmd", "-2", "@SUM(A1)", "\tx"])
def test_cells_a_spreadsheet_would_run_are_quoted(tmp_path, cell):
    assert spreadsheet_safe(cell) == "'" + cell
    path = tmp_path / "lines.csv"
    write_table([SpeakerLine(1, 0.0, 1.0, cell, cell, episode="ep")], path)
    with open(path, encoding="utf-8", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["text"] == "'" + cell and row["speaker"] == "'" + cell


@pytest.mark.parametrize("cell", ["Mika", "鈴木", "a=b", "", "'quoted"])
def test_ordinary_cells_are_kept(cell):
    assert spreadsheet_safe(cell) == cell


def test_metadata_cells_are_quoted_too(tmp_path):
    rows = [
        SpeakerLine(
            1, 0.0, 0.5, "=HYPERLINK(1)", "@evil", episode="ep", clip=clip(tmp_path / "a.wav")
        )
    ]
    result = write_clip_dataset(rows, tmp_path / "clips")
    with open(result.metadata_path, encoding="utf-8", newline="") as handle:
        (record,) = list(csv.DictReader(handle))
    assert record["text"] == "'=HYPERLINK(1)" and record["speaker"] == "'@evil"


def test_report_json_cannot_point_the_export_at_any_file(tmp_path):
    folder = tmp_path / "media" / "ep-1"
    folder.mkdir(parents=True)
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("password")
    (folder / "report.json").write_text(json.dumps({"subtitles": str(secret)}))
    assert original_subtitles(folder) is None
    subtitles = tmp_path / "videos" / "ep-1.ass"
    subtitles.parent.mkdir()
    subtitles.write_text("[Script Info]\n")
    (folder / "report.json").write_text(json.dumps({"subtitles": str(subtitles)}))
    assert original_subtitles(folder) == subtitles.resolve()
    (folder / "report.json").write_text(json.dumps({"subtitles": "../../elsewhere/secret.txt"}))
    assert original_subtitles(folder) is None


@pytest.mark.parametrize("episode", ["../outside", "..", ".", "a/b", "/etc", "ep\x00", "", "link"])
def test_an_episode_id_cannot_lead_out_of_the_media_root(tmp_path, episode):
    root = tmp_path / "media"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    assert episode_folder_under(root, episode) is None


def test_an_episode_folder_inside_the_media_root_is_found(tmp_path):
    root = tmp_path / "media"
    (root / "ep-1").mkdir(parents=True)
    assert episode_folder_under(root, "ep-1") == (root / "ep-1").resolve()
