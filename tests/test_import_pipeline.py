"""`speaker-grouping import` end to end on real generated videos and subtitle files."""

from __future__ import annotations

import json
import wave
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import requests
from PIL import Image

from bench.synthetic_video import make_test_video, read_frame_index, tone_frequency
from importers.media import MediaError
from importers.pipeline import ImportOptions, import_episode
from importers.subtitles import SubtitleError
from importers.tasks import LOCAL_FILES_PREFIX, MediaUrls, episode_id_for, slugify
from speaker_grouping.cli import main as cli_main

FPS = 24
SRT = """1
00:00:01,000 --> 00:00:02,500
Good morning!

2
00:00:04,000 --> 00:00:03,000
end before start

3
00:00:03,200 --> 00:00:05,000
- Are you coming?
- Yes!

4
00:00:06,100 --> 00:00:07,400
<i>Where</i> is everyone?

5
00:00:0x,000 --> 00:00:09,000
broken timestamp

6
00:00:30,000 --> 00:00:31,000
starts after the end of the video
"""


@pytest.fixture(scope="module")
def episode(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("episode")
    video = make_test_video(folder / "Show - 01 [720p].mp4", duration_s=10, fps=FPS)
    (folder / "Show - 01 [720p].srt").write_text(SRT, encoding="utf-8")
    return video


def _dominant_hz(path: Path) -> float:
    with wave.open(str(path)) as clip:
        assert clip.getframerate() == 16000
        assert clip.getnchannels() == 1
        samples = np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float32)))
    return float(np.fft.rfftfreq(len(samples), 1 / 16000)[spectrum.argmax()])


def test_import_writes_one_task_per_good_line_with_real_media(episode: Path, tmp_path: Path):
    result = import_episode(episode, out_dir=tmp_path, options={"clips": {"pad_ms": 0}})

    tasks = json.loads(result.tasks_path.read_text())
    assert [task["data"]["text"] for task in tasks] == [
        "Good morning!",
        "- Are you coming? - Yes!",
        "Where is everyone?",
    ]
    assert [task["data"]["index"] for task in tasks] == [1, 2, 3]
    assert [task["data"]["line_id"] for task in tasks] == [
        f"{result.episode_id}:{i}" for i in (1, 2, 3)
    ]
    assert tasks[1]["data"]["flags"] == ["two_speakers"]
    for task in tasks:
        data = task["data"]
        clip = tmp_path / unquote(data["audio"].removeprefix(LOCAL_FILES_PREFIX))
        frame = tmp_path / unquote(data["image"].removeprefix(LOCAL_FILES_PREFIX))
        # The clip holds the tone of the second its line is in: it is the right slice.
        middle = int((data["start"] + data["end"]) / 2)
        assert _dominant_hz(clip) == pytest.approx(tone_frequency(middle), abs=15)
        # The frame is the one shown at the line's midpoint.
        shown = read_frame_index(np.asarray(Image.open(frame).convert("L")))
        assert shown == pytest.approx((data["start"] + data["end"]) / 2 * FPS, abs=1)


def test_report_lists_every_skipped_cue_with_its_line_number(episode: Path, tmp_path: Path):
    result = import_episode(episode, out_dir=tmp_path)

    report = json.loads(result.report_path.read_text())
    skipped = {cue["source_line"]: cue["reason"] for cue in report["skipped"]}
    assert sorted(skipped) == [5, 18, 22]
    assert report["lines"] == 3
    assert report["flagged"] == [{"index": 2, "source_line": 9, "flags": ["two_speakers"]}]
    text = (result.episode_dir / "report.txt").read_text()
    assert ":18:" in text and ":22:" in text and ":5:" in text


def test_three_frames_per_line_are_taken_inside_the_line(episode: Path, tmp_path: Path):
    result = import_episode(episode, out_dir=tmp_path, options={"frames_per_line": 3})

    for task in result.tasks:
        data = task["data"]
        assert len(data["frames"]) == 3
        assert data["image"] == data["frames"][1]
        shown = [
            read_frame_index(
                np.asarray(
                    Image.open(tmp_path / unquote(url.removeprefix(LOCAL_FILES_PREFIX))).convert(
                        "L"
                    )
                )
            )
            for url in data["frames"]
        ]
        assert shown == sorted(shown)
        assert data["start"] * FPS - 1 <= shown[0] and shown[-1] <= data["end"] * FPS + 1


def test_reimport_is_stable_and_keeps_ids(episode: Path, tmp_path: Path):
    first = import_episode(episode, out_dir=tmp_path)
    second = import_episode(episode, out_dir=tmp_path)

    assert first.episode_id == second.episode_id
    assert first.tasks == second.tasks
    assert not list(first.episode_dir.rglob("*.tmp"))


def test_url_prefix_addresses_media_under_it(episode: Path, tmp_path: Path):
    result = import_episode(
        episode, out_dir=tmp_path, options={"url_prefix": "https://media.example/show/"}
    )

    data = result.tasks[0]["data"]
    assert data["audio"] == f"https://media.example/show/{result.episode_id}/audio/0001.wav"
    assert data["image"] == f"https://media.example/show/{result.episode_id}/frames/0001.jpg"


def test_media_outside_the_document_root_is_refused(episode: Path, tmp_path: Path):
    elsewhere = tmp_path / "root"
    elsewhere.mkdir()
    with pytest.raises(ValueError, match="outside the document root"):
        import_episode(episode, out_dir=tmp_path / "out", options={"document_root": elsewhere})


def test_missing_subtitles_name_the_video(tmp_path: Path):
    video = make_test_video(tmp_path / "lonely.mp4", duration_s=2)
    with pytest.raises(SubtitleError, match=r"lonely\.mp4: no subtitles given"):
        import_episode(video, out_dir=tmp_path / "out")


def test_video_without_audio_is_a_one_line_error(tmp_path: Path):
    video = make_test_video(tmp_path / "silent.mp4", duration_s=3, with_audio=False)
    (tmp_path / "silent.srt").write_text(SRT)
    with pytest.raises(MediaError, match=r"silent\.mp4.*audio") as error:
        import_episode(video, out_dir=tmp_path / "out")
    assert "\n" not in str(error.value)


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match=r"unknown import option.*frames_per_lin"):
        ImportOptions.coerce({"frames_per_lin": 3})
    with pytest.raises(ValueError, match="frames_per_line must be one of"):
        ImportOptions(frames_per_line=2)


def test_episode_id_is_stable_and_tells_same_named_files_apart(tmp_path: Path):
    one = tmp_path / "a" / "ep01.mkv"
    two = tmp_path / "b" / "ep01.mkv"
    one.parent.mkdir()
    two.parent.mkdir()
    one.write_bytes(b"x" * 3_000_000)
    two.write_bytes(b"x" * 2_999_999 + b"y")

    assert episode_id_for(one) == episode_id_for(one)
    assert episode_id_for(one).startswith("ep01-")
    assert episode_id_for(one) != episode_id_for(two)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("[Group] Show - 01 (1080p)", "group-show-01-1080p"),
        ("Pokémon 第1話", "pokemon-1"),
        ("第1話", "1"),
        ("鈴木", "episode"),
    ],
)
def test_slugify(name: str, slug: str):
    assert slugify(name) == slug


def test_local_files_url_quotes_and_stays_under_root(tmp_path: Path):
    urls = MediaUrls(document_root=tmp_path)
    assert urls.url_for(tmp_path / "a b" / "c#1.wav") == LOCAL_FILES_PREFIX + "a%20b/c%231.wav"
    with pytest.raises(ValueError, match="outside the document root"):
        urls.url_for(tmp_path / ".." / "etc" / "passwd")


def test_cli_import_prints_problems_and_writes_tasks(episode: Path, tmp_path: Path, capsys):
    code = cli_main(["import", str(episode), "--out", str(tmp_path), "-q"])

    out, err = capsys.readouterr()
    assert code == 0
    assert "3 tasks written" in out
    assert ":18:" in err  # the skipped cue, with its line number


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    (tmp_path / "broken.srt").write_text(SRT)

    code = cli_main(["import", str(broken), "--out", str(tmp_path / "out")])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "broken.mp4" in err
    assert err.count("\n") == 1


@pytest.mark.label_studio
def test_cli_push_imports_once_and_serves_clips(episode: Path, label_studio, capsys):
    out = label_studio.document_root / "cli-push"
    args = ["import", str(episode), "--out", str(out), "--document-root"]
    args += [str(label_studio.document_root), "--push", label_studio.url]
    args += ["--api-key", label_studio.token, "--project", "CLI push", "-q"]

    assert cli_main(args) == 0
    assert "3 tasks created, 0 already there" in capsys.readouterr().out
    assert cli_main(args) == 0
    assert "0 tasks created, 3 already there" in capsys.readouterr().out

    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    project = next(p for p in client.projects.list() if p.title == "CLI push")
    tasks = list(client.tasks.list(project=project.id))
    assert len(tasks) == 3
    audio_url = tasks[0].data["audio"]
    served = requests.get(
        label_studio.url + audio_url,
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=30,
    )
    served.raise_for_status()
    local = label_studio.document_root / unquote(audio_url.removeprefix(LOCAL_FILES_PREFIX))
    assert served.content == local.read_bytes()


def test_nested_option_dicts_are_checked_too():
    options = ImportOptions.coerce({"clips": {"pad_ms": 0}, "subtitles": {"encoding": "big5"}})
    assert options.clips.pad_ms == 0
    assert options.subtitles.encoding == "big5"
    with pytest.raises(ValueError, match=r"unknown clip option\(s\) \['pad'\]"):
        ImportOptions.coerce({"clips": {"pad": 0}})


def test_cli_push_without_api_key_is_refused_before_any_work(
    episode: Path, tmp_path: Path, capsys, monkeypatch
):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    code = cli_main(
        ["import", str(episode), "--out", str(tmp_path), "--push", "http://127.0.0.1:9"]
    )

    assert code == 2
    assert "--push needs --api-key" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
