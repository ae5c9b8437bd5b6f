"""bench.ceiling: the 1-NN evidence measure behind the notes on what the embeddings allow."""

from __future__ import annotations

import numpy as np
import pytest

from bench.ceiling import nn_accuracy, spaces


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_nn_accuracy_matches_brute_force_and_skips_lone_speakers() -> None:
    rng = np.random.default_rng(0)
    vectors = _unit(rng.normal(size=(40, 8)))
    codes = rng.integers(0, 4, size=40)
    codes[0] = 9  # speaks once: not scored
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    expected = np.mean((codes[nearest] == codes)[1:])
    assert nn_accuracy(vectors, codes) == pytest.approx(expected)


def test_a_line_without_a_vector_is_never_right() -> None:
    vectors = _unit(np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]))
    vectors[3] = 0.0
    # line 3 has no vector, so line 2 is left with only the other speaker's lines around it
    assert nn_accuracy(vectors, np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    assert np.isnan(nn_accuracy(vectors, np.array([0, 1, 2, 3])))


def test_oracle_whitening_helps_where_one_direction_carries_only_noise() -> None:
    # four speakers apart in dims 1-15; dim 0 carries ten times more noise and nothing else
    rng = np.random.default_rng(1)
    codes = np.repeat(np.arange(4), 50)
    centres = rng.normal(size=(4, 16))
    centres[:, 0] = 0.0
    noise = rng.normal(size=(200, 16)) * 0.5
    noise[:, 0] *= 10.0
    voice = _unit(centres[codes] * 0.5 + noise)
    out = spaces(voice, None, np.zeros(200, dtype=np.int64), codes, codes)
    assert set(out) == {"voice", "voice centred", "voice adapted", "voice oracle"}
    assert nn_accuracy(out["voice oracle"], codes) >= nn_accuracy(out["voice"], codes) + 0.02
    # cold-start clusters equal to the truth make the adapted space the oracle one
    np.testing.assert_allclose(out["voice adapted"], out["voice oracle"], atol=1e-6)


def test_no_built_episode_is_a_clear_error_and_writes_nothing(tmp_path, capsys) -> None:
    from bench.ceiling import main

    out = tmp_path / "ceiling.json"
    assert main(["--episodes", "no-such-episode", "--out", str(out)]) == 1
    assert "no built evaluation episode" in capsys.readouterr().err
    assert not out.exists()
