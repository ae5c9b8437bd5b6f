"""bench.decode_work: the frame counts behind the import benchmark's naive-ratio bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.decode_work import decode_work, keyframe_times
from bench.synthetic_video import make_test_video


def test_counts_by_hand() -> None:
    # keyframes at 0 s and 10 s, 10 fps; frames at 1 s, 3 s (first interval) and 12 s
    work = decode_work([0.0, 10.0], 10.0, [1.0, 3.0, 12.0])
    assert (work.frames_naive, work.frames_walk) == (11 + 31 + 21, 31 + 21)
    assert work.intervals_with_requests == 2
    assert work.ratio == pytest.approx(63 / 52)


def test_one_request_per_interval_costs_both_the_same() -> None:
    work = decode_work([0.0, 5.0, 9.0], 24.0, [4.0, 6.0, 9.5])
    assert work.frames_naive == work.frames_walk
    assert work.ratio == pytest.approx(1.0)


def test_no_keyframe_is_an_error() -> None:
    with pytest.raises(ValueError, match="no keyframe"):
        decode_work([], 24.0, [1.0])


def test_keyframe_times_of_a_real_file(tmp_path: Path) -> None:
    video = make_test_video(tmp_path / "clip.mp4", duration_s=4.0, fps=12, gop=12, with_audio=False)
    keyframes, rate = keyframe_times(video)
    assert rate == pytest.approx(12.0)
    assert keyframes[0] == pytest.approx(0.0)
    assert keyframes == sorted(keyframes)
    assert len(keyframes) >= 4  # at most 12 frames apart over 4 s
