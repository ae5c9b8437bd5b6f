"""importers.media on real files made by bench.synthetic_video.

Each synthetic frame carries its frame number as a bar code and each second of audio is a
tone naming the second, so these tests check that a frame or clip came from the right time,
not merely that a file was written.
"""

from __future__ import annotations

import logging
import math
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bench.synthetic_video import make_test_video, read_frame_index, tone_frequency
from importers.media import (
    LOOP_FILTER_SKIPS,
    ClipOptions,
    MediaError,
    decode_audio,
    extract_frames,
    plan_walks,
    probe_media,
    slice_clip,
    write_wav,
)

FPS = 24
DURATION_S = 6.0
RATE = 16000


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short files of every shape the importer meets; a keyframe every half second."""
    folder = tmp_path_factory.mktemp("media")
    made = {
        name: make_test_video(folder / name, duration_s=DURATION_S, fps=FPS, gop=12)
        for name in ("episode.mp4", "episode.mkv")
    }
    made["silent.mp4"] = make_test_video(
        folder / "silent.mp4", duration_s=2, fps=FPS, with_audio=False
    )
    made["song.m4a"] = make_test_video(folder / "song.m4a", duration_s=3, with_video=False)
    made["late_audio.mkv"] = make_test_video(
        folder / "late_audio.mkv", duration_s=3, fps=FPS, audio_start_s=1.0
    )
    return made


def dominant_frequency(samples: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def expected_frame(seconds: float, *, last: int) -> int:
    """First frame at or after ``seconds`` (1 ms tolerance, as Matroska rounds), or the last."""
    return min(last, math.ceil((seconds - 1e-3) * FPS))


def one_line(error: pytest.ExceptionInfo[MediaError], path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize("name", ["episode.mp4", "episode.mkv"])
def test_probe_media_reports_streams_size_rate_and_duration(videos, name):
    info = probe_media(videos[name])

    assert info.path == videos[name]
    assert info.has_audio and info.has_video
    assert (info.width, info.height) == (320, 240)
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(DURATION_S, abs=0.1)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")


def test_probe_media_of_audio_only_file(videos):
    info = probe_media(videos["song.m4a"])

    assert info.has_audio and not info.has_video
    assert info.width is info.height is info.fps is info.video_codec is None


@pytest.mark.parametrize("name", ["episode.mp4", "episode.mkv"])
def test_decode_audio_is_16k_mono_float_on_the_video_timeline(videos, name):
    audio = decode_audio(videos[name])

    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) / RATE == pytest.approx(DURATION_S, abs=0.05)
    assert 0.2 < np.abs(audio).max() <= 1.0
    for second in range(int(DURATION_S)):
        middle = audio[int((second + 0.1) * RATE) : int((second + 0.9) * RATE)]
        assert dominant_frequency(middle) == pytest.approx(tone_frequency(second), abs=5)


def tone_change_time(audio: np.ndarray, second: int, rate: int = RATE) -> float:
    """When the tone of ``second - 1`` gives way to that of ``second``, to 2.5 ms."""

    def strength(at: float, frequency: float) -> float:
        window = audio[round(at * rate) - 160 : round(at * rate) + 160]
        phases = np.exp(-2j * np.pi * frequency * np.arange(len(window)) / rate)
        return float(abs(window @ phases))

    for at in np.arange(second - 0.1, second + 0.1, 0.0025):
        if strength(at, tone_frequency(second)) > strength(at, tone_frequency(second - 1)):
            return float(at)
    raise AssertionError(f"no tone change near {second} s")


@pytest.mark.parametrize("name", ["episode.mp4", "episode.mkv", "late_audio.mkv"])
def test_audio_lines_up_with_the_timeline_to_the_millisecond(videos, name):
    # AAC encoders prepend ~1024 samples of priming (21 ms at 48 kHz); a decoder that
    # forgot to drop them, or a late-starting track placed at 0, would shift every clip.
    audio = decode_audio(videos[name])

    assert tone_change_time(audio, 2) == pytest.approx(2.0, abs=0.006)


def test_decode_audio_places_late_audio_after_silence(videos):
    audio = decode_audio(videos["late_audio.mkv"])

    assert np.abs(audio[: int(0.95 * RATE)]).max() < 1e-3
    second_two = audio[int(2.1 * RATE) : int(2.9 * RATE)]
    assert dominant_frequency(second_two) == pytest.approx(tone_frequency(2), abs=5)


def test_decode_audio_can_resample_to_another_rate(videos):
    audio = decode_audio(videos["episode.mkv"], sample_rate=8000)

    assert len(audio) / 8000 == pytest.approx(DURATION_S, abs=0.05)
    second = audio[int(3.1 * 8000) : int(3.9 * 8000)]
    assert dominant_frequency(second, 8000) == pytest.approx(tone_frequency(3), abs=5)


@pytest.mark.parametrize(("start", "end"), [(0.3, 0.7), (2.25, 2.8), (4.2, 4.65)])
def test_clip_holds_the_audio_of_its_span(videos, start, end):
    audio = decode_audio(videos["episode.mp4"])

    clip = slice_clip(audio, start, end, options=ClipOptions(pad_ms=150))

    assert len(clip) == pytest.approx((end - start + 0.3) * RATE, abs=2)
    assert dominant_frequency(clip) == pytest.approx(tone_frequency(int(start)), abs=5)


def test_slice_clip_pads_both_sides():
    audio = np.arange(10 * RATE, dtype=np.float32)

    clip = slice_clip(audio, 2.0, 3.0, options={"pad_ms": 250})

    assert clip[0] == 1.75 * RATE
    assert clip[-1] == 3.25 * RATE - 1


@pytest.mark.parametrize(
    ("start", "end", "first", "stop"),
    [
        (0.05, 1.0, 0, int(1.15 * RATE)),  # padding before 0 is clamped
        (9.5, 12.0, int(9.35 * RATE), 10 * RATE),  # span past the end is clamped
        (11.0, 12.0, None, None),  # span wholly after the audio is empty
    ],
)
def test_slice_clip_clamps_to_the_audio(start, end, first, stop):
    audio = np.arange(10 * RATE, dtype=np.float32)

    clip = slice_clip(audio, start, end)

    if first is None:
        assert len(clip) == 0
    else:
        assert (clip[0], clip[-1] + 1) == (first, stop)


def test_slice_clip_honours_the_sample_rate_option():
    audio = np.arange(8000 * 4, dtype=np.float32)

    clip = slice_clip(audio, 1.0, 2.0, options=ClipOptions(pad_ms=0, sample_rate=8000))

    assert (clip[0], len(clip)) == (8000, 8000)


@pytest.mark.parametrize(
    ("start", "end", "options", "message"),
    [
        (2.0, 1.0, None, "ends before it starts"),
        (float("nan"), 1.0, None, "must be finite"),
        (0.0, 1.0, {"padding": 3}, r"unknown clip option\(s\) \['padding'\]"),
    ],
)
def test_slice_clip_rejects_bad_input(start, end, options, message):
    with pytest.raises(ValueError, match=message):
        slice_clip(np.zeros(RATE, dtype=np.float32), start, end, options=options)


def test_write_wav_writes_16_bit_mono_and_clips(tmp_path):
    samples = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0], dtype=np.float32)
    target = tmp_path / "line.wav"

    write_wav(target, samples, 16000)

    with wave.open(str(target)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        written = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert written.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767]
    assert [path.name for path in tmp_path.iterdir()] == ["line.wav"]  # no temporary left


def test_write_wav_rejects_stereo(tmp_path):
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "x.wav", np.zeros((2, 10), dtype=np.float32), 16000)


def read_index(path: Path) -> int:
    return read_frame_index(np.asarray(Image.open(path).convert("L")))


FRAME_TIMES = [
    3.51,  # out of order on purpose
    0.0,
    0.5,
    10 / FPS,  # exactly on a frame
    10 / FPS + 0.0005,  # just after a frame: still that frame within tolerance
    1.02,
    1.02,  # the same time twice
    2.9,
    5.96,
    30.0,  # past the end: the last frame
]


@pytest.mark.parametrize("name", ["episode.mp4", "episode.mkv"])
def test_each_frame_shows_the_requested_time(videos, tmp_path, name):
    requests = [(seconds, tmp_path / f"{i}.jpg") for i, seconds in enumerate(FRAME_TIMES)]

    extract_frames(videos[name], requests)

    last = int(DURATION_S * FPS) - 1
    got = [read_index(path) for _, path in requests]
    assert got == [expected_frame(seconds, last=last) for seconds, _ in requests]


def test_far_apart_requests_seek_and_stay_exact(videos, tmp_path, caplog):
    times = [0.2, 4.3, 5.5]  # gaps of seconds with a keyframe every half second
    requests = [(seconds, tmp_path / f"{i}.jpg") for i, seconds in enumerate(times)]

    with caplog.at_level(logging.DEBUG, logger="importers.media"):
        extract_frames(videos["episode.mkv"], requests)

    assert any("seeked" in record.getMessage() for record in caplog.records)
    assert [read_index(path) for _, path in requests] == [
        expected_frame(seconds, last=10**6) for seconds in times
    ]


def test_frames_are_shrunk_to_max_width_and_report_progress(videos, tmp_path):
    requests = [(t, tmp_path / f"{t}.jpg") for t in (1.0, 2.0, 3.0)]
    calls = []

    extract_frames(
        videos["episode.mp4"],
        requests,
        max_width=160,
        jpeg_quality=70,
        hook=lambda step, *, completed, total: calls.append((step, completed, total)),
    )

    for seconds, path in requests:
        with Image.open(path) as image:
            assert image.size == (160, 120)
        assert read_index(path) == expected_frame(seconds, last=10**6)
    assert calls[-1] == ("frames", 3, 3)
    assert [completed for _, completed, _ in calls] == sorted(
        completed for _, completed, _ in calls
    )


def test_no_requests_writes_nothing(videos, tmp_path):
    extract_frames(videos["episode.mp4"], [])

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"jpeg_quality": 0}, "jpeg_quality"), ({"max_width": 1}, "max_width")],
)
def test_extract_frames_rejects_bad_options(videos, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_frames(videos["episode.mp4"], [(1.0, tmp_path / "a.jpg")], **kwargs)


# --- bad input: one clear line naming the file ---------------------------------------


def test_video_without_audio_has_no_clips(videos):
    path = videos["silent.mp4"]

    with pytest.raises(MediaError, match="no audio stream") as error:
        decode_audio(path)

    one_line(error, path)


def test_audio_only_file_has_no_frames(videos, tmp_path):
    path = videos["song.m4a"]

    with pytest.raises(MediaError, match="no video stream") as error:
        extract_frames(path, [(1.0, tmp_path / "a.jpg")])

    one_line(error, path)
    assert not (tmp_path / "a.jpg").exists()


def test_mp4_cut_in_half_is_unreadable_with_ffmpegs_reason(videos, tmp_path):
    # An MP4 written front to back keeps its index (moov) at the end, so half a file has none.
    data = videos["episode.mp4"].read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])

    for read in (probe_media, decode_audio):
        with pytest.raises(MediaError, match="moov atom not found") as error:
            read(path)
        one_line(error, path)


def test_mkv_cut_in_half_gives_what_is_there_and_warns(videos, tmp_path, caplog):
    # Matroska streams its index-free clusters in order, so FFmpeg decodes up to the cut.
    data = videos["episode.mkv"].read_bytes()
    path = tmp_path / "half.mkv"
    path.write_bytes(data[: len(data) // 2])

    with caplog.at_level(logging.WARNING, logger="importers.media"):
        audio = decode_audio(path)
    requests = [(1.0, tmp_path / "early.jpg"), (5.5, tmp_path / "late.jpg")]
    extract_frames(path, requests)

    assert 0.5 * RATE < len(audio) < DURATION_S * RATE * 0.9
    assert any("truncated" in record.getMessage() for record in caplog.records)
    assert read_index(tmp_path / "early.jpg") == FPS
    assert FPS < read_index(tmp_path / "late.jpg") < expected_frame(5.5, last=10**6)


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (np.random.default_rng(0).bytes(20000), "noise.mp4"),
        (b"", "empty.mkv"),
    ],
)
def test_non_media_file_is_refused(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)

    for read in (probe_media, decode_audio):
        with pytest.raises(MediaError, match="cannot open as media") as error:
            read(path)
        one_line(error, path)


def test_subtitles_named_like_a_video_are_refused(tmp_path):
    # FFmpeg recognises SRT by its content and opens it: a file with no audio or video.
    path = tmp_path / "episode.mkv"
    path.write_bytes(b"1\n00:00:01,000 --> 00:00:02,000\nHello\n\n" * 20)

    with pytest.raises(MediaError, match="no audio or video stream") as error:
        probe_media(path)
    one_line(error, path)
    with pytest.raises(MediaError, match="no audio stream"):
        decode_audio(path)
    with pytest.raises(MediaError, match="no video stream"):
        extract_frames(path, [(1.0, tmp_path / "a.jpg")])


def test_unsupported_video_codec_is_refused(videos, tmp_path):
    # Rename the Matroska codec id: FFmpeg parses the file but knows no such codec.
    data = videos["episode.mkv"].read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path = tmp_path / "unknown_codec.mkv"
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_NOSUCH/CODEC1"))

    with pytest.raises(MediaError, match="unsupported video codec") as error:
        probe_media(path)
    one_line(error, path)
    with pytest.raises(MediaError, match="unsupported video codec"):
        extract_frames(path, [(1.0, tmp_path / "a.jpg")])
    # The audio track is intact, so its clips can still be cut.
    assert len(decode_audio(path)) == pytest.approx(DURATION_S * RATE, rel=0.01)


@pytest.mark.parametrize("read", [probe_media, decode_audio])
def test_missing_file_is_named(tmp_path, read):
    path = tmp_path / "nowhere.mkv"

    with pytest.raises(MediaError, match="no such file") as error:
        read(path)

    one_line(error, path)


def test_folder_is_not_a_media_file(tmp_path):
    with pytest.raises(MediaError, match="not a regular file"):
        probe_media(tmp_path)


def test_seeking_in_mp4_with_b_frames_lands_on_the_keyframe_and_terminates(tmp_path: Path):
    """Regression: MP4 indexes keyframes by decode time, and a backward seek to that time
    landed one keyframe early, so the walk sought to the same place forever (the bundled
    sample episode hung `make demo`)."""
    import signal

    video = make_test_video(tmp_path / "bframes.mp4", duration_s=20, fps=24, gop=72)
    times = [0.3, 9.7, 18.5]
    requests = [(t, tmp_path / f"{i}.jpg") for i, t in enumerate(times)]

    def hung(*_: object) -> None:
        raise TimeoutError("extract_frames did not finish")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        extract_frames(video, requests)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    for seconds, out in requests:
        shown = read_frame_index(np.asarray(Image.open(out).convert("L")))
        assert shown == math.ceil(seconds * 24 - 1e-6)


# --- split walks: N decoders over N contiguous shares of the requests --------------------


def keyframe_seconds(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(
            float(packet.pts * stream.time_base)
            for packet in container.demux(stream)
            if packet.is_keyframe and packet.pts is not None
        )


def boundary_times(keys: list[float]) -> list[float]:
    """Requests on both sides of every keyframe, where walks are cut."""
    times = []
    for key in keys[1:]:
        times += [
            key - 1 / FPS - 0.0004,  # the frame before the keyframe
            key - 0.0004,  # within tolerance of the keyframe: the keyframe itself
            key,
            key + 0.3,
        ]
    return [*times, 30.0]  # and one past the end


@pytest.mark.parametrize("name", ["episode.mp4", "episode.mkv"])
@pytest.mark.parametrize("walks", [2, 3, 5])
def test_split_walks_give_the_same_frames_as_one_walk(videos, tmp_path, caplog, name, walks):
    times = boundary_times(keyframe_seconds(videos[name]))
    one = [(seconds, tmp_path / "one" / f"{i}.jpg") for i, seconds in enumerate(times)]
    split = [(seconds, tmp_path / "split" / f"{i}.jpg") for i, seconds in enumerate(times)]

    extract_frames(videos[name], one, walks=1, skip_loop_filter="default")
    with caplog.at_level(logging.DEBUG, logger="importers.media"):
        extract_frames(videos[name], split, walks=walks, skip_loop_filter="default")

    assert any(f"{walks} walks starting at" in record.getMessage() for record in caplog.records)
    last = int(DURATION_S * FPS) - 1
    expected = [expected_frame(seconds, last=last) for seconds in times]
    assert [read_index(path) for _, path in one] == expected
    assert [read_index(path) for _, path in split] == expected
    for (_, a), (_, b) in zip(one, split, strict=True):  # the very same decoded pictures
        assert a.read_bytes() == b.read_bytes()


def test_split_walks_report_progress_in_rising_order(videos, tmp_path):
    requests = [(t / 4, tmp_path / f"{t}.jpg") for t in range(24)]
    calls = []

    extract_frames(
        videos["episode.mkv"],
        requests,
        walks=3,
        hook=lambda step, *, completed, total: calls.append((step, completed, total)),
    )

    assert calls[-1] == ("frames", 24, 24)
    assert [completed for _, completed, _ in calls] == sorted(
        completed for _, completed, _ in calls
    )


def test_an_error_in_a_later_walk_is_raised(videos, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    requests = [(t / 4, tmp_path / f"{t}.jpg") for t in range(24)]
    requests[-1] = (requests[-1][0], blocker / "last.jpg")  # in the last walk

    with pytest.raises(OSError):
        extract_frames(videos["episode.mkv"], requests, walks=3)


def test_walk_past_a_damaged_tail_falls_back_to_decoding_from_the_start(videos, tmp_path, caplog):
    # An MP4 with its index in front, cut in half: the index names keyframes past the cut,
    # so a later walk seeks to where there is nothing to decode.
    whole = tmp_path / "front_index.mp4"
    with (
        av.open(str(videos["episode.mp4"])) as source,
        av.open(str(whole), "w", options={"movflags": "faststart"}) as target,
    ):
        video = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                target.mux(packet)
    data = whole.read_bytes()
    path = tmp_path / "front_index_half.mp4"
    path.write_bytes(data[: len(data) // 2])
    requests = [(1.0, tmp_path / "early.jpg"), (5.5, tmp_path / "late.jpg")]

    with caplog.at_level(logging.WARNING, logger="importers.media"):
        extract_frames(path, requests, walks=2)

    assert any("decoding from the start" in record.getMessage() for record in caplog.records)
    assert read_index(tmp_path / "early.jpg") == FPS
    assert FPS < read_index(tmp_path / "late.jpg") < expected_frame(5.5, last=10**6)


@pytest.mark.parametrize(
    ("times", "keys", "walks", "starts"),
    [
        # four keyframe intervals of equal work, two walks: cut in the middle
        ([0.5, 1.5, 2.5, 3.5], [0.0, 1.0, 2.0, 3.0], 2, [0, 2]),
        # requests sharing a keyframe interval stay together
        ([2.6, 2.7, 2.7, 2.9, 3.4], [0.0, 2.0, 4.0], 3, [0]),
        # more walks than intervals: one walk per interval
        ([0.9, 2.9, 4.9], [0.0, 2.0, 4.0], 8, [0, 1, 2]),
        # the work is balanced by decoded seconds, not by request count
        ([1.9, 11.0, 11.1, 11.2, 11.3, 11.4], [0.0, 10.0, 20.0], 2, [0, 1]),
        # no keyframe index: a later walk could not seek to its start
        ([0.5, 1.5, 2.5], [], 2, [0]),
        ([0.5, 1.5, 2.5], [0.0, 1.0, 2.0], 1, [0]),
    ],
)
def test_plan_walks_cuts_between_keyframe_intervals(times, keys, walks, starts):
    assert plan_walks(times, keys, walks) == starts


def test_plan_walks_balances_long_episodes():
    keys = [10.0 * k for k in range(144)]  # 24 minutes, a keyframe every 10 s
    times = sorted(3.6 * k + 1.7 for k in range(400))

    starts = plan_walks(times, keys, 2)

    assert len(starts) == 2 and 180 <= starts[1] <= 220
    before = keys[int((times[starts[1]] - 0.5) // 10)]
    assert times[starts[1] - 1] - 0.5 < before  # the cut is at a keyframe interval's start


def test_plan_walks_rejects_no_walks():
    with pytest.raises(ValueError, match="walks must be at least 1"):
        plan_walks([1.0], [0.0], 0)


@pytest.mark.parametrize("mode", LOOP_FILTER_SKIPS)
def test_skipping_the_loop_filter_keeps_the_right_frame_and_a_close_picture(videos, tmp_path, mode):
    times = [0.3, 1.2, 2.45, 3.9, 5.2]
    exact = [(t, tmp_path / "exact" / f"{t}.jpg") for t in times]
    fast = [(t, tmp_path / mode / f"{t}.jpg") for t in times]

    extract_frames(videos["episode.mkv"], exact, skip_loop_filter="default", jpeg_quality=100)
    extract_frames(videos["episode.mkv"], fast, skip_loop_filter=mode, jpeg_quality=100)

    for (seconds, a), (_, b) in zip(exact, fast, strict=True):
        assert read_index(b) == expected_frame(seconds, last=10**6)
        luma_a = np.asarray(Image.open(a).convert("L"), dtype=np.float64)
        luma_b = np.asarray(Image.open(b).convert("L"), dtype=np.float64)
        mse = ((luma_a - luma_b) ** 2).mean()
        assert mse == 0 or 10 * math.log10(255**2 / mse) >= 35


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"walks": 0}, "walks must be at least 1"),
        ({"skip_loop_filter": "nonref"}, "skip_loop_filter must be one of"),
    ],
)
def test_extract_frames_rejects_bad_decode_options(videos, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_frames(videos["episode.mp4"], [(1.0, tmp_path / "a.jpg")], **kwargs)
