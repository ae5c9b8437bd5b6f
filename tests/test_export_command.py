"""`speaker-grouping export` against a real Label Studio holding a really imported episode."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import uuid
import warnings
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pysrt
import pysubs2
import pytest
from datasets import load_dataset
from label_studio_sdk import LabelStudio

from importers.pipeline import ImportResult
from importers.push import push_tasks
from label_config import append_speakers, load_config, speaker_prediction
from speaker_grouping.cli import main as cli_main
from tests.local_postgres import find_postgres_bin
from tests.test_exporters import make_imported_episode, truth_characters

pytestmark = pytest.mark.label_studio

# Every test here runs on SQLite and on PostgreSQL (tests/ls_fixtures.py: any_label_studio).


def _choices(control: str, values: list[str]) -> dict:
    return {
        "from_name": control,
        "to_name": "audio",
        "type": "choices",
        "value": {"choices": values},
    }


def _typed(name: str) -> dict:
    return {
        "from_name": "new_speaker",
        "to_name": "audio",
        "type": "textarea",
        "value": {"text": [name]},
    }


@pytest.fixture(scope="module")
def project(any_label_studio, tmp_path_factory: pytest.TempPathFactory):
    """An imported tiny episode pushed into a fresh project, then annotated:

    - lines 1-8: the true character, picked from the drop-down;
    - line 9: flagged "Two speakers", line 10: "Not speech" (a speaker picked too);
    - line 11: a typed new name; line 12: "Unknown"; line 13: skipped (cancelled);
    - line 14: first "Riku", then corrected in a later annotation;
    - lines 13, 15 and 16: a prediction "Aoi"; lines 17 and 18: a placeholder "Speaker 3";
      the rest: nothing.
    """
    media = any_label_studio.document_root / f"export-{uuid.uuid4().hex[:8]}"
    media.mkdir()
    imported: ImportResult = make_imported_episode(
        tmp_path_factory.mktemp("export-source"),
        out_dir=media,
        document_root=any_label_studio.document_root,
    )
    characters = truth_characters(imported)
    title = f"export-{uuid.uuid4().hex[:8]}"
    config = append_speakers(load_config(), [*sorted(set(characters.values())), "Speaker 3"])
    pushed = push_tasks(
        imported.tasks,
        url=any_label_studio.url,
        api_key=any_label_studio.token,
        project=title,
        label_config=config,
        document_root=any_label_studio.document_root,
        media_dir=imported.episode_dir,
    )
    client = LabelStudio(base_url=any_label_studio.url, api_key=any_label_studio.token)
    task_ids = {
        task.data["index"]: task.id
        for task in client.tasks.list(project=pushed.project_id, fields="task_only")
    }

    def annotate(index: int, result: list[dict], *, cancelled: bool = False) -> None:
        client.annotations.create(id=task_ids[index], result=result, was_cancelled=cancelled)

    for index in range(1, 9):
        annotate(index, [_choices("speaker", [characters[index]])])
    annotate(9, [_choices("line_flags", ["Two speakers"])])
    annotate(10, [_choices("speaker", [characters[10]]), _choices("line_flags", ["Not speech"])])
    annotate(11, [_choices("speaker", ["Unknown"]), _typed("Mysterious Girl")])
    annotate(12, [_choices("speaker", ["Unknown"])])
    annotate(13, [_choices("speaker", [characters[13]])], cancelled=True)
    wrong = next(name for name in sorted(set(characters.values())) if name != characters[14])
    annotate(14, [_choices("speaker", [wrong])])
    annotate(14, [_choices("speaker", [characters[14]])])
    for index in (13, 15, 16):
        client.predictions.create(
            task=task_ids[index], result=speaker_prediction("Aoi", score=0.6), model_version="t1"
        )
    for index in (17, 18):
        client.predictions.create(
            task=task_ids[index],
            result=speaker_prediction("Speaker 3", score=0.4),
            model_version="t1",
        )
    expected: dict[int, str | None] = {index: characters[index] for index in (*range(1, 9), 14)}
    expected[11] = "Mysterious Girl"
    return {
        "title": title,
        "id": pushed.project_id,
        "imported": imported,
        "media": media,
        "expected": expected,
        "lines": len(imported.tasks),
    }


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def _export(any_label_studio, project, out: Path, *extra: str) -> int:
    args = ["export", "--url", any_label_studio.url, "--api-key", any_label_studio.token]
    args += ["--project", str(project), "--out", str(out), "-q", *extra]
    return cli_main(args)


def test_export_writes_annotated_speakers_in_every_format(
    any_label_studio, project, tmp_path, capsys
):
    out = tmp_path / "export"
    code = _export(
        any_label_studio,
        project["title"],
        out,
        "--document-root",
        str(any_label_studio.document_root),
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    expected = project["expected"]
    episode = project["imported"].episode_id
    assert f"{project['lines']} lines in 1 episode(s); {len(expected)} named by annotators" in (
        printed.out
    )
    assert "2 flagged" in printed.out

    rows = _read_csv(out / "lines.csv")
    assert [int(row["index"]) for row in rows] == list(range(1, project["lines"] + 1))
    assert {int(row["index"]): row["speaker"] for row in rows} == {
        index: expected.get(index) or "" for index in range(1, project["lines"] + 1)
    }
    by_index = {int(row["index"]): row for row in rows}
    assert by_index[9]["flags"] == "Two speakers" and by_index[10]["flags"] == "Not speech"
    assert {by_index[i]["source"] for i in expected} == {"annotation"}
    assert by_index[15]["source"] == "" and by_index[13]["source"] == ""

    subtitles = pysrt.open(str(out / f"{episode}.srt"), encoding="utf-8")
    assert len(subtitles) == project["lines"]
    assert subtitles[10].text == f"Mysterious Girl: {by_index[11]['text']}"
    assert subtitles[8].text == by_index[9]["text"]  # flagged: no name

    ass = pysubs2.load(str(out / f"{episode}.ass"), encoding="utf-8")
    assert "Sign" in ass.styles  # the original file was found through the import report
    assert any(event.is_comment for event in ass.events)
    names = {event.start: event.name for event in ass.events if event.style == "Default"}
    for index, speaker in expected.items():
        assert names[round(float(by_index[index]["start"]) * 1000)] == speaker

    clips = _read_csv(out / "clips" / "metadata.csv")
    assert sorted(int(row["index"]) for row in clips) == sorted(expected)
    for row in clips:
        clip = out / "clips" / row["file_name"]
        assert clip.parent.name == row["speaker"] == expected[int(row["index"])]
        source = project["imported"].episode_dir / "audio" / f"{int(row['index']):04d}.wav"
        assert clip.read_bytes() == source.read_bytes()
    assert not (out / "clips" / "Unknown").exists()


def test_export_with_predictions_and_a_media_root_by_project_id(
    any_label_studio, project, tmp_path, capsys
):
    out = tmp_path / "export"
    code = _export(
        any_label_studio,
        project["id"],
        out,
        "--media-root",
        str(project["media"]),
        "--include-predictions",
        "--format",
        "csv,clips",
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "5 by predictions" in printed.out
    by_index = {int(row["index"]): row for row in _read_csv(out / "lines.csv")}
    for index in (13, 15, 16):  # 13 was skipped by its annotator, so its prediction counts
        assert (by_index[index]["speaker"], by_index[index]["source"]) == ("Aoi", "prediction")
    assert by_index[9]["speaker"] == ""  # flagged lines never take the prediction
    assert by_index[17]["speaker"] == "Speaker 3"  # the table says what was proposed
    clips = {int(row["index"]): row for row in _read_csv(out / "clips" / "metadata.csv")}
    assert clips[15]["source"] == "prediction" and clips[1]["source"] == "annotation"
    # Placeholders name nobody in particular: no voice is trained on them by default.
    assert 17 not in clips and 18 not in clips and 12 not in clips
    assert not (out / "clips" / "Speaker 3").exists() and not (out / "clips" / "Unknown").exists()
    assert "left out 2 line(s) named only by a placeholder" in printed.out
    assert not list(out.glob("*.srt")) and not list(out.glob("*.ass"))


def test_export_keeps_placeholders_in_the_clips_only_when_asked(
    any_label_studio, project, tmp_path, capsys
):
    out = tmp_path / "export"
    code = _export(
        any_label_studio,
        project["id"],
        out,
        "--include-predictions",
        "--include-unnamed",
        "--format",
        "clips",
    )
    assert code == 0, capsys.readouterr().err
    clips = {int(row["index"]): row for row in _read_csv(out / "clips" / "metadata.csv")}
    assert clips[17]["speaker"] == clips[18]["speaker"] == "Speaker 3"
    assert clips[12]["speaker"] == "Unknown"
    assert (out / "clips" / "Speaker 3" / Path(clips[17]["file_name"]).name).is_file()


def test_default_export_finds_the_media_through_the_import_and_loads_in_datasets(
    any_label_studio, project, tmp_path, capsys, monkeypatch
):
    """No --media-root, no --document-root: the project's storage leads to the import folder,
    whose report.json and tasks.json say where each clip is. Regression: the default formats
    failed with "clips need --media-root" on a project `import --push` had filled."""
    monkeypatch.delenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", raising=False)
    out = tmp_path / "export"
    code = _export(any_label_studio, project["title"], out)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "warning" not in printed.err and "note:" not in printed.err
    expected = project["expected"]
    imported = project["imported"]

    table = pd.read_parquet(out / "lines.parquet")
    rows = _read_csv(out / "lines.csv")
    assert list(table.columns) == list(rows[0])
    assert table["index"].tolist() == [int(row["index"]) for row in rows]
    speakers = table["speaker"].astype(object).where(table["speaker"].notna(), None)
    assert speakers.tolist() == [expected.get(int(row["index"])) for row in rows]
    assert table["flags"].map(list).tolist() == [
        [flag for flag in row["flags"].split(";") if flag] for row in rows
    ]
    assert table["start"].tolist() == [float(row["start"]) for row in rows]

    # datasets < 4 (the one that decodes audio with soundfile; datasets >= 4 needs torchcodec,
    # whose PyPI wheels are CUDA builds that do not load beside the CPU torch 2.13.0) reads the
    # metadata CSV with pandas and wants plain string columns, which pandas 3 no longer infers
    # by default. On datasets >= 4 with torchcodec no such option is needed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        with pd.option_context("future.infer_string", False):
            dataset = load_dataset(
                "audiofolder",
                data_dir=str(out / "clips"),
                split="train",
                cache_dir=str(tmp_path / "hf"),
            )
    assert dataset.num_rows == len(expected)
    assert sorted(dataset["index"]) == sorted(expected)
    for record in dataset:
        assert record["speaker"] == expected[record["index"]]
        source = imported.episode_dir / "audio" / f"{record['index']:04d}.wav"
        with wave.open(str(source)) as clip:
            rate = clip.getframerate()
            samples = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
        audio = record["audio"]
        decoded = audio.get_all_samples() if hasattr(audio, "get_all_samples") else None
        if decoded is not None:  # torchcodec's AudioDecoder (datasets >= 4)
            array, sampling_rate = decoded.data.numpy()[0], decoded.sample_rate
        else:
            array, sampling_rate = audio["array"], audio["sampling_rate"]
        assert sampling_rate == rate
        np.testing.assert_allclose(array, samples / 32768.0, atol=1e-4)


def test_export_without_any_way_to_the_clips_says_so(
    any_label_studio, tmp_path, capsys, monkeypatch
):
    """A project whose tasks point at media nobody recorded: one line saying what to give."""
    monkeypatch.delenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", raising=False)
    client = LabelStudio(base_url=any_label_studio.url, api_key=any_label_studio.token)
    created = client.projects.create(
        title=f"export-nomedia-{uuid.uuid4().hex[:8]}",
        label_config=append_speakers(load_config(), ["Aoi"]),
    )
    client.projects.import_tasks(
        id=created.id,
        request=[
            {
                "data": {
                    "line_id": "ep-x:1",
                    "episode": "ep-x",
                    "index": 1,
                    "text": "hello",
                    "audio": "/data/local-files/?d=elsewhere/ep-x/audio/0001.wav",
                    "image": "/data/local-files/?d=elsewhere/ep-x/frames/0001.jpg",
                    "start": 0.0,
                    "end": 1.0,
                },
                "annotations": [{"result": [_choices("speaker", ["Aoi"])]}],
            }
        ],
    )
    code = _export(any_label_studio, created.id, tmp_path / "x")
    err = capsys.readouterr().err
    assert code == 2
    assert "none of the 1 named lines' clips was found" in err and "--media-root" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "x" / "lines.csv").exists()  # nothing half-written


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--project", "no such zz", "--format", "csv"], "no project titled 'no such zz'"),
        (["--format", "srt,mp3"], "unknown format(s) mp3"),
        (["--media-root", "/nonexistent/media"], "--media-root /nonexistent/media: no such folder"),
    ],
)
def test_export_errors_are_one_line(
    any_label_studio, project, tmp_path, capsys, extra, message, monkeypatch
):
    monkeypatch.delenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", raising=False)
    args = ["export", "--url", any_label_studio.url, "--api-key", any_label_studio.token]
    args += ["--project", project["title"], "--out", str(tmp_path / "x"), "-q", *extra]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_export_with_a_wrong_key_says_so(any_label_studio, project, tmp_path, capsys):
    args = ["export", "--url", any_label_studio.url, "--api-key", "0" * 40]
    args += ["--project", project["title"], "--out", str(tmp_path), "--format", "csv"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "rejected the API key" in err and err.count("\n") == 1


def test_label_studio_really_runs_on_postgresql(label_studio_postgres):
    """The PostgreSQL session is what it claims: a project created through Label Studio's API
    is a row of the PostgreSQL server we started, and the fresh migration was reported while
    it ran (what the demo's first start prints)."""
    env = label_studio_postgres.server.extra_env
    title = f"pg-{uuid.uuid4().hex[:8]}"
    client = LabelStudio(base_url=label_studio_postgres.url, api_key=label_studio_postgres.token)
    created = client.projects.create(title=title, label_config=load_config())
    psql = shutil.which("psql") or str(find_postgres_bin() / "psql")
    answer = subprocess.run(
        [psql, "-h", env["POSTGRE_HOST"], "-p", env["POSTGRE_PORT"], "-U", env["POSTGRE_USER"],
         "-d", env["POSTGRE_NAME"], "-tAc", f"select id from project where title = '{title}'"],
        env={**os.environ, "PGPASSWORD": env["POSTGRE_PASSWORD"]},
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert answer.stdout.split() == [str(created.id)]
    assert any("initialising its database" in line for line in label_studio_postgres.progress)
