"""The simulated annotation loop (bench/bench_loop.py): the prototype's 1-NN workflow on toy
vectors, and our loop on the generated `tiny` episode through the real HTTP backend."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_loop import LoopEpisode, prototype_loop, run_ours, simulate_direct


def _unit(rows: list[list[float]]) -> np.ndarray:
    vectors = np.asarray(rows, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_prototype_corrects_the_first_line_of_each_voice_then_stops():
    voice = _unit([[1, 0], [0, 1], [1, 0.1], [0.1, 1], [1, 0.05]])
    reviews, corrections, wrong = prototype_loop(voice, ["a", "b", "a", "b", "a"])
    # line 1: no reviewed line (wrong); line 2: 1-NN is "a" (wrong); then all right
    assert (reviews, corrections, wrong) == (2, 2, 0)


def test_prototype_reviews_everything_when_voices_mislead():
    voice = _unit([[1, 0], [1, 0.01], [1, 0.02]])
    reviews, corrections, wrong = prototype_loop(voice, ["a", "b", "c"])
    assert (reviews, corrections, wrong) == (3, 3, 0)


@pytest.fixture(scope="module")
def tiny(tiny_episode) -> LoopEpisode:
    return LoopEpisode.from_folder("tiny-seed1", tiny_episode.imported, tiny_episode.truth)


def test_loop_over_http_ends_with_every_proposal_right(tiny, tmp_path):
    result = run_ours(tiny, work_dir=tmp_path, wait_s=20.0, refit_delay_s=0.02)
    assert result.lines == len(tiny.truth)
    assert result.final_wrong == 0
    assert 0 <= result.corrections <= result.reviews <= result.lines
    # every character's first reviewed line needs its name: at least one correction, typed
    assert result.corrections >= 1 and result.typed_names >= 1
    assert result.refit_timeouts == 0 and result.refits == result.corrections
    assert len(result.predict_s) >= result.corrections + 1


def test_direct_loop_ends_with_every_proposal_right(tiny):
    result = simulate_direct(tiny)
    assert result.lines == len(tiny.truth)
    assert result.final_wrong == 0
    assert 1 <= result.corrections <= result.reviews <= result.lines
    assert result.refits >= result.corrections + 1
