import json

import numpy as np
import pytest

from ml_backend.episode_lines import MixedEmbeddersError, load_lines
from ml_backend.features.store import FeatureStore, ModelInfo
from ml_backend.grouping.lines import concatenate, select

VOICE = ModelInfo("voice-x", "1", 4)
IMAGE = ModelInfo("image-y", "2", 3)
QUALITY = ModelInfo("q", "1", 4)


def _episode(folder, episode="ep", n=4, voice_model=VOICE, missing_voice=()):
    folder.mkdir(parents=True)
    ids = [f"{episode}:{i}" for i in range(1, n + 1)]
    # tasks.json out of order: load_lines must put lines in cue order
    tasks = [
        {
            "data": {
                "line_id": ids[i],
                "episode": episode,
                "index": i + 1,
                "start": 2.0 * i,
                "end": 2.0 * i + 1.5,
                "text": f"line {i + 1}",
            }
        }
        for i in reversed(range(n))
    ]
    (folder / "tasks.json").write_text(json.dumps(tasks))
    rng = np.random.default_rng(0)
    store = FeatureStore()
    with_voice = [i for i in ids if i not in missing_voice]
    store.add(with_voice, voice=rng.normal(size=(len(with_voice), 4)), voice_model=voice_model)
    store.add(ids, image=rng.normal(size=(n, 3)), image_model=IMAGE)
    store.add(
        ids,
        quality={
            "duration": [1.5] * n,
            "speech_ratio": [0.5] * n,
            "snr_db": [30.0] * n,
            "rms_dbfs": [-20.0] * n,
        },
        quality_model=QUALITY,
    )
    store.save(folder / "features.npz")
    return folder


def test_load_lines_reads_both_files_in_cue_order(tmp_path):
    lines = load_lines([_episode(tmp_path / "a", missing_voice=("ep:2",))])
    assert lines.line_ids == ["ep:1", "ep:2", "ep:3", "ep:4"]
    assert lines.texts[0] == "line 1"
    assert lines.voice.shape == (4, 4) and lines.image.shape == (4, 3)
    np.testing.assert_allclose(np.linalg.norm(lines.voice[[0, 2, 3]], axis=1), 1, rtol=1e-5)
    assert not lines.voice[1].any() and not lines.has_voice[1]
    assert lines.voice_model == "voice-x 1" and lines.image_model == "image-y 2"
    assert lines.quality["snr_db"].dtype == np.float32


def test_several_episodes_concatenate_in_the_order_given(tmp_path):
    lines = load_lines([_episode(tmp_path / "b", "b", 2), _episode(tmp_path / "a", "a", 3)])
    assert lines.episodes == ["b", "b", "a", "a", "a"]
    assert lines.index_of("a:1") == 2


def test_episodes_of_different_models_are_refused(tmp_path):
    other = ModelInfo("voice-z", "1", 4)
    with pytest.raises(MixedEmbeddersError, match="voice-z"):
        load_lines(
            [_episode(tmp_path / "a", "a"), _episode(tmp_path / "b", "b", voice_model=other)]
        )


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tasks\.json"):
        load_lines([tmp_path])


def test_select_and_concatenate_round_trip(tmp_path):
    lines = load_lines([_episode(tmp_path / "a", n=5)])
    part = select(lines, [3, 0])
    assert part.line_ids == ["ep:4", "ep:1"]
    np.testing.assert_array_equal(part.voice[1], lines.voice[0])
    mask = np.array([True, False, True, False, False])
    assert select(lines, mask).line_ids == ["ep:1", "ep:3"]
    joined = concatenate([select(lines, [0, 1]), select(lines, [2, 3, 4])])
    assert joined.line_ids == lines.line_ids
