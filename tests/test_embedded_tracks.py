"""`import` of fan-release containers: subtitles inside the video, and a choice of audio track.

Every file is built here with the bundled FFmpeg (imageio-ffmpeg): HEVC Main 10 in MKV with two
audio tracks, an ASS track and a font attachment; an MP4 with mov_text; an MKV with a full and a
"Signs & Songs" track; a PGS-only MKV (its .sup stream is written here, segment by segment); and
a video with no subtitles. Each audio track is a pure tone of its own, so a clip's dominant
frequency tells which track it was cut from.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from pathlib import Path
from urllib.parse import unquote

import imageio_ffmpeg
import matplotlib
import numpy as np
import pytest
from PIL import Image

from importers.media import MediaError, decode_audio, probe_media
from importers.pipeline import import_episode
from importers.subtitles import SubtitleError
from importers.tasks import LOCAL_FILES_PREFIX
from importers.tracks import (
    TrackChoice,
    choose_audio_track,
    choose_subtitles,
    language_key,
    list_tracks,
    read_subtitle_track,
    track_table,
)
from speaker_grouping.cli import main as cli_main

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
DURATION_S = 4
JAPANESE_HZ = 400.0
ENGLISH_HZ = 1200.0
FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "STIXSizTwoSymBol.ttf"  # 12 KB

STYLE_FIELDS = (
    "Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
    "Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, "
    "Shadow, Alignment, MarginL, MarginR, MarginV, Encoding"
)
STYLE_VALUES = (
    "STIXSizeTwoSym,20,&H00FFFFFF,&H000000FF,&H0,&H0,0,0,0,0,100,100,0,0,1,2,0,2,10,10,10,1"
)
FAN_ASS = (
    "[Script Info]\nScriptType: v4.00+\nPlayResX: 640\nPlayResY: 360\n\n"
    f"[V4+ Styles]\nFormat: {STYLE_FIELDS}\n"
    + "".join(f"Style: {name},{STYLE_VALUES}\n" for name in ("Default", "Signs", "OP"))
    + r"""
[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.40,0:00:01.40,Default,Aki,0,0,0,,{\i1}Good morning{\i0}, everyone.
Dialogue: 0,0:00:00.60,0:00:01.60,Signs,,0,0,0,,{\an8}KONOHA STATION
Dialogue: 0,0:00:01.80,0:00:01.30,Default,,0,0,0,,backwards
Dialogue: 0,0:00:02.00,0:00:02.60,OP,,0,0,0,,{\k20}la {\k20}la {\k20}la
Dialogue: 0,0:00:02.20,0:00:03.40,Default,Ben,0,0,0,,Where is\Neveryone?
Dialogue: 0,0:00:03.50,0:00:03.90,Default,,0,0,0,,{\i1}{\i0}
"""
)

SUBRIP_FULL = """1
00:00:00,500 --> 00:00:01,500
<i>Full</i> line one.

2
00:00:02,000 --> 00:00:03,000
- Full line two?
- Yes.
"""

SUBRIP_SIGNS = """1
00:00:01,000 --> 00:00:02,000
SIGN: BAKERY
"""

WEBVTT_JAPANESE = """WEBVTT

00:00:00.500 --> 00:00:01.500
おはよう。

00:00:02.000 --> 00:00:03.000
どこにいるの？
"""


def ffmpeg(*args: str | Path) -> None:
    done = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


PICTURE = ["-f", "lavfi", "-i", f"testsrc2=size=160x96:rate=12:duration={DURATION_S}"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast"]
HEVC_MAIN10 = ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
               "-x265-params", "log-level=error"]  # fmt: skip
"""A small test picture, encoded as fan releases are (HEVC Main 10) or as H.264."""


def tone(hz: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={hz}:sample_rate=48000:duration={DURATION_S}"]


def pgs_sup(events: list[tuple[float, float]], width: int = 160, height: int = 96) -> bytes:
    """A valid HDMV PGS (.sup) stream: per event, a display set (PCS, WDS, PDS, ODS, END)
    showing an 8x2 bar, and at its end an empty one (PCS, WDS, END) that clears it."""

    def segment(kind: int, data: bytes, seconds: float) -> bytes:
        pts = round(seconds * 90_000).to_bytes(4, "big")
        return b"PG" + pts + bytes(4) + bytes([kind]) + len(data).to_bytes(2, "big") + data

    def u16(value: int) -> bytes:
        return value.to_bytes(2, "big")

    window = bytes([1, 0]) + u16(10) + u16(70) + u16(8) + u16(2)
    bar = (bytes([0x00, 0x80 | 8, 0x01]) + bytes(2)) * 2  # 8 pixels of colour 1, end of line
    stream = b""
    for number, (start, end) in enumerate(events):
        shown = u16(width) + u16(height) + bytes([0x10]) + u16(2 * number) + bytes([0x80, 0, 0])
        shown += bytes([1]) + u16(0) + bytes([0, 0]) + u16(10) + u16(70)
        palette = bytes([0, 0]) + bytes([1, 235, 128, 128, 255])
        picture = u16(0) + bytes([0, 0xC0]) + (len(bar) + 4).to_bytes(3, "big")
        picture += u16(8) + u16(2) + bar
        cleared = u16(width) + u16(height) + bytes([0x10]) + u16(2 * number + 1)
        cleared += bytes([0x00, 0, 0, 0])
        stream += segment(0x16, shown, start) + segment(0x17, window, start)
        stream += segment(0x14, palette, start) + segment(0x15, picture, start)
        stream += segment(0x80, b"", start)
        stream += segment(0x16, cleared, end) + segment(0x17, window, end)
        stream += segment(0x80, b"", end)
    return stream


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tracks")
    (folder / "fan.ass").write_text(FAN_ASS, encoding="utf-8")
    (folder / "full.srt").write_text(SUBRIP_FULL, encoding="utf-8")
    (folder / "signs.srt").write_text(SUBRIP_SIGNS, encoding="utf-8")
    (folder / "ja.vtt").write_text(WEBVTT_JAPANESE, encoding="utf-8")
    (folder / "pgs.sup").write_bytes(pgs_sup([(0.5, 1.5), (2.0, 3.0)]))
    made = {}

    # Fan release: HEVC Main 10; English audio first, Japanese second and default-flagged;
    # the full subtitles as ASS with Signs and OP styles; a font attachment.
    made["fan"] = folder / "fan" / "[Group] Show - 01 (1080p).mkv"
    made["fan"].parent.mkdir()
    ffmpeg(
        *PICTURE, *tone(ENGLISH_HZ), *tone(JAPANESE_HZ), "-i", folder / "fan.ass",
        "-attach", FONT, "-metadata:s:t", "mimetype=application/x-truetype-font",
        "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s",
        *HEVC_MAIN10, "-c:a", "libopus", "-c:s", "ass",
        "-metadata:s:a:0", "language=eng", "-metadata:s:a:0", "title=English",
        "-metadata:s:a:1", "language=jpn", "-metadata:s:a:1", "title=Japanese",
        "-disposition:a:0", "0", "-disposition:a:1", "default",
        "-metadata:s:s:0", "language=eng", "-metadata:s:s:0", "title=Full Subs",
        made["fan"],
    )  # fmt: skip

    made["mp4"] = folder / "mp4" / "episode.mp4"
    made["mp4"].parent.mkdir()
    ffmpeg(
        *PICTURE, *tone(JAPANESE_HZ), "-i", folder / "full.srt",
        "-map", "0:v", "-map", "1:a", "-map", "2:s", *H264, "-c:a", "aac", "-c:s", "mov_text",
        "-metadata:s:s:0", "language=eng", made["mp4"],
    )  # fmt: skip

    # "Signs & Songs" first and default-flagged, then the full track, then Japanese WebVTT.
    made["two"] = folder / "two" / "episode.mkv"
    made["two"].parent.mkdir()
    ffmpeg(
        *PICTURE, *tone(JAPANESE_HZ),
        "-i", folder / "signs.srt", "-i", folder / "full.srt", "-i", folder / "ja.vtt",
        "-map", "0:v", "-map", "1:a", "-map", "2:s", "-map", "3:s", "-map", "4:s",
        *H264, "-c:a", "libopus", "-c:s:0", "srt", "-c:s:1", "srt", "-c:s:2", "webvtt",
        "-metadata:s:s:0", "language=eng", "-metadata:s:s:0", "title=Signs & Songs",
        "-metadata:s:s:1", "language=eng", "-metadata:s:s:1", "title=Dialogue",
        "-metadata:s:s:2", "language=jpn",
        "-disposition:s:0", "default", "-disposition:s:1", "0", "-disposition:s:2", "0",
        made["two"],
    )  # fmt: skip

    # Image subtitles: the PGS stream as written, and FFmpeg's VobSub and DVB re-encodings of
    # its decoded bitmaps (which also shows the .sup stream is valid).
    for name, codec in (("pgs", "copy"), ("vobsub", "dvdsub"), ("dvb", "dvbsub")):
        made[name] = folder / name / "episode.mkv"
        made[name].parent.mkdir()
        ffmpeg(
            *PICTURE, *tone(JAPANESE_HZ), "-f", "sup", "-i", folder / "pgs.sup",
            "-map", "0:v", "-map", "1:a", "-map", "2:s", *H264, "-c:a", "libopus",
            "-c:s", codec, "-metadata:s:s:0", "language=eng", made[name],
        )  # fmt: skip

    made["bare"] = folder / "bare" / "episode.mkv"
    made["bare"].parent.mkdir()
    ffmpeg(*PICTURE, *tone(JAPANESE_HZ), *H264, "-c:a", "libopus", made["bare"])
    return made


def dominant_hz(path: Path) -> float:
    with wave.open(str(path)) as clip:
        samples = np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)
        rate = clip.getframerate()
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float32)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def media_file(out_dir: Path, url: str) -> Path:
    return out_dir / unquote(url.removeprefix(LOCAL_FILES_PREFIX))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = cli_main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


# --------------------------------------------------------------------------- the fan release


def test_fan_release_lists_its_tracks(files, capsys):
    code, out, _ = run_cli(capsys, "import", files["fan"], "--list-tracks")

    assert code == 0
    rows = out.splitlines()
    assert rows[0].endswith(": 5 tracks")
    by_index = {int(row.split()[0]): row for row in rows[1:6]}
    assert "video" in by_index[0] and "hevc" in by_index[0] and "Main 10" in by_index[0]
    assert "eng" in by_index[1] and '"English"' in by_index[1] and "<-" not in by_index[1]
    assert "jpn" in by_index[2] and "default" in by_index[2] and "<- audio used" in by_index[2]
    assert '"Full Subs"' in by_index[3] and "<- subtitles used" in by_index[3]
    assert "attachment" in by_index[4] and FONT.name in by_index[4]
    assert not (files["fan"].parent / "out").exists()  # nothing imported


def test_fan_release_imports_its_ass_track_and_default_audio(files, tmp_path):
    result = import_episode(files["fan"], out_dir=tmp_path, options={"clips": {"pad_ms": 0}})

    tasks = json.loads(result.tasks_path.read_text())
    assert [task["data"]["text"] for task in tasks] == [
        "Good morning, everyone.",
        "Where is everyone?",
    ]
    assert [task["data"]["actor"] for task in tasks] == ["Aki", "Ben"]
    assert [task["data"]["start"] for task in tasks] == [0.4, 2.2]
    for task in tasks:
        data = task["data"]
        assert data["audio_track"]["index"] == 2 and data["audio_track"]["language"] == "jpn"
        # The clip is Japanese: the default-flagged track, though it is not the first.
        assert dominant_hz(media_file(tmp_path, data["audio"])) == pytest.approx(
            JAPANESE_HZ, abs=10
        )
        with Image.open(media_file(tmp_path, data["image"])) as frame:  # 10-bit HEVC decoded
            assert frame.size == (160, 96)
    report = json.loads(result.report_path.read_text())
    assert report["subtitle_track"]["source"] == "embedded"
    assert report["subtitle_track"]["index"] == 3
    assert report["subtitle_track"]["title"] == "Full Subs"
    assert report["audio_track"]["title"] == "Japanese"
    assert {line["style"] for line in report["non_dialogue"]} == {"Signs", "OP"}


def test_bad_events_in_the_track_are_reported_with_track_and_event_number(files, tmp_path):
    result = import_episode(files["fan"], out_dir=tmp_path)

    # FFmpeg keeps the backwards event in the track's header (event 1); packets follow.
    assert result.problems[:2] == [
        f'{files["fan"]} [track 3, eng, "Full Subs"] event 1: '
        "end 00:00:01.300 is not after start 00:00:01.800",
        f'{files["fan"]} [track 3, eng, "Full Subs"] event 6: empty text after removing formatting',
    ]
    assert "left out 2 sign/song line(s) (styles: OP, Signs)" in result.problems[2]
    assert len(result.tasks) == 2  # the rest imported
    report_txt = (result.episode_dir / "report.txt").read_text()
    assert "event 6: empty text" in report_txt


def test_audio_language_and_audio_track_choose_the_clip_source(files, tmp_path):
    by_language = import_episode(
        files["fan"], out_dir=tmp_path / "a", options={"tracks": {"audio_language": "en"}}
    )
    by_index = import_episode(
        files["fan"], out_dir=tmp_path / "b", options={"tracks": {"audio_track": 1}}
    )

    for result, out_dir in ((by_language, tmp_path / "a"), (by_index, tmp_path / "b")):
        assert result.audio_track is not None and result.audio_track.language == "eng"
        for task in result.tasks:
            assert task["data"]["audio_track"]["index"] == 1
            clip = media_file(out_dir, task["data"]["audio"])
            assert dominant_hz(clip) == pytest.approx(ENGLISH_HZ, abs=10)


def test_decode_audio_and_probe_use_the_chosen_track(files):
    default = decode_audio(files["fan"])
    english = decode_audio(files["fan"], audio_track=1)

    def hz(samples: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(samples))
        return float(np.fft.rfftfreq(len(samples), 1 / 16000)[spectrum.argmax()])

    assert hz(default) == pytest.approx(JAPANESE_HZ, abs=2)
    assert hz(english) == pytest.approx(ENGLISH_HZ, abs=2)
    assert probe_media(files["fan"], audio_track=1).audio_codec == "opus"
    with pytest.raises(MediaError, match=r"stream 3 is not an audio track \(audio tracks: 1, 2\)"):
        decode_audio(files["fan"], audio_track=3)


def test_cli_import_says_which_tracks_it_used(files, tmp_path, capsys):
    code, out, err = run_cli(
        capsys, "import", files["fan"], "--out", tmp_path, "--no-features", "-q",
        "--audio-language", "eng",
    )  # fmt: skip

    assert code == 0
    assert 'audio track 1 (opus, eng, "English"); subtitles from track 3' in out
    assert "2 tasks written" in out
    assert "event 6: empty text" in err


# --------------------------------------------------------------------------- other containers


def test_mp4_mov_text_track_is_read_without_its_gap_samples(files, tmp_path):
    result = import_episode(files["mp4"], out_dir=tmp_path)

    assert [line.text for line in result.subtitles.lines] == [
        "Full line one.",
        "- Full line two? - Yes.",
    ]
    assert [(line.start, line.end) for line in result.subtitles.lines] == [(0.5, 1.5), (2.0, 3.0)]
    assert result.subtitles.format == "mov_text"
    # MP4 fills the gaps between cues with empty samples: those are not events.
    assert result.problems == [
        f"{files['mp4']} [track 2, eng] event 2: two speakers in one cue (dash dialogue)"
    ]


OLD_SSA = """[Script Info]
ScriptType: v4.00

[V4 Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, TertiaryColour, BackColour, \
Bold, Italic, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, AlphaLevel, \
Encoding
Style: Default,Arial,20,16777215,65535,65535,-2147483640,-1,0,1,3,0,2,30,30,30,0,0
Style: Songs,Arial,20,16777215,65535,65535,-2147483640,-1,0,1,3,0,2,30,30,30,0,0

[Events]
Format: Marked, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: Marked=0,0:00:00.50,0:00:01.50,Default,Aki,0000,0000,0000,,Old style line.
Dialogue: Marked=0,0:00:02.00,0:00:03.00,Songs,,0000,0000,0000,,la la
"""


def test_ssa_track_is_read_by_its_own_format_line(tmp_path):
    (tmp_path / "old.ssa").write_text(OLD_SSA, encoding="utf-8")
    video = tmp_path / "old.mkv"
    ffmpeg(*PICTURE, "-i", tmp_path / "old.ssa", "-map", "0:v", "-map", "1:s", *H264,
           "-c:s", "ssa", video)  # fmt: skip

    tracks = list_tracks(video)
    parsed = read_subtitle_track(video, tracks[1], media_duration=DURATION_S)

    assert parsed.format == "ssa"
    assert [(line.text, line.actor, line.start) for line in parsed.lines] == [
        ("Old style line.", "Aki", 0.5)
    ]
    assert [line.style for line in parsed.non_dialogue] == ["Songs"]


def test_full_dialogue_wins_over_a_default_signs_track(files, tmp_path):
    tracks = list_tracks(files["two"])
    source = choose_subtitles(files["two"], tracks)

    assert source.track is not None and source.track.title == "Dialogue"
    signs = next(track for track in tracks if track.title == "Signs & Songs")
    assert signs.default and signs.signs_only and signs.index < source.track.index
    result = import_episode(files["two"], out_dir=tmp_path)
    assert [line.text for line in result.subtitles.lines] == [
        "Full line one.",
        "- Full line two? - Yes.",
    ]


def test_subtitle_track_and_language_choose_another_track(files, tmp_path):
    signs = import_episode(
        files["two"], out_dir=tmp_path / "a", options={"tracks": {"subtitle_track": 2}}
    )
    english = import_episode(
        files["two"], out_dir=tmp_path / "b", options={"tracks": {"subtitle_language": "en"}}
    )
    japanese = import_episode(
        files["two"], out_dir=tmp_path / "c", options={"tracks": {"subtitle_language": "jpn"}}
    )

    assert [line.text for line in signs.subtitles.lines] == ["SIGN: BAKERY"]
    # Among the English tracks, full dialogue before the default-flagged signs track.
    assert english.subtitles.track == '[track 3, eng, "Dialogue"]'
    assert [line.text for line in japanese.subtitles.lines] == ["おはよう。", "どこにいるの？"]
    assert japanese.subtitles.format == "vtt"
    report = json.loads(japanese.report_path.read_text())
    assert report["subtitle_track"]["index"] == 4


def test_file_beside_the_video_wins_over_embedded_tracks(files, tmp_path):
    video = tmp_path / "episode.mkv"
    shutil.copy(files["two"], video)
    (tmp_path / "episode.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nFrom the file.\n")

    beside = import_episode(video, out_dir=tmp_path / "a")
    chosen = import_episode(
        video, out_dir=tmp_path / "b", options={"tracks": {"subtitle_track": 3}}
    )

    assert [line.text for line in beside.subtitles.lines] == ["From the file."]
    listing = track_table(video, list_tracks(video))
    assert listing[-1] == f"subtitles: {tmp_path / 'episode.srt'} (found beside the video)"
    assert not any("subtitles used" in row for row in listing)
    report = json.loads(beside.report_path.read_text())
    assert report["subtitle_track"] == {
        "source": "file",
        "reason": "found beside the video",
        "path": str(tmp_path / "episode.srt"),
    }
    assert chosen.subtitles.lines[0].text == "Full line one."


def test_forced_file_beside_does_not_hide_a_full_embedded_track(files, tmp_path):
    video = tmp_path / "episode.mkv"
    shutil.copy(files["two"], video)
    (tmp_path / "episode.en.forced.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nSIGN\n")

    result = import_episode(video, out_dir=tmp_path / "out")

    assert result.subtitle_source is not None and result.subtitle_source.track is not None
    assert result.subtitles.lines[0].text == "Full line one."


def test_subs_file_always_wins(files, tmp_path):
    subs = tmp_path / "other.srt"
    subs.write_text("1\n00:00:01,000 --> 00:00:02,000\nGiven.\n")

    result = import_episode(files["fan"], subtitles=subs, out_dir=tmp_path)

    assert [line.text for line in result.subtitles.lines] == ["Given."]
    assert result.subtitles.track is None


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("name", "codec"),
    [("pgs", "hdmv_pgs_subtitle"), ("vobsub", "dvd_subtitle"), ("dvb", "dvb_subtitle")],
)
def test_image_subtitles_only_need_ocr_or_a_text_file(files, tmp_path, capsys, name, codec):
    video = files[name]
    code, out, _ = run_cli(capsys, "import", video, "--list-tracks")
    assert code == 0
    assert codec in out and "image: needs OCR" in out
    assert "subtitles: would stop" in out

    code, _, err = run_cli(capsys, "import", video, "--out", tmp_path, "--no-features")
    assert_one_line_error(code, err, str(video), codec, "OCR", "--subs")

    subs = tmp_path / "typed.srt"
    subs.write_text("1\n00:00:00,500 --> 00:00:01,500\nTyped out.\n")
    result = import_episode(video, subtitles=subs, out_dir=tmp_path / "ok")
    assert [line.text for line in result.subtitles.lines] == ["Typed out."]


def test_video_without_any_subtitles_is_the_one_line_error(files, tmp_path, capsys):
    code, _, err = run_cli(capsys, "import", files["bare"], "--out", tmp_path, "--no-features")

    assert_one_line_error(
        code, err, str(files["bare"]), "no subtitles given", "--subs", "no embedded text subtitle"
    )


@pytest.mark.parametrize(
    ("choice", "needles"),
    [
        (["--subtitle-track", "9"], ["track 9 does not exist, not subtitles", "3 (ass, eng"]),
        (["--subtitle-track", "1"], ["track 1 is audio, not subtitles", "subtitle tracks: 3"]),
        (["--subtitle-language", "fre"], ["no subtitle track in language 'fre'", '"Full Subs"']),
        (["--audio-track", "3"], ["track 3 is subtitle, not audio", "audio tracks: 1 (opus"]),
        (["--audio-language", "kor"], ["no audio track in language 'kor'", "2 (opus, jpn"]),
        (["--audio-language", "xx"], ["audio_language: 'xx' is not an ISO 639 language code"]),
        (["--subtitle-track", "3", "--subs", "x.srt"], ["--subs and --subtitle-track"]),
    ],
)
def test_a_choice_that_matches_nothing_is_a_one_line_error(
    files, tmp_path, capsys, choice, needles
):
    code, _, err = run_cli(
        capsys, "import", files["fan"], "--out", tmp_path, "--no-features", *choice
    )

    assert_one_line_error(code, err, *needles)
    assert not any(tmp_path.iterdir())  # stopped before any work


def test_choosing_the_pgs_track_by_language_names_ocr(files):
    with pytest.raises(SubtitleError, match=r"are images, which need OCR.*--subs"):
        choose_subtitles(
            files["pgs"], list_tracks(files["pgs"]), choice=TrackChoice(subtitle_language="en")
        )
    with pytest.raises(SubtitleError, match=r"images, which need OCR"):
        read_subtitle_track(files["pgs"], list_tracks(files["pgs"])[2])


# --------------------------------------------------------------------------- small pieces


@pytest.mark.parametrize(
    ("code", "key"),
    [("eng", "en"), ("en", "en"), ("en-US", "en"), ("fre", "fr"), ("fra", "fr"), ("ger", "de"),
     ("deu", "de"), ("jpn", "ja"), ("ja", "ja"), ("und", None)],
)  # fmt: skip
def test_language_codes_compare_as_languages(code, key):
    assert language_key(code) == key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"audio_track": 1, "audio_language": "jpn"}, "audio_track or audio_language, not both"),
        ({"subtitle_track": -1}, "subtitle_track must be a stream index"),
        ({"subtitle_language": "english"}, "'english' is not an ISO 639 language code"),
    ],
)
def test_track_choice_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrackChoice(**kwargs)


def test_audio_without_a_default_flag_is_the_first(tmp_path):
    video = tmp_path / "flagless.mkv"
    ffmpeg(
        *PICTURE, *tone(ENGLISH_HZ), *tone(JAPANESE_HZ),
        "-map", "0:v", "-map", "1:a", "-map", "2:a", *H264, "-c:a", "libopus",
        "-default_mode", "passthrough", "-disposition:a:0", "0", "-disposition:a:1", "0", video,
    )  # fmt: skip
    tracks = list_tracks(video)

    assert not any(track.default for track in tracks if track.kind == "audio")
    chosen = choose_audio_track(video, tracks)
    assert chosen is not None and chosen.index == 1
    # decode_audio, given no track, picks the same way: the English tone of track 1.
    spectrum = np.abs(np.fft.rfft(decode_audio(video)))
    assert np.fft.rfftfreq(2 * (len(spectrum) - 1), 1 / 16000)[spectrum.argmax()] == (
        pytest.approx(ENGLISH_HZ, abs=2)
    )
