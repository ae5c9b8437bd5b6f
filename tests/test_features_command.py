"""`speaker-grouping features` and the feature step of `speaker-grouping import`, on the real
`tiny` episode with the default (offline) embedders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.make_episode import make_episode
from ml_backend.features.embedder import IMAGE_ENV, VOICE_ENV
from ml_backend.features.store import FeatureStore
from speaker_grouping.cli import main as cli_main
from speaker_grouping.commands.features import episode_folders


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = make_episode(
        "tiny", seed=1, out_dir=tmp_path_factory.mktemp("tiny") / "episode", allow_mbrola=False
    )
    return files.video


@pytest.fixture(scope="module")
def media_only(tiny_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny episode imported with --no-features: the import's --out folder."""
    out = tmp_path_factory.mktemp("media-only")
    assert cli_main(["import", str(tiny_video), "--out", str(out), "--no-features", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def with_features(tiny_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny episode imported with the default features: the import's --out folder."""
    out = tmp_path_factory.mktemp("with-features")
    assert cli_main(["import", str(tiny_video), "--out", str(out), "-q"]) == 0
    return out


def _episode(out: Path) -> Path:
    (folder,) = [child for child in out.iterdir() if (child / "tasks.json").is_file()]
    return folder


def _line_ids(episode: Path) -> list[str]:
    return [task["data"]["line_id"] for task in json.loads((episode / "tasks.json").read_text())]


def _assert_complete_store(episode: Path) -> FeatureStore:
    store = FeatureStore.load(episode / "features.npz")
    ids = _line_ids(episode)
    assert sorted(store.line_ids) == sorted(ids)
    for kind in ("voice", "image", "quality"):
        assert not store.missing(ids, kind), kind
    assert store.voice(ids).shape == (len(ids), 256)
    assert store.model("voice").name == "resemblyzer"
    assert store.model("image").name == "anime-colour"
    return store


def test_import_computes_the_default_features(with_features: Path):
    _assert_complete_store(_episode(with_features))


def test_import_with_no_features_writes_media_and_tasks_only(media_only: Path):
    episode = _episode(media_only)
    assert len(_line_ids(episode)) == 20
    assert not (episode / "features.npz").exists()


def test_features_command_fills_an_imported_folder_then_does_no_work(
    media_only: Path, tmp_path: Path, capsys
):
    out = Path(shutil.copytree(media_only, tmp_path / "out"))
    episode = _episode(out)

    assert cli_main(["features", str(out), "-q"]) == 0  # the import's --out: every episode

    first = capsys.readouterr().out
    assert "computed quality 20, voice 20, image 20" in first
    store = _assert_complete_store(episode)
    written = (episode / "features.npz").stat().st_mtime_ns

    assert cli_main(["features", str(episode), "-q"]) == 0  # the episode folder itself

    assert "20 lines, features up to date" in capsys.readouterr().out
    assert (episode / "features.npz").stat().st_mtime_ns == written
    again = FeatureStore.load(episode / "features.npz")
    ids = _line_ids(episode)
    assert (again.voice(ids) == store.voice(ids)).all()


def test_features_of_a_changed_clip_are_the_only_ones_computed(
    with_features: Path, tmp_path: Path, capsys
):
    episode = _episode(Path(shutil.copytree(with_features, tmp_path / "out")))
    clip = episode / "audio" / "0003.wav"
    data = bytearray(clip.read_bytes())
    data[-200:] = bytes(200)  # silence the last 100 samples
    clip.write_bytes(bytes(data))

    assert cli_main(["features", str(episode), "-q"]) == 0

    assert "computed quality 1, voice 1, image 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--voice-model", "error: unknown voice model 'nope'"),
        ("--image-model", "error: unknown image model 'nope'"),
    ],
)
def test_bad_model_name_is_one_line_before_any_work(
    tiny_video: Path, tmp_path: Path, capsys, flag: str, message: str
):
    code = cli_main(["import", str(tiny_video), "--out", str(tmp_path / "out"), flag, "nope"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variable", [VOICE_ENV, IMAGE_ENV])
def test_bad_model_name_from_the_environment_is_one_line(
    media_only: Path, capsys, monkeypatch, variable: str
):
    monkeypatch.setenv(variable, "nope")

    assert cli_main(["features", str(media_only)]) == 2

    err = capsys.readouterr().err
    assert "model 'nope'" in err and err.count("\n") == 1


def test_a_folder_without_episodes_is_named(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()

    assert cli_main(["features", str(tmp_path / "empty")]) == 2
    assert "empty: no tasks.json in it" in capsys.readouterr().err

    assert cli_main(["features", str(tmp_path / "absent")]) == 2
    assert "absent: no such folder" in capsys.readouterr().err


def test_bad_batch_size_is_named(media_only: Path, capsys):
    assert cli_main(["features", str(media_only), "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1, got 0" in capsys.readouterr().err


def test_episode_folders_take_episodes_and_folders_of_episodes_once(tmp_path: Path):
    for name in ("b", "a"):
        (tmp_path / "out" / name).mkdir(parents=True)
        (tmp_path / "out" / name / "tasks.json").write_text("[]")
    (tmp_path / "out" / "not-an-episode").mkdir()
    out = tmp_path / "out"

    assert episode_folders([out, out / "a"]) == [out / "a", out / "b"]
