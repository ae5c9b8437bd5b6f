"""Lines from detected speech (`importers.speech_segments`), on real speech the tests make.

The probability-level tests build VAD probability tracks by hand, so the rules (hysteresis,
pauses, blips, the cap, padding) are checked exactly. The audio-level tests run the real
silero-vad on real synthesised speech: the generated `tiny` episode, whose true speech times
the generator records, and lines of one synthetic voice spoken back to back with no pause.
The import tests go through the command line, as a user would.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pysrt
import pytest

from bench import voices
from exporters.tagged_subtitles import SpeakerLine, write_tagged_ass, write_tagged_srt
from importers.media import decode_audio, write_wav
from importers.pipeline import ImportOptions, import_episode
from importers.speech_segments import (
    FLAG_NO_SUBTITLES,
    FRAME_S,
    NoSpeechError,
    SpeechSegmentOptions,
    detect_speech_segments,
    merge_close_runs,
    segments_from_probabilities,
    speech_runs,
    split_long_runs,
)
from importers.subtitles import SubtitleError, parse_subtitles
from importers.tracks import TrackChoice
from speaker_grouping.cli import main as cli_main


def track(*pieces: tuple[float, float]) -> np.ndarray:
    """A probability track: (probability, seconds) pieces one after another, 32 ms frames."""
    return np.concatenate(
        [np.full(round(seconds / FRAME_S), p, dtype=np.float32) for p, seconds in pieces]
    )


# ------------------------------------------------------------------ rules, on made-up tracks


def test_hysteresis_starts_at_threshold_and_ends_below_the_lower_one():
    probs = np.array([0.1, 0.4, 0.6, 0.4, 0.4, 0.2, 0.45, 0.1, 0.7, 0.7], dtype=np.float32)
    runs = speech_runs(probs, threshold=0.5, neg_threshold=0.35)
    # 0.4 before the first 0.6 does not start speech; 0.4 after it continues it; the 0.45
    # after a drop below 0.35 does not restart it.
    assert runs.tolist() == [[2, 5], [8, 10]]


def test_short_pauses_stay_inside_a_line_and_long_ones_end_it():
    runs = np.array([[0, 10], [13, 20], [40, 50]])
    assert merge_close_runs(runs, min_pause_frames=5).tolist() == [[0, 20], [40, 50]]
    assert merge_close_runs(runs, min_pause_frames=3).tolist() == [[0, 10], [13, 20], [40, 50]]


@pytest.mark.parametrize(("deep_s", "shallow_s"), [(5.0, 7.0), (7.0, 5.0)])
def test_a_long_stretch_is_cut_at_its_quietest_point_not_blindly(deep_s, shallow_s):
    # 12 s of speech with a deep dip (0.2), a shallow one (0.6) and a deeper one (0.1) that
    # sits 2 s from the start, where a cut would leave 10 s: too long for the cap of 8 s. One
    # cut suffices, and it must be at the deep dip it can use, not at 8 s or in the middle.
    probs = track((0.9, 12.0))
    for at, value in ((2.0, 0.1), (deep_s, 0.2), (shallow_s, 0.6)):
        probs[round(at / FRAME_S) : round(at / FRAME_S) + 3] = value
    runs = split_long_runs(
        np.array([[0, len(probs)]]), probs, max_frames=round(8 / FRAME_S), min_frames=31
    )
    assert len(runs) == 2
    assert runs[0][1] * FRAME_S == pytest.approx(deep_s + FRAME_S, abs=0.04)


def test_twenty_seconds_of_flat_speech_are_split_under_the_cap():
    probs = track((0.0, 1.0), (0.95, 20.0), (0.0, 1.0))
    options = SpeechSegmentOptions(max_line_s=8.0, min_line_s=1.0, pad_s=0.0)
    segments = segments_from_probabilities(probs, duration=22.0, options=options)
    assert len(segments) == 3
    assert all(s.end - s.start <= 8.0 for s in segments)
    assert all(s.end - s.start >= 1.0 for s in segments)
    assert segments[0].start == pytest.approx(1.0, abs=0.04)
    assert segments[-1].end == pytest.approx(21.0, abs=0.04)


def test_blips_are_dropped_and_padding_never_crosses_into_a_neighbour():
    probs = track(
        (0.0, 1.0), (0.9, 1.5), (0.0, 0.3), (0.9, 2.0), (0.0, 2.0), (0.9, 0.1), (0.0, 2.0)
    )
    options = SpeechSegmentOptions(min_pause_s=0.25, min_speech_s=0.2, pad_s=0.2)
    segments = segments_from_probabilities(probs, duration=len(probs) * FRAME_S, options=options)
    assert len(segments) == 2  # the 0.1 s blip is gone
    first, second = segments
    assert first.start == pytest.approx(1.0 - 0.2, abs=0.04)
    # The 0.3 s pause is shared: each side pads 0.15 s, not 0.2 s.
    assert first.end == pytest.approx(second.start, abs=1e-6)
    assert first.speech_end < first.end < second.speech_start
    assert second.end == pytest.approx(second.speech_end + 0.2, abs=1e-3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 0.3, "neg_threshold": 0.5}, "neg_threshold <= threshold"),
        ({"min_pause_s": -1}, "min_pause_s must be >= 0"),
        ({"max_line_s": 1.5, "min_line_s": 1.0}, "2 \\* min_line_s <= max_line_s"),
        ({"max_len": 3}, "unknown speech segment option"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        SpeechSegmentOptions.coerce(options)


# ------------------------------------------------------------------ real speech


def true_speech(made: Path) -> list[tuple[float, float]]:
    spec = json.loads((made / "spec.json").read_text())
    return [(line["speech_start"], line["speech_end"]) for line in spec["lines_detail"]]


def test_segments_line_up_with_the_true_speech_of_a_generated_episode(tiny_episode):
    audio = decode_audio(tiny_episode.made / "episode.mp4")
    segments = detect_speech_segments(audio, source="tiny")
    truth = true_speech(tiny_episode.made)
    lined_up = 0
    for start, end in truth:
        best = max(segments, key=lambda s: min(s.end, end) - max(s.start, start))
        lined_up += abs(best.start - start) <= 0.3 and abs(best.end - end) <= 0.5
    # Not all: two lines with under 0.3 s between them are one segment by design (a pause that
    # short is as often a comma inside a line), and the tiny episode's turns are quick.
    assert lined_up >= 0.75 * len(truth), (lined_up, len(truth))
    # Almost all true speech is inside some segment, and segments are mostly speech.
    covered = sum(
        max(0.0, min(s.end, end) - max(s.start, start)) for start, end in truth for s in segments
    )
    spoken = sum(end - start for start, end in truth)
    assert covered >= 0.95 * spoken
    found = sum(s.end - s.start for s in segments)
    assert found <= 1.25 * spoken


@pytest.fixture(scope="module")
def monologue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """Over 20 s of one synthetic voice, sentence after sentence with no pause: a WAV file."""
    voice = voices.available_voices(allow_mbrola=False)[0]
    sentences = [
        "The river runs past the old mill and under the stone bridge into the town",
        "Every morning the baker opens his shop before the sun comes over the hills",
        "Children run to school along the road while the carts roll down to the market",
        "In the evening the lamps are lit and the square fills with music and voices",
        "Nobody in the town remembers a winter as long as the one that came last year",
        "So they gather by the fire and tell the old stories again until the snow is gone",
    ]
    clips = [voices.synthesize(voice, text) for text in sentences]
    speech = np.concatenate(clips)
    silence = np.zeros(16000, dtype=np.float32)
    path = tmp_path_factory.mktemp("monologue") / "monologue.wav"
    write_wav(path, np.concatenate([silence, speech, silence]), 16000)
    return path, len(speech) / 16000


def test_a_continuous_twenty_second_stretch_is_split_under_the_cap(monologue):
    path, speech_s = monologue
    assert speech_s >= 20.0
    audio = decode_audio(path)
    uncapped = detect_speech_segments(
        audio, source=path, options={"max_line_s": 1000.0, "pad_s": 0.0}
    )
    # The precondition: the VAD hears one stretch far longer than a line.
    assert max(s.end - s.start for s in uncapped) >= 15.0
    options = SpeechSegmentOptions()
    capped = detect_speech_segments(audio, source=path, options=options)
    assert len(capped) >= 3
    for segment in capped:
        assert segment.speech_end - segment.speech_start <= options.max_line_s + 1e-6
        assert segment.speech_end - segment.speech_start >= options.min_line_s - FRAME_S
    # Cuts lose at most a frame each: the pieces still cover the stretch.
    covered = sum(s.speech_end - s.speech_start for s in capped)
    assert covered >= sum(s.end - s.start for s in uncapped) - 2 * FRAME_S * len(capped)


def ffmpeg_video(path: Path, seconds: float, audio_filter: str) -> Path:
    """A small H.264 + AAC file with a black picture and the given lavfi audio source."""
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"color=c=black:s=160x120:r=12:d={seconds}",
            "-f",
            "lavfi",
            "-i",
            audio_filter,
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            "-shortest",
            str(path),
        ],
        check=True,
    )
    return path


def test_a_silent_video_is_a_one_line_error_naming_it(tmp_path, capsys):
    video = ffmpeg_video(tmp_path / "silent.mp4", 3, "anullsrc=r=16000:cl=mono")
    with pytest.raises(NoSpeechError, match=r"silent\.mp4: no speech found"):
        import_episode(video, out_dir=tmp_path / "out", options={"line_source": "speech"})
    code = cli_main(["import", str(video), "--out", str(tmp_path / "out"), "--no-subtitles"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {video}: no speech found")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("tasks.json"))


# ------------------------------------------------------------------ import, group, backend


@pytest.fixture(scope="module")
def speech_import(tiny_episode, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny episode's video alone (its subtitles left behind), imported --no-subtitles with
    features, through the command line."""
    folder = tmp_path_factory.mktemp("nosubs")
    video = folder / "Show - 05.mp4"
    shutil.copy(tiny_episode.made / "episode.mp4", video)
    out = folder / "media"
    assert cli_main(["import", str(video), "--out", str(out), "--no-subtitles", "-q"]) == 0
    (episode_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return video, episode_dir


def test_no_subtitles_import_makes_empty_text_tasks_flagged_no_subtitles(
    speech_import, tiny_episode
):
    _video, episode_dir = speech_import
    tasks = json.loads((episode_dir / "tasks.json").read_text())
    truth = true_speech(tiny_episode.made)
    assert abs(len(tasks) - len(truth)) <= 3
    for number, task in enumerate(tasks, start=1):
        data = task["data"]
        assert data["index"] == number
        assert data["text"] == ""
        assert data["flags"] == [FLAG_NO_SUBTITLES]
        assert data["end"] > data["start"]
        assert (episode_dir / "audio" / f"{number:04d}.wav").stat().st_size > 1000
        assert (episode_dir / "frames" / f"{number:04d}.jpg").is_file()
    starts = [task["data"]["start"] for task in tasks]
    assert starts == sorted(starts)
    report = json.loads((episode_dir / "report.json").read_text())
    assert report["format"] == "speech"
    assert report["subtitles"] is None
    assert report["speech"]["settings"] == json.loads(json.dumps(vars(SpeechSegmentOptions())))
    assert "silero-vad" in report["speech"]["vad"]
    assert "cut from detected speech" in (episode_dir / "report.txt").read_text()
    assert (episode_dir / "features.npz").is_file()


def test_the_backend_predicts_every_no_subtitles_task(speech_import):
    from label_config import load_config
    from ml_backend.config import BackendConfig
    from ml_backend.server import create_app

    _video, episode_dir = speech_import
    tasks = json.loads((episode_dir / "tasks.json").read_text())
    config = BackendConfig(
        model_dir=episode_dir.parent.parent / "models", media_roots=(episode_dir.parent,)
    )
    app = create_app(config)
    try:
        answer = app.test_client().post(
            "/predict",
            json={
                "tasks": [{"id": i, **task} for i, task in enumerate(tasks, start=1)],
                "project": "3.1700000000",
                "label_config": load_config(["Speaker 1", "Speaker 2", "Speaker 3"]),
                "params": {},
            },
        )
    finally:
        app.extensions["speaker_grouping"].close()
    assert answer.status_code == 200, answer.json
    results = answer.json["results"]
    assert len(results) == len(tasks)
    assert all(0.0 <= r["score"] <= 1.0 and r["result"] for r in results)


def test_group_without_subtitles_writes_valid_tagged_subtitles(speech_import, tmp_path):
    video, _episode_dir = speech_import
    out = tmp_path / "grouped"
    assert cli_main(["group", str(video), "--no-subtitles", "--out", str(out), "-q"]) == 0
    stem = video.stem
    with (out / f"{stem}.speakers.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 10
    assert all(row["text"] == "" for row in rows)
    assert len({row["speaker"] for row in rows if row["speaker"]}) >= 2  # the cast has 4 voices
    srt = pysrt.open(str(out / f"{stem}.speakers.srt"), error_handling=pysrt.ERROR_RAISE)
    assert len(srt) == len(rows)
    assert [item.text for item in srt] == [
        f"[{row['speaker']}]" if row["speaker"] else "[speech]" for row in rows
    ]


def test_fallback_uses_subtitles_when_there_are_some_and_speech_when_not(tiny_episode, tmp_path):
    alone = tmp_path / "alone" / "ep.mp4"
    alone.parent.mkdir()
    shutil.copy(tiny_episode.made / "episode.mp4", alone)
    with_subs = tmp_path / "with" / "ep.mp4"
    with_subs.parent.mkdir()
    shutil.copy(tiny_episode.made / "episode.mp4", with_subs)
    shutil.copy(tiny_episode.made / "episode.srt", with_subs.with_suffix(".srt"))
    options = ImportOptions(line_source="subtitles-or-speech")
    from_speech = import_episode(alone, out_dir=tmp_path / "a", options=options)
    from_subs = import_episode(with_subs, out_dir=tmp_path / "b", options=options)
    assert from_speech.subtitles.format == "speech"
    assert all(task["data"]["text"] == "" for task in from_speech.tasks)
    assert from_subs.subtitles.format == "srt"
    assert all(task["data"]["text"] for task in from_subs.tasks)
    assert all(FLAG_NO_SUBTITLES not in task["data"]["flags"] for task in from_subs.tasks)
    # Without the fallback, no subtitles is still the error it always was.
    with pytest.raises(ValueError, match="none found beside it"):
        import_episode(alone, out_dir=tmp_path / "c")


def test_no_subtitles_contradicts_subs_on_the_command_line(tiny_episode, tmp_path, capsys):
    code = cli_main(
        [
            "import",
            str(tiny_episode.made / "episode.mp4"),
            "--subs",
            str(tiny_episode.made / "episode.srt"),
            "--no-subtitles",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "--no-subtitles and --subs contradict" in capsys.readouterr().err


def test_vad_flags_reach_the_segmenter(tiny_episode, tmp_path):
    video = tiny_episode.made / "episode.mp4"
    out = tmp_path / "out"
    args = ["import", str(video), "--out", str(out), "--no-subtitles", "--no-features", "-q"]
    assert cli_main([*args, "--max-line", "2.5", "--min-pause", "0.15"]) == 0
    (episode_dir,) = [p for p in out.iterdir() if p.is_dir()]
    report = json.loads((episode_dir / "report.json").read_text())
    assert report["speech"]["settings"]["max_line_s"] == 2.5
    assert report["speech"]["settings"]["min_pause_s"] == 0.15
    tasks = json.loads((episode_dir / "tasks.json").read_text())
    pad = SpeechSegmentOptions().pad_s
    assert all(t["data"]["end"] - t["data"]["start"] <= 2.5 + 2 * pad + 1e-3 for t in tasks)


# ------------------------------------------------------------------ exporters, empty text


def test_tagged_subtitles_of_lines_without_text_are_valid_and_read_back(tmp_path):
    rows = [
        SpeakerLine(index=1, start=1.0, end=2.5, text="", speaker="Yui"),
        SpeakerLine(index=2, start=3.0, end=4.0, text="", speaker=None),
        SpeakerLine(index=3, start=5.0, end=6.0, text="Hello there", speaker="Ken"),
    ]
    srt_path = tmp_path / "out.srt"
    write_tagged_srt(rows, srt_path)
    strict = pysrt.open(str(srt_path), error_handling=pysrt.ERROR_RAISE)
    assert [item.text for item in strict] == ["[Yui]", "[speech]", "Ken: Hello there"]
    parsed = parse_subtitles(srt_path)
    assert parsed.skipped == []
    assert [(line.start, line.end) for line in parsed.lines] == [(1.0, 2.5), (3.0, 4.0), (5.0, 6.0)]
    ass_path = tmp_path / "out.ass"
    write_tagged_ass(rows, ass_path)
    parsed_ass = parse_subtitles(ass_path)
    assert parsed_ass.skipped == []
    assert [(line.actor, line.text) for line in parsed_ass.lines] == [
        ("Yui", "[Yui]"),
        (None, "[speech]"),
        ("Ken", "Hello there"),
    ]


def test_fallback_never_replaces_subtitles_the_user_named(tiny_episode, tmp_path):
    alone = tmp_path / "alone" / "ep.mp4"
    alone.parent.mkdir()
    shutil.copy(tiny_episode.made / "episode.mp4", alone)
    fallback = ImportOptions(line_source="subtitles-or-speech")
    with pytest.raises(SubtitleError, match=r"missing\.srt: cannot read"):  # still an error
        import_episode(
            alone, subtitles=tmp_path / "missing.srt", out_dir=tmp_path / "a", options=fallback
        )
    with pytest.raises(SubtitleError, match="track"):  # so does a track the video lacks
        import_episode(
            alone,
            out_dir=tmp_path / "b",
            options=ImportOptions(
                line_source="subtitles-or-speech", tracks=TrackChoice(subtitle_track=7)
            ),
        )
    speech_only = ImportOptions(line_source="speech")
    with pytest.raises(ValueError, match="take no subtitle file or track"):
        import_episode(
            alone,
            subtitles=tiny_episode.made / "episode.srt",
            out_dir=tmp_path / "c",
            options=speech_only,
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
