"""`extract_features` on episodes imported by the real importer from a generated video."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.synthetic_video import make_test_video
from importers.media import write_wav
from importers.pipeline import import_episode
from ml_backend.features.extract import FeatureExtractionError, extract_features
from ml_backend.features.quality import QualityMeter
from ml_backend.features.store import FeatureStore, ModelInfo

SRT = """1
00:00:00,500 --> 00:00:01,700
First line.

2
00:00:02,000 --> 00:00:03,400
Second line.

3
00:00:03,800 --> 00:00:05,000
Third line.

4
00:00:05,500 --> 00:00:07,200
Fourth line.
"""


class SpectrumEmbedder:
    """A real, tiny voice embedder: log power in 16 frequency bands, centred, unit length.
    Counts what it embeds, so tests can tell cached lines from recomputed ones."""

    def __init__(self, version: str = "1") -> None:
        self.info = ModelInfo("test-band-spectrum", version, 16)
        self.items = 0

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        self.items += len(batch)
        rows = []
        for clip in batch:
            power = np.abs(np.fft.rfft(clip)) ** 2
            bands = np.log(np.array([b.mean() for b in np.array_split(power, 16)]) + 1e-9)
            rows.append(bands - bands.mean())
        rows = np.array(rows, dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class ColourEmbedder:
    """A real, tiny image embedder: mean and spread of each RGB channel, unit length."""

    def __init__(self) -> None:
        self.info = ModelInfo("test-colour-stats", "1", 6)
        self.items = 0

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        self.items += len(batch)
        rows = [
            np.concatenate([p.reshape(-1, 3).mean(0), p.reshape(-1, 3).std(0)]) + 1.0 for p in batch
        ]
        rows = np.array(rows, dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class CountingQualityMeter(QualityMeter):
    def __init__(self) -> None:
        super().__init__()
        self.items = 0

    def measure(self, clips, *, hook=None):
        self.items += len(clips)
        return super().measure(clips, hook=hook)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One episode imported twice: one frame per line with Label Studio local-files URLs, and
    three frames per line with a plain URL prefix."""
    folder = tmp_path_factory.mktemp("video")
    video = make_test_video(folder / "Show 01.mp4", duration_s=8, fps=12)
    (folder / "Show 01.srt").write_text(SRT, encoding="utf-8")
    episodes = {}
    for name, options in {
        "one-frame": {"frames_per_line": 1},
        "three-frames": {"frames_per_line": 3, "url_prefix": "http://media.example/sg"},
    }.items():
        result = import_episode(video, out_dir=folder / name, options=options)
        episodes[name] = result.episode_dir
    return episodes


@pytest.fixture(params=["one-frame", "three-frames"])
def episode(request: pytest.FixtureRequest, imported: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy, since extraction writes into the folder and tests change media."""
    return Path(shutil.copytree(imported[request.param], tmp_path / "episode"))


def _ids(episode: Path) -> list[str]:
    return [task["data"]["line_id"] for task in json.loads((episode / "tasks.json").read_text())]


def _extract(episode: Path, **overrides: object) -> tuple[FeatureStore, dict]:
    parts = {
        "voice_embedder": SpectrumEmbedder(),
        "image_embedder": ColourEmbedder(),
        "quality_meter": CountingQualityMeter(),
    }
    parts.update(overrides)
    store = extract_features(episode, batch_size=2, **parts)
    return store, parts


def test_extract_stores_every_kind_for_every_line(episode: Path):
    store, parts = _extract(episode)
    ids = _ids(episode)
    saved = FeatureStore.load(episode / "features.npz")

    assert saved.line_ids == ids == store.line_ids
    assert saved.models == {
        "voice": parts["voice_embedder"].info,
        "image": parts["image_embedder"].info,
        "quality": parts["quality_meter"].info,
    }
    assert saved.voice(ids).shape == (4, 16)
    assert saved.image(ids).shape == (4, 6)
    frames_per_line = len(list((episode / "frames").glob("0001*.jpg")))
    frames, owners = saved.image_frames(ids)
    assert len(frames) == 4 * frames_per_line
    np.testing.assert_array_equal(np.bincount(owners), [frames_per_line] * 4)
    durations = saved.quality(ids)["duration"]
    subtitle_lengths = np.array([1.2, 1.4, 1.2, 1.7])
    assert np.all(durations >= subtitle_lengths - 0.01)  # the importer pads each clip
    assert np.all(durations <= subtitle_lengths + 0.5)
    assert parts["voice_embedder"].items == 4
    assert parts["image_embedder"].items == 4 * frames_per_line


def test_voice_vectors_are_those_of_the_clip_files(episode: Path):
    """Line ids and rows stay paired: each stored vector is the embedding of its own clip."""
    store, _ = _extract(episode)
    ids = _ids(episode)
    clips = []
    for index in range(1, 5):
        with (episode / "audio" / f"{index:04d}.wav").open("rb") as stream:
            stream.seek(44)
            clips.append(np.frombuffer(stream.read(), "<i2").astype(np.float32) / 32768)
    expected = SpectrumEmbedder().embed(clips)
    np.testing.assert_allclose(store.voice(ids), expected, atol=1e-5)
    assert np.linalg.matrix_rank(store.voice(ids)) == 4  # the tones differ, so do the rows


def test_extracting_again_does_no_work_and_does_not_rewrite(episode: Path):
    _extract(episode)
    path = episode / "features.npz"
    before = path.stat().st_mtime_ns, path.read_bytes()

    _, parts = _extract(episode)

    assert [parts[name].items for name in parts] == [0, 0, 0]
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before


def test_only_changed_media_are_computed_again(episode: Path):
    first, _ = _extract(episode)
    ids = _ids(episode)
    old_voice, old_image = first.voice(ids), first.image(ids)
    rng = np.random.default_rng(0)
    write_wav(episode / "audio" / "0002.wav", 0.3 * rng.standard_normal(20000), 16000)
    frame = sorted((episode / "frames").glob("0004*.jpg"))[0]
    Image.fromarray(np.full((240, 320, 3), (200, 30, 30), np.uint8)).save(frame)

    store, parts = _extract(episode)

    assert parts["voice_embedder"].items == 1
    assert parts["quality_meter"].items == 1
    frames_per_line = len(list((episode / "frames").glob("0004*.jpg")))
    assert parts["image_embedder"].items == frames_per_line
    voice, image = store.voice(ids), store.image(ids)
    np.testing.assert_array_equal(voice[[0, 2, 3]], old_voice[[0, 2, 3]])
    assert not np.allclose(voice[1], old_voice[1])
    np.testing.assert_array_equal(image[:3], old_image[:3])
    assert not np.allclose(image[3], old_image[3])
    assert store.quality([ids[1]])["duration"][0] == pytest.approx(20000 / 16000)
    np.testing.assert_array_equal(FeatureStore.load(episode / "features.npz").voice(ids), voice)


def test_a_new_model_version_recomputes_its_column_only(episode: Path, caplog):
    _extract(episode)
    with caplog.at_level(logging.INFO, logger="ml_backend.features.extract"):
        store, parts = _extract(episode, voice_embedder=SpectrumEmbedder(version="2"))
    assert parts["voice_embedder"].items == 4
    assert parts["image_embedder"].items == 0
    assert store.models["voice"].version == "2"
    assert "voice model changed" in caplog.text


def test_lines_that_left_the_episode_leave_the_store(episode: Path):
    _extract(episode)
    tasks = json.loads((episode / "tasks.json").read_text())
    (episode / "tasks.json").write_text(json.dumps(tasks[:2]))
    store, parts = _extract(episode)
    assert store.line_ids == _ids(episode)
    assert FeatureStore.load(episode / "features.npz").line_ids == _ids(episode)
    assert parts["voice_embedder"].items == 0


def test_a_corrupt_store_is_rebuilt_with_a_warning(episode: Path, caplog):
    (episode / "features.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with caplog.at_level(logging.WARNING):
        store, parts = _extract(episode)
    assert "features.npz: not a readable feature store" in caplog.text
    assert parts["voice_embedder"].items == 4
    assert FeatureStore.load(episode / "features.npz").line_ids == store.line_ids


def test_skipping_a_kind_keeps_what_is_stored(episode: Path):
    _extract(episode)
    store, parts = _extract(episode, image_embedder=None, voice_embedder=SpectrumEmbedder("9"))
    assert store.models["image"].name == "test-colour-stats"
    assert store.missing(_ids(episode), "image") == []
    assert parts["voice_embedder"].items == 4


def test_progress_hook_sees_every_step(episode: Path):
    calls: list[tuple[str, int, int]] = []

    def hook(step: str, *, completed: int, total: int) -> None:
        calls.append((step, completed, total))

    extract_features(
        episode,
        voice_embedder=SpectrumEmbedder(),
        image_embedder=ColourEmbedder(),
        hook=hook,
        batch_size=2,
    )
    finals = {step: (completed, total) for step, completed, total in calls}
    assert finals == {"hash": (4, 4), "quality": (4, 4), "voice": (4, 4), "image": (4, 4)}


def test_a_missing_clip_is_named(episode: Path):
    (episode / "audio" / "0003.wav").unlink()
    with pytest.raises(FeatureExtractionError, match=r"audio/0003\.wav: cannot read clip"):
        _extract(episode)


def test_a_clip_of_the_wrong_format_is_named(episode: Path):
    write_wav(episode / "audio" / "0001.wav", np.zeros(8000), 8000)
    with pytest.raises(FeatureExtractionError, match=r"0001\.wav: expected 16 kHz mono 16-bit"):
        _extract(episode)


def test_a_folder_without_tasks_is_named(tmp_path: Path):
    with pytest.raises(FeatureExtractionError, match=r"tasks\.json: not found"):
        _extract(tmp_path)


@pytest.mark.parametrize("decodes_itself", [False, True])
def test_an_unreadable_frame_is_named(episode: Path, decodes_itself: bool):
    """Both paths: frames decoded here, and frame files handed to anime-colour to decode."""
    from ml_backend.features.image import AnimeColourEmbedder

    frame = sorted((episode / "frames").glob("0002*.jpg"))[0]
    frame.write_bytes(b"not a jpeg")
    image = AnimeColourEmbedder(workers=1) if decodes_itself else ColourEmbedder()
    with pytest.raises(FeatureExtractionError, match=rf"{frame.name}: not a readable image"):
        _extract(episode, image_embedder=image)


def test_anime_colour_vectors_are_those_of_the_frame_files(episode: Path):
    from ml_backend.features.image import AnimeColourEmbedder, decode_image

    embedder = AnimeColourEmbedder(workers=1)
    store, _ = _extract(episode, image_embedder=embedder)
    frames = sorted((episode / "frames").glob("0003*.jpg"))
    expected = embedder.embed([decode_image(path.read_bytes()) for path in frames])
    got, _ = store.image_frames([_ids(episode)[2]])
    np.testing.assert_allclose(got, expected, atol=1e-6)
