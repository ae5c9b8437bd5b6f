"""The feature pass during the media pass (`prepare_episode`): same features.npz and tasks
as the sequential path, on the generated `tiny` episode with the default (offline) embedders;
errors in either pass stop both and leave the feature store as it was."""

from __future__ import annotations

import json
import shutil
import wave
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.make_episode import make_episode
from bench.synthetic_video import make_test_video
from importers.media import MediaError
from importers.pipeline import import_episode
from ml_backend.features.embedder import ModelUnavailableError
from ml_backend.features.extract import extract_features
from ml_backend.features.extractor import FeatureExtractor
from ml_backend.features.feed import KINDS
from ml_backend.features.prepare import prepare_episode
from ml_backend.features.store import ModelInfo
from speaker_grouping.cli import main as cli_main

BATCH = 4
"""Lines per encoder call: small, so that batches are embedded while the tiny episode's
frame walk still runs (with the default 32 its 20 lines would wait for the end)."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(video, subtitles) of the generated tiny episode (20 lines, 4 speakers)."""
    files = make_episode(
        "tiny", seed=1, out_dir=tmp_path_factory.mktemp("tiny") / "episode", allow_mbrola=False
    )
    return files.video, files.subtitles


@pytest.fixture(scope="module")
def extractor() -> Iterator[FeatureExtractor]:
    extractor = FeatureExtractor.build(None, None)
    yield extractor
    extractor.close()


class _Steps:
    """A progress hook that keeps each step's last report."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, int]] = {}

    def __call__(self, step: str, *, completed: int, total: int) -> None:
        self.last[step] = (completed, total)


@pytest.fixture(scope="module")
def imports(tiny, extractor, tmp_path_factory) -> dict[str, tuple[Path, _Steps]]:
    """The tiny episode imported both ways: name -> (episode folder, its progress)."""
    video, subtitles = tiny
    done = {}
    for name, overlap in (("sequential", False), ("overlapped", True)):
        steps = _Steps()
        result = prepare_episode(
            video,
            tmp_path_factory.mktemp(name),
            subtitles,
            None,
            extractor,
            steps,
            overlap=overlap,
            batch_size=BATCH,
        )
        assert result.features is not None
        done[name] = (result.media.episode_dir, steps)
    return done


def _arrays(store: Path) -> dict[str, np.ndarray]:
    with np.load(store, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def _assert_same_features(left: Path, right: Path) -> None:
    """Same arrays under the same names: ids, hashes, models exactly; vectors bit for bit."""
    a, b = _arrays(left), _arrays(right)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        if a[name].dtype.kind == "f":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        elif name == "meta":
            assert json.loads(str(a[name][0])) == json.loads(str(b[name][0]))
        else:
            assert a[name].tolist() == b[name].tolist(), name


def test_overlapped_import_writes_the_features_and_tasks_of_the_sequential_one(imports):
    sequential, _ = imports["sequential"]
    overlapped, _ = imports["overlapped"]

    _assert_same_features(sequential / "features.npz", overlapped / "features.npz")
    assert (overlapped / "tasks.json").read_text() == (sequential / "tasks.json").read_text()
    arrays = _arrays(overlapped / "features.npz")
    assert len(arrays["line_ids"]) == 20
    for kind in ("voice", "image", "quality"):
        assert arrays[f"{kind}_present"].all(), kind
        assert np.isfinite(arrays[kind]).all(), kind
        assert all(len(source) == 40 for source in arrays[f"{kind}_source"]), kind


def test_every_kind_during_the_frame_walk_writes_the_same_features(
    imports, tiny, extractor, tmp_path
):
    """By default voice and quality wait for the last frame (DURING_MEDIA); run beside the
    walk instead, they must still write the same store."""
    sequential, _ = imports["sequential"]
    video, subtitles = tiny
    feed = extractor.feed(batch_size=BATCH, during_media=KINDS)

    result = import_episode(video, subtitles=subtitles, out_dir=tmp_path, sink=feed)
    feed.finish()

    _assert_same_features(sequential / "features.npz", result.episode_dir / "features.npz")


def test_features_command_finds_an_overlapped_import_up_to_date(imports, tmp_path, capsys):
    overlapped, _ = imports["overlapped"]
    folder = Path(shutil.copytree(overlapped, tmp_path / overlapped.name))
    before = (folder / "features.npz").read_bytes()

    assert cli_main(["features", str(folder), "-q"]) == 0

    assert "features up to date" in capsys.readouterr().out
    assert (folder / "features.npz").read_bytes() == before


def test_progress_reports_cover_every_step_of_both_passes(imports):
    _, steps = imports["overlapped"]

    assert steps.last == {
        "clips": (20, 20),
        "frames": (20, 20),
        "quality": (20, 20),
        "voice": (20, 20),
        "image": (20, 20),
    }


def test_three_frames_per_line_match_a_recomputation_from_the_files(tiny, extractor, tmp_path):
    video, subtitles = tiny
    options = {"frames_per_line": 3}
    done = prepare_episode(video, tmp_path / "a", subtitles, options, extractor)
    folder = done.media.episode_dir
    recomputed = tmp_path / "recomputed.npz"

    extract_features(
        folder,
        voice_embedder=extractor.voice,
        image_embedder=extractor.image,
        quality_meter=extractor.quality,
        store_path=recomputed,
    )

    _assert_same_features(recomputed, folder / "features.npz")
    assert len(_arrays(recomputed)["image_frames"]) == 60


def test_reimporting_an_unchanged_episode_computes_nothing(imports, tiny, extractor, tmp_path):
    overlapped, _ = imports["overlapped"]
    video, subtitles = tiny
    out = tmp_path / "out"
    shutil.copytree(overlapped, out / overlapped.name)
    steps = _Steps()

    done = prepare_episode(video, out, subtitles, None, extractor, steps)

    assert done.features is not None
    assert done.features.computed == {"quality": 0, "voice": 0, "image": 0}
    assert "features up to date" in done.features.summary()
    assert not {"quality", "voice", "image"} & set(steps.last)
    _assert_same_features(overlapped / "features.npz", out / overlapped.name / "features.npz")


class _VoiceModelThatFails:
    """A voice model that fails on its first batch, as one whose weights cannot be read
    would: the import must stop with its message."""

    info = ModelInfo("failing-voice", "1", 4)

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        raise ModelUnavailableError("failing-voice: weights unreadable (checkpoint truncated)")


def test_a_feature_error_stops_the_import_and_keeps_the_previous_store(
    imports, tiny, extractor, tmp_path
):
    overlapped, _ = imports["overlapped"]
    video, subtitles = tiny
    out = tmp_path / "out"
    shutil.copytree(overlapped, out / overlapped.name)
    store = out / overlapped.name / "features.npz"
    before = store.read_bytes()
    failing = FeatureExtractor(
        voice=_VoiceModelThatFails(), image=extractor.image, quality=extractor.quality
    )

    with pytest.raises(ModelUnavailableError, match="weights unreadable") as error:
        prepare_episode(video, out, subtitles, None, failing, batch_size=BATCH)

    assert "\n" not in str(error.value)
    assert store.read_bytes() == before
    assert not list(store.parent.glob(".features.npz.*"))  # no temporary file left behind


def test_a_media_error_stops_the_import_and_writes_no_features(extractor, tmp_path):
    song = make_test_video(tmp_path / "song.m4a", duration_s=3, with_video=False)
    subtitles = tmp_path / "song.srt"
    subtitles.write_text("1\n00:00:00,500 --> 00:00:01,500\nLa la la.\n", encoding="utf-8")

    with pytest.raises(MediaError, match="no video stream") as error:
        prepare_episode(song, tmp_path / "out", subtitles, None, extractor)

    assert str(error.value).startswith(f"{song}: ")
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "out").rglob("features.npz"))
    assert not list((tmp_path / "out").rglob("tasks.json"))


def test_cli_unknown_model_is_one_line_before_any_work(tiny, tmp_path, capsys):
    video, subtitles = tiny
    out = tmp_path / "out"
    arguments = ["import", str(video), "--subs", str(subtitles), "--out", str(out)]

    code = cli_main([*arguments, "--voice-model", "no-such-model", "-q"])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: unknown voice model 'no-such-model'")
    assert "\n" not in err
    assert not out.exists()


class _RecordingSink:
    """A `MediaSink` that keeps what it is given."""

    def __init__(self, fail_on_frame: bool = False) -> None:
        self.fail_on_frame = fail_on_frame
        self.clips: dict[int, tuple[np.ndarray, bytes]] = {}
        self.frames: dict[tuple[int, int], tuple[np.ndarray, bytes]] = {}

    def begin(self, episode_dir: Path, line_ids: Mapping[int, str], frames_per_line: int) -> None:
        self.episode_dir, self.line_ids, self.frames_per_line = (
            episode_dir,
            line_ids,
            frames_per_line,
        )

    def clip(self, index: int, samples: np.ndarray, wav: bytes) -> None:
        self.clips[index] = (samples, wav)

    def frame(self, index: int, position: int, rgb: np.ndarray, jpeg: bytes) -> None:
        if self.fail_on_frame:
            raise ValueError(f"sink refused frame {position} of line {index}")
        self.frames[index, position] = (rgb, jpeg)


def test_the_sink_gets_every_clip_and_frame_exactly_as_written(tiny, tmp_path):
    video, subtitles = tiny
    sink = _RecordingSink()

    result = import_episode(
        video, subtitles=subtitles, out_dir=tmp_path, options={"frames_per_line": 3}, sink=sink
    )

    assert sink.episode_dir == result.episode_dir and sink.frames_per_line == 3
    tasks = {task["data"]["index"]: task["data"] for task in result.tasks}
    assert dict(sink.line_ids) == {index: data["line_id"] for index, data in tasks.items()}
    assert sorted(sink.clips) == sorted(tasks)
    assert sorted(sink.frames) == [(index, p) for index in sorted(tasks) for p in range(3)]
    for index, (samples, wav) in sink.clips.items():
        path = result.episode_dir / "audio" / f"{index:04d}.wav"
        assert wav == path.read_bytes()
        with wave.open(str(path)) as clip:
            pcm = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
        assert samples.dtype == np.float32 and samples.shape == pcm.shape
        np.testing.assert_array_equal(samples, pcm.astype(np.float32) / 32768.0)
    for (index, position), (rgb, jpeg) in sink.frames.items():
        path = result.episode_dir / "frames" / f"{index:04d}_{position}.jpg"
        assert jpeg == path.read_bytes()
        with Image.open(path) as picture:
            decoded = np.asarray(picture.convert("RGB"), dtype=np.float64)
        assert rgb.dtype == np.uint8 and rgb.shape == decoded.shape
        # The frame before JPEG's loss: close to the file's pixels, not equal to them.
        assert np.abs(rgb - decoded).mean() < 4.0


def test_an_error_raised_by_the_sink_stops_the_import(tiny, tmp_path):
    video, subtitles = tiny

    with pytest.raises(ValueError, match="sink refused frame 0 of line"):
        import_episode(
            video, subtitles=subtitles, out_dir=tmp_path, sink=_RecordingSink(fail_on_frame=True)
        )

    assert not list(tmp_path.rglob("tasks.json"))
