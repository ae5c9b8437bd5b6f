"""The per-episode feature store: round trip, atomic saves, model guards, hostile files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from ml_backend.features.store import (
    FeatureStore,
    FeatureStoreError,
    MixedModelsError,
    ModelInfo,
)

VOICE = ModelInfo("test-voice", "1.0", 4)
IMAGE = ModelInfo("test-image", "2.0", 3)
QUALITY = ModelInfo("test-quality", "1", 2)
IDS = ["ep-1a2b3c4d:1", "ep-1a2b3c4d:2", "ep-1a2b3c4d:3"]


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _store(rng: np.random.Generator) -> FeatureStore:
    store = FeatureStore()
    store.add(IDS, voice=_unit_rows(rng, 3, 4), voice_model=VOICE, audio_hashes=["a1", "a2", "a3"])
    store.add(
        IDS[:2],
        image=[_unit_rows(rng, 3, 3), _unit_rows(rng, 1, 3)],
        image_model=IMAGE,
        frame_hashes=["f1", "f2"],
    )
    store.add(
        IDS,
        quality={"duration": [1.5, 0.4, 3.0], "snr_db": [20.0, -3.5, 8.25]},
        quality_model=QUALITY,
        audio_hashes=["a1", "a2", "a3"],
    )
    return store


def test_round_trip_keeps_values_models_frames_and_hashes(tmp_path: Path):
    rng = np.random.default_rng(0)
    store = _store(rng)
    path = tmp_path / "features.npz"
    store.save(path)
    loaded = FeatureStore.load(path)

    assert loaded.line_ids == IDS
    assert loaded.models == {"voice": VOICE, "image": IMAGE, "quality": QUALITY}
    np.testing.assert_array_equal(loaded.voice(IDS[::-1]), store.voice(IDS[::-1]))
    assert loaded.voice(IDS).dtype == np.float32
    np.testing.assert_array_equal(loaded.image(IDS[:2]), store.image(IDS[:2]))
    frames, owners = loaded.image_frames([IDS[1], IDS[0]])
    np.testing.assert_array_equal(owners, [0, 1, 1, 1])
    np.testing.assert_array_equal(frames, store.image_frames([IDS[1], IDS[0]])[0])
    quality = loaded.quality([IDS[2], IDS[1]])
    assert list(quality) == ["duration", "snr_db"]
    np.testing.assert_allclose(quality["duration"], [3.0, 0.4], rtol=1e-6)
    np.testing.assert_allclose(quality["snr_db"], [8.25, -3.5])
    assert [loaded.source("voice", i) for i in IDS] == ["a1", "a2", "a3"]
    assert loaded.source("image", IDS[1]) == "f2"
    assert loaded.source("image", IDS[2]) is None


def test_the_file_holds_only_plain_arrays(tmp_path: Path):
    path = tmp_path / "features.npz"
    _store(np.random.default_rng(1)).save(path)
    with np.load(path, allow_pickle=False) as archive:
        kinds = {name: archive[name].dtype.kind for name in archive.files}
        meta = json.loads(str(archive["meta"][0]))
        line_ids = archive["line_ids"].tolist()
    assert set(kinds.values()) <= {"f", "b", "U", "i"}
    assert line_ids == IDS
    assert meta["models"]["voice"] == {"name": "test-voice", "version": "1.0", "dim": 4}
    assert meta["format"] == "speaker-grouping-features" and meta["version"] == 1


def test_image_mean_is_the_unit_length_mean_of_the_frames():
    store = FeatureStore()
    frames = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    store.add(["e:1"], image=[frames], image_model=IMAGE)
    np.testing.assert_allclose(store.image(["e:1"]), [[2**-0.5, 2**-0.5, 0.0]], rtol=1e-6)


def test_add_updates_rows_and_keeps_the_rest():
    rng = np.random.default_rng(2)
    store = _store(rng)
    replacement = _unit_rows(rng, 1, 4)
    store.add([IDS[1]], voice=replacement, voice_model=VOICE, audio_hashes=["changed"])
    store.add(["ep-1a2b3c4d:9"], voice=_unit_rows(rng, 1, 4), voice_model=VOICE)

    np.testing.assert_array_equal(store.voice([IDS[1]]), replacement)
    assert store.source("voice", IDS[1]) == "changed"
    assert store.source("quality", IDS[1]) == "a2"  # quality still describes the old clip
    assert store.source("voice", "ep-1a2b3c4d:9") is None  # added without a hash
    assert store.line_ids == [*IDS, "ep-1a2b3c4d:9"]


def test_a_failed_save_leaves_the_previous_file_readable(tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(3)
    path = tmp_path / "features.npz"
    old = _store(rng)
    old.save(path)
    new = _store(rng)

    def crash(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        new.save(path)
    monkeypatch.undo()

    np.testing.assert_array_equal(FeatureStore.load(path).voice(IDS), old.voice(IDS))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npz"]  # no temp file left


@pytest.mark.parametrize(
    ("other", "kind"),
    [
        (ModelInfo("test-voice", "1.1", 4), "voice"),
        (ModelInfo("test-voice", "1.0", 8), "voice"),
        (ModelInfo("ecapa", "1.0", 4), "voice"),
        (ModelInfo("test-image", "3.0", 3), "image"),
    ],
)
def test_refuses_to_mix_models_in_one_column(other: ModelInfo, kind: str):
    store = _store(np.random.default_rng(4))
    before = store.to_bytes()
    vectors = np.ones((1, other.dim), dtype=np.float32) / np.sqrt(other.dim)
    with pytest.raises(MixedModelsError, match=f"refusing to mix {kind} features of {other.name}"):
        store.add(["ep-1a2b3c4d:7"], **{kind: vectors, f"{kind}_model": other})
    assert store.to_bytes() == before  # nothing changed, not even the new line id


def test_after_dropping_a_column_another_model_is_accepted():
    store = _store(np.random.default_rng(5))
    store.drop("voice")
    store.add([IDS[0]], voice=np.ones((1, 2), np.float32), voice_model=ModelInfo("v", "2", 2))
    assert store.models["voice"] == ModelInfo("v", "2", 2)
    assert store.missing(IDS, "voice") == IDS[1:]


def test_refuses_other_quality_stats_under_the_same_model():
    store = _store(np.random.default_rng(6))
    with pytest.raises(MixedModelsError, match="quality stats"):
        store.add([IDS[0]], quality={"duration": [1.0], "rms_dbfs": [-20.0]}, quality_model=QUALITY)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"voice": np.ones((2, 4))}, "voice_model=ModelInfo"),
        ({"voice": np.ones((2, 5)), "voice_model": VOICE}, r"shape \(2, 5\), expected \(2, 4\)"),
        ({"voice": np.full((2, 4), np.nan), "voice_model": VOICE}, "NaN"),
        ({"image": [np.ones((2, 3))], "image_model": IMAGE}, "for 1 lines, expected 2"),
        ({"voice": np.ones((2, 4)), "voice_model": VOICE, "audio_hashes": ["x"]}, "1 entries"),
        ({"quality": {"duration": [1.0, 2.0]}, "quality_model": QUALITY}, "has dimension 2"),
    ],
)
def test_add_rejects_bad_input_with_a_clear_message(arguments: dict, message: str):
    store = FeatureStore()
    with pytest.raises(ValueError, match=message):
        store.add(["e:1", "e:2"], **arguments)
    assert len(store) == 0


def test_missing_lists_lines_without_a_kind_in_the_order_asked():
    store = _store(np.random.default_rng(7))
    assert store.missing([IDS[2], "other:1", IDS[0]], "image") == [IDS[2], "other:1"]
    assert store.missing(IDS, "voice") == []
    assert FeatureStore().missing(IDS, "quality") == IDS
    with pytest.raises(ValueError, match="unknown feature kind 'audio'"):
        store.missing(IDS, "audio")
    with pytest.raises(KeyError, match=f"no image features for line.s. {IDS[2]}"):
        store.image(IDS)


def test_retain_drops_lines_that_left_the_episode():
    store = _store(np.random.default_rng(8))
    assert store.retain([IDS[0], IDS[2], "new:1"]) == [IDS[1]]
    assert store.line_ids == [IDS[0], IDS[2]]
    frames, owners = store.image_frames([IDS[0]])
    assert len(frames) == 3 and set(owners) == {0}
    assert store.missing([IDS[1]], "voice") == [IDS[1]]


class Tripwire:
    """Unpickling this records it: a load that never unpickles leaves the list empty."""

    fired: list[str] = []  # noqa: RUF012

    def __reduce__(self) -> tuple:
        return (Tripwire.fired.append, ("unpickled!",))


def _arrays_of_a_good_store(path: Path) -> dict[str, np.ndarray]:
    _store(np.random.default_rng(9)).save(path)
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def _pickled_npz(path: Path) -> None:
    arrays = _arrays_of_a_good_store(path)
    arrays["line_ids"] = np.array([Tripwire(), "e:2", "e:3"], dtype=object)
    np.savez(path, **arrays)  # object arrays are pickled inside the .npy member


def _wrong_version(path: Path) -> None:
    arrays = _arrays_of_a_good_store(path)
    meta = json.loads(str(arrays["meta"][0]))
    meta["version"] = 99
    arrays["meta"] = np.array([json.dumps(meta)])
    np.savez(path, **arrays)


def _npy(path: Path) -> None:
    with path.open("wb") as stream:
        np.save(stream, np.arange(3))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(pickle.dumps(Tripwire())), "a pickle, which is never loaded"),
        (_pickled_npz, "holds pickled data"),
        (lambda p: np.savez(p, x=np.arange(3)), "not written by this program"),
        (_npy, "single .npy array"),
        (
            lambda p: p.write_bytes(_store(np.random.default_rng(11)).to_bytes()[:300]),
            "not a readable",
        ),
        (lambda p: p.write_text("line_id,voice\n1,0.5\n"), r"not an \.npz \(zip\) archive"),
        (_wrong_version, "format version 99, but this program reads version 1"),
    ],
    ids=["pickle", "pickled-npz", "other-npz", "npy", "truncated", "text", "version"],
)
def test_loading_a_file_we_did_not_write_fails_cleanly_and_never_unpickles(
    tmp_path: Path, make, reason: str
):
    path = tmp_path / "features.npz"
    make(path)
    Tripwire.fired.clear()
    with pytest.raises(FeatureStoreError, match=reason) as caught:
        FeatureStore.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert Tripwire.fired == []


def test_loading_a_missing_file_names_it(tmp_path: Path):
    with pytest.raises(FeatureStoreError, match=r"nothing\.npz: feature store not found"):
        FeatureStore.load(tmp_path / "nothing.npz")


def test_empty_store_round_trips(tmp_path: Path):
    FeatureStore().save(tmp_path / "features.npz")
    loaded = FeatureStore.load(tmp_path / "features.npz")
    assert loaded.line_ids == [] and loaded.models == {}
