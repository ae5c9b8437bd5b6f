"""bench.decode_work: the frame counts behind the import benchmark's naive-ratio bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.decode_work import decode_work, main
from bench.synthetic_video import make_test_video, srt_text
from importers.media import MediaError, keyframe_index


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


def test_keyframe_index_of_a_real_file(tmp_path: Path) -> None:
    video = make_test_video(tmp_path / "clip.mkv", duration_s=4.0, fps=12, gop=12, with_audio=False)
    keyframes, rate = keyframe_index(video)
    assert rate == pytest.approx(12.0)
    assert keyframes[0] == pytest.approx(0.0)
    assert keyframes == sorted(keyframes)
    assert len(keyframes) >= 4  # at most 12 frames apart over 4 s


def test_keyframe_index_of_a_file_without_video_is_a_one_line_error(tmp_path: Path) -> None:
    audio_only = make_test_video(tmp_path / "sound.mkv", duration_s=1.0, with_video=False)
    with pytest.raises(MediaError, match="no video stream"):
        keyframe_index(audio_only)


def test_command_reads_subtitles_as_import_does(tmp_path: Path, capsys) -> None:
    video = make_test_video(tmp_path / "clip.mkv", duration_s=4.0, fps=12, gop=12, with_audio=False)
    subtitles = tmp_path / "clip.srt"
    # the second cue ends before it starts: import skips it, and so does the count
    subtitles.write_text(srt_text([(0.5, 1.5), (3.0, 2.0), (2.2, 3.4)]), encoding="utf-8")
    assert main([str(video), str(subtitles)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["requests"] == 2
    assert report["frames_naive"] >= report["frames_walk"] > 0
