"""`speaker-grouping import` over a season: many videos, one failing, resumed, serially and on Ray.

The season is three generated episodes (H.264 + AAC with subtitles beside them); the second one
is cut to a third of its bytes, so its MP4 index is missing and it fails with a media error.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from bench.synthetic_video import make_test_video, srt_text
from importers.season import MARKER_NAME, EpisodeOutcome, find_videos
from importers.season_ray import RayRunner
from importers.tasks import episode_id_for
from ml_backend.features.store import FeatureStore
from speaker_grouping.cli import main as cli_main

CUES = [(0.5, 1.8), (2.2, 3.5), (4.0, 5.5)]
NAMES = ["Show - 1.mp4", "Show - 2.mp4", "Show - 10.mp4"]
TRUNCATED = "Show - 2.mp4"


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three episodes (different pictures and sounds, so different ids), the
    second one truncated, plus a file that is not a video."""
    folder = tmp_path_factory.mktemp("season")
    for seed, name in enumerate(NAMES, start=1):
        video = make_test_video(folder / name, duration_s=6, seed=seed)
        video.with_suffix(".srt").write_text(srt_text(CUES), encoding="utf-8")
    truncated = folder / TRUNCATED
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    (folder / "notes.txt").write_text("not a video\n", encoding="utf-8")
    return folder


def _run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = cli_main(["import", *map(str, args), "-q"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _files(folder: Path) -> dict[Path, int]:
    """Every file under ``folder`` with its modification time: what a re-run must not touch."""
    return {path: path.stat().st_mtime_ns for path in sorted(folder.rglob("*")) if path.is_file()}


def _good_ids(season: Path) -> set[str]:
    return {episode_id_for(season / name) for name in NAMES if name != TRUNCATED}


def test_find_videos_sorts_a_folder_naturally_and_skips_other_files(season: Path):
    assert [video.name for video in find_videos([season])] == NAMES


def test_find_videos_expands_a_quoted_glob_and_names_each_video_once(season: Path):
    pattern = str(season / "Show - 1*.mp4")
    found = find_videos([pattern, season / "Show - 10.mp4"])
    assert [video.name for video in found] == ["Show - 1.mp4", "Show - 10.mp4"]


@pytest.mark.parametrize(
    ("argument", "error", "message"),
    [
        ("missing.mkv", FileNotFoundError, "missing.mkv: no such file or folder"),
        ("empty", ValueError, "empty: no video files"),
        ("*.webm", ValueError, r"\*\.webm: the pattern matches no video file"),
    ],
)
def test_find_videos_names_the_argument_that_matches_nothing(
    tmp_path: Path, argument: str, error: type[Exception], message: str
):
    (tmp_path / "empty").mkdir()
    (tmp_path / "clip.mp3").write_bytes(b"")
    with pytest.raises(error, match=message):
        find_videos([tmp_path / argument if argument != "*.webm" else f"{tmp_path}/*.webm"])


def test_season_imports_the_good_episodes_reports_the_truncated_one_and_resumes(
    season: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "out"
    code, stdout, stderr = _run(capsys, season, "--out", out, "--no-features")

    assert code == 1
    assert "imported 2, skipped (already done) 0, failed 1" in stdout
    failures = [line for line in (stdout + stderr).splitlines() if TRUNCATED in line]
    assert failures, stdout + stderr
    assert all(str(season / TRUNCATED) in line and "Traceback" not in line for line in failures)
    assert "cannot open as media" in failures[0]
    assert {folder.name for folder in out.iterdir()} == _good_ids(season)
    for folder in out.iterdir():
        tasks = json.loads((folder / "tasks.json").read_text())
        assert [task["data"]["start"] for task in tasks] == [start for start, _ in CUES]
        marker = json.loads((folder / MARKER_NAME).read_text())
        assert set(marker["outputs"]) == {"tasks.json", "report.json"}
        assert marker["key"]["episode"] == folder.name
        assert not (folder / "features.npz").exists()

    before = _files(out)
    code, stdout, _ = _run(capsys, season, "--out", out, "--no-features")

    assert code == 1
    assert "imported 0, skipped (already done) 2, failed 1" in stdout
    assert _files(out) == before  # nothing rewritten, nothing added


def test_a_crash_a_touched_output_or_new_settings_redo_only_what_they_affect(
    season: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "out"
    pattern = str(season / "Show - 1*.mp4")  # quoted: expanded by the command, not the shell
    assert _run(capsys, pattern, "--out", out, "--no-features")[0] == 0
    first, tenth = (
        out / episode_id_for(season / name) for name in ("Show - 1.mp4", "Show - 10.mp4")
    )

    (first / MARKER_NAME).unlink()  # what a crash before the end of the episode leaves
    code, stdout, _ = _run(capsys, pattern, "--out", out, "--no-features")
    assert code == 0
    assert "imported 1, skipped (already done) 1, failed 0" in stdout
    assert f"imported {season / 'Show - 1.mp4'}" in stdout

    tasks = json.loads((tenth / "tasks.json").read_text())
    (tenth / "tasks.json").write_text(json.dumps(tasks[:1]))  # edited since the import
    code, stdout, _ = _run(capsys, pattern, "--out", out, "--no-features")
    assert "imported 1, skipped (already done) 1, failed 0" in stdout
    assert len(json.loads((tenth / "tasks.json").read_text())) == len(CUES)

    wav = first / "audio" / "0001.wav"
    short = wav.stat().st_size
    code, stdout, _ = _run(capsys, pattern, "--out", out, "--no-features", "--pad-ms", "400")
    assert "imported 2, skipped (already done) 0, failed 0" in stdout
    assert wav.stat().st_size > short  # the new padding is in the clips

    code, stdout, _ = _run(capsys, pattern, "--out", out, "--no-features", "--pad-ms", "400")
    assert "imported 0, skipped (already done) 2, failed 0" in stdout
    code, stdout, _ = _run(
        capsys, pattern, "--out", out, "--no-features", "--pad-ms", "400", "--force"
    )
    assert "imported 2, skipped (already done) 0, failed 0" in stdout


def test_one_video_file_keeps_the_single_episode_import(
    season: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    code, stdout, _ = _run(capsys, season / "Show - 1.mp4", "--out", tmp_path, "--no-features")

    assert code == 0
    folder = tmp_path / episode_id_for(season / "Show - 1.mp4")
    assert f"{len(CUES)} tasks written to {folder / 'tasks.json'}" in stdout.splitlines()
    assert not (folder / MARKER_NAME).exists()
    assert "skipped (already done)" not in stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--subs", "Show - 1.srt"],
            "--subs names one subtitle file, so it takes one video, not 3",
        ),
        (["--workers", "2"], "--workers needs --ray"),
        (["--ray", "local", "--workers", "0"], "--workers must be at least 1, got 0"),
    ],
)
def test_bad_season_command_lines_end_in_one_line_and_exit_2(
    season: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
):
    if extra[0] == "--subs":
        extra = ["--subs", str(season / extra[1])]
    code, _, stderr = _run(capsys, season, "--out", tmp_path, "--no-features", *extra)

    assert code == 2
    assert stderr.startswith(f"error: {message}")
    assert len(stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_a_folder_without_videos_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "empty").mkdir()
    code, _, stderr = _run(capsys, tmp_path / "empty", "--out", tmp_path / "out")
    assert code == 2
    assert (
        stderr.strip()
        == f"error: {tmp_path / 'empty'}: no video files (.mkv .mp4 .avi .webm .mov .m4v .ts) in it"
    )


def test_ray_local_with_two_workers_imports_with_features_and_resumes(
    season: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """The actor path end to end: two Ray workers on 127.0.0.1 load the default embedders,
    import and embed the two good episodes straight into the output folder, and report the
    truncated one as data; the re-run on Ray skips both finished episodes."""
    out = tmp_path / "out"
    code, stdout, stderr = _run(capsys, season, "--out", out, "--ray", "local", "--workers", "2")

    assert code == 1, stdout + stderr
    assert "imported 2, skipped (already done) 0, failed 1" in stdout
    assert f"failed: {season / TRUNCATED}: cannot open as media" in stdout
    assert "Traceback" not in stdout + stderr
    assert {folder.name for folder in out.iterdir()} == _good_ids(season)
    for folder in out.iterdir():
        tasks = json.loads((folder / "tasks.json").read_text())
        store = FeatureStore.load(folder / "features.npz")
        line_ids = [task["data"]["line_id"] for task in tasks]
        assert sorted(store.line_ids) == sorted(line_ids)
        voice = store.voice(line_ids)
        assert voice.shape[0] == len(CUES) and np.allclose(np.linalg.norm(voice, axis=1), 1.0)
        marker = json.loads((folder / MARKER_NAME).read_text())
        assert set(marker["outputs"]) == {"tasks.json", "report.json", "features.npz"}
        assert marker["key"]["settings"]["features"]["voice"]["name"] == store.model("voice").name

    before = _files(out)
    code, stdout, _ = _run(capsys, season, "--out", out, "--ray", "local", "--workers", "2")

    assert code == 1
    assert "imported 0, skipped (already done) 2, failed 1" in stdout
    assert _files(out) == before


@pytest.mark.label_studio
def test_season_push_imports_each_finished_episode_once(
    season: Path, label_studio, capsys: pytest.CaptureFixture[str]
):
    """--push after a season: the imported episodes go into one project; the failed one does
    not; a re-run pushes the skipped (finished) episodes again and Label Studio keeps them once."""
    out = label_studio.document_root / f"season-{uuid.uuid4().hex[:8]}"
    push = ["--push", label_studio.url, "--api-key", label_studio.token]
    push += ["--project", f"season-{uuid.uuid4().hex[:8]}"]

    code, stdout, _ = _run(capsys, season, "--out", out, "--no-features", *push)
    assert code == 1
    pushed = [line for line in stdout.splitlines() if "Label Studio project" in line]
    assert sorted(line.split(":")[0] for line in pushed) == sorted(_good_ids(season))
    assert all(line.endswith(f"{len(CUES)} tasks created, 0 already there") for line in pushed)

    code, stdout, _ = _run(capsys, season, "--out", out, "--no-features", *push)
    assert "imported 0, skipped (already done) 2, failed 1" in stdout
    pushed = [line for line in stdout.splitlines() if "Label Studio project" in line]
    assert len(pushed) == 2
    assert all(line.endswith(f"0 tasks created, {len(CUES)} already there") for line in pushed)


class _WorkerThatDiesOnOneVideo:
    """An `EpisodeWorker` whose process exits on the video named ``die.mp4``, as one killed for
    memory would; for the others it reports where it ran. (A real import cannot be made to kill
    its process on cue; this is the worker side of the protocol, Ray itself is real.)"""

    def import_one(self, video: Path) -> EpisodeOutcome:
        import ray

        if video.name == "die.mp4":
            os._exit(3)
        return EpisodeOutcome(
            video, "imported", detail=ray.util.get_node_ip_address(), worker=str(os.getpid())
        )

    def close(self) -> None:
        pass


def test_a_ray_worker_that_dies_fails_only_its_episode_and_ray_stays_on_loopback():
    videos = [Path(f"{name}.mp4") for name in ("a", "die", "b", "c")]
    runner = RayRunner(_WorkerThatDiesOnOneVideo, address="local", workers=2)
    try:
        outcomes = {outcome.video.name: outcome for outcome in runner.run(videos)}
    finally:
        runner.close()

    assert sorted(outcomes) == ["a.mp4", "b.mp4", "c.mp4", "die.mp4"]
    died = outcomes["die.mp4"]
    assert died.status == "failed"
    assert died.detail.startswith("Ray worker failed (") and "\n" not in died.detail
    alive = [outcomes[name] for name in ("a.mp4", "b.mp4", "c.mp4")]
    assert {outcome.status for outcome in alive} == {"imported"}
    assert {outcome.detail for outcome in alive} == {"127.0.0.1"}  # the node's address


def test_the_same_file_in_two_folders_is_imported_once(
    season: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Same name and bytes means the same episode id, hence one folder: under Ray two workers
    would write it at once, so the second copy is skipped and says which file it repeats."""
    copy = tmp_path / "backup"
    copy.mkdir()
    for name in ("Show - 1.mp4", "Show - 1.srt"):
        shutil.copy(season / name, copy / name)
    out = tmp_path / "out"
    code, stdout, _ = _run(capsys, season / "Show - 1.mp4", copy, "--out", out, "--no-features")

    assert code == 0
    assert "imported 1, skipped (already done) 1, failed 0" in stdout
    assert f"skipped  {copy / 'Show - 1.mp4'}: same file as {season / 'Show - 1.mp4'}" in stdout
    assert [folder.name for folder in out.iterdir()] == [episode_id_for(season / "Show - 1.mp4")]
