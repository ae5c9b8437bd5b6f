"""Pushing tasks into a real Label Studio 1.23.2, and the Label Studio behaviours we rely on."""

from __future__ import annotations

import math
import socket
import struct
import uuid
import wave
from pathlib import Path

import pytest
import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from PIL import Image

from importers.push import LabelStudioError, PushResult, push_tasks
from label_config import append_speakers, load_config, speaker_prediction, speakers_in_config
from speaker_grouping.local_label_studio import (
    CREDENTIALS_FILE,
    LabelStudioStartError,
    LocalLabelStudio,
    free_port,
)

needs_label_studio = pytest.mark.label_studio


def _write_tone(path: Path, *, seconds: float = 0.25, hz: float = 440.0, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = [
        int(12000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(int(seconds * rate))
    ]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{len(samples)}h", *samples))


def _make_episode(document_root: Path, episode: str, lines: int) -> tuple[Path, list[dict]]:
    """Real clips and frames under ``<document_root>/<episode>/`` and their tasks."""
    media_dir = document_root / episode
    tasks = []
    for index in range(1, lines + 1):
        clip = media_dir / "clips" / f"{index:04d}.wav"
        frame = media_dir / "frames" / f"{index:04d}.jpg"
        _write_tone(clip, hz=200.0 + 50 * index)
        frame.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 18), (index * 40 % 256, 80, 120)).save(frame)
        clip_url = f"/data/local-files/?d={clip.relative_to(document_root).as_posix()}"
        frame_url = f"/data/local-files/?d={frame.relative_to(document_root).as_posix()}"
        tasks.append(
            {
                "data": {
                    "line_id": f"{episode}:{index}",
                    "episode": episode,
                    "index": index,
                    "start": 1.5 * index,
                    "end": 1.5 * index + 1.0,
                    "text": f"Line number {index} & <more>",
                    "audio": clip_url,
                    "image": frame_url,
                    "frames": [frame_url],
                    "flags": [],
                    "style": None,
                }
            }
        )
    return media_dir, tasks


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _task_ids_by_line(client: LabelStudio, project_id: int) -> dict[str, int]:
    tasks = client.tasks.list(project=project_id, fields="task_only", include="id,data")
    return {task.data["line_id"]: task.id for task in tasks}


@needs_label_studio
def test_server_accepts_our_config_and_rejects_one_whose_to_name_points_nowhere(label_studio):
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    config = load_config(["Mika", "鈴木", 'Tom & "Jerry"'])
    project = client.projects.create(title=_unique("config-ok"), label_config=config)
    stored = client.projects.get(id=project.id).label_config
    assert speakers_in_config(stored) == ["Unknown", "Mika", "鈴木", 'Tom & "Jerry"']

    broken = load_config().replace('toName="audio"', 'toName="nowhere"', 1)
    with pytest.raises(ApiError) as raised:
        client.projects.create(title=_unique("config-broken"), label_config=broken)
    assert raised.value.status_code == 400
    assert "nowhere" in str(raised.value.body)


@needs_label_studio
def test_push_reports_a_config_the_server_refuses_in_one_line(label_studio):
    _, tasks = _make_episode(label_studio.document_root, _unique("ep"), 1)
    broken = load_config().replace('toName="audio"', 'toName="nowhere"', 1)
    with pytest.raises(LabelStudioError, match=r"HTTP 400.*nowhere") as raised:
        push_tasks(
            tasks,
            url=label_studio.url,
            api_key=label_studio.token,
            project=_unique("p"),
            label_config=broken,
        )
    assert "\n" not in str(raised.value)


@needs_label_studio
def test_pushing_the_same_tasks_twice_creates_them_once(label_studio):
    episode = _unique("ep")
    media_dir, tasks = _make_episode(label_studio.document_root, episode, 3)
    title = _unique("speakers")
    push = dict(
        url=label_studio.url,
        api_key=label_studio.token,
        project=title,
        document_root=label_studio.document_root,
        media_dir=media_dir,
    )
    progress = []

    first = push_tasks(tasks, **push, hook=lambda step, **counts: progress.append((step, counts)))
    assert first == PushResult(
        project_id=first.project_id,
        project_created=True,
        storage_created=True,
        tasks_created=3,
        tasks_already_present=0,
    )
    assert progress[-1] == ("push", {"completed": 3, "total": 3})

    second = push_tasks(tasks, **push)
    assert second == PushResult(first.project_id, False, False, 0, 3)

    # One more line in the episode: only that one is imported.
    _, grown = _make_episode(label_studio.document_root, episode, 4)
    third = push_tasks(grown, **push)
    assert (third.tasks_created, third.tasks_already_present) == (1, 3)

    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    assert sorted(_task_ids_by_line(client, first.project_id)) == [
        f"{episode}:{i}" for i in range(1, 5)
    ]
    assert len(client.import_storage.local.list(project=first.project_id)) == 1


@needs_label_studio
def test_clips_are_served_back_byte_for_byte_through_local_files(label_studio):
    media_dir, tasks = _make_episode(label_studio.document_root, _unique("ep"), 2)
    push_tasks(
        tasks,
        url=label_studio.url,
        api_key=label_studio.token,
        project=_unique("served"),
        document_root=label_studio.document_root,
        media_dir=media_dir,
    )
    headers = {"Authorization": f"Token {label_studio.token}"}
    for task in tasks:
        for key in ("audio", "image"):
            answer = requests.get(label_studio.url + task["data"][key], headers=headers, timeout=10)
            relative = task["data"][key].split("?d=", 1)[1]
            assert answer.status_code == 200
            assert answer.content == (label_studio.document_root / relative).read_bytes()

    # A file under the document root but outside every storage is not served: the storage matters.
    stray = label_studio.document_root / _unique("no-storage") / "clip.wav"
    _write_tone(stray)
    relative = stray.relative_to(label_studio.document_root).as_posix()
    answer = requests.get(
        f"{label_studio.url}/data/local-files/?d={relative}", headers=headers, timeout=10
    )
    assert answer.status_code == 404


@needs_label_studio
def test_a_wrong_api_key_gives_one_clear_line(label_studio):
    _, tasks = _make_episode(label_studio.document_root, _unique("ep"), 1)
    with pytest.raises(LabelStudioError, match=r"rejected the API key \(HTTP 401\)") as raised:
        push_tasks(tasks, url=label_studio.url, api_key="0" * 40, project=_unique("p"))
    assert "\n" not in str(raised.value)


@needs_label_studio
def test_a_project_that_is_not_ours_is_refused(label_studio):
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    title = _unique("someone-else")
    client.projects.create(
        title=title,
        label_config='<View><Text name="text" value="$text"/>'
        '<Choices name="mood" toName="text"><Choice value="ok"/></Choices></View>',
    )
    _, tasks = _make_episode(label_studio.document_root, _unique("ep"), 1)
    with pytest.raises(ValueError, match="not a speaker-grouping project"):
        push_tasks(tasks, url=label_studio.url, api_key=label_studio.token, project=title)


@needs_label_studio
def test_bulk_prediction_import_drops_a_speaker_missing_from_the_config(label_studio):
    """Pins the Label Studio behaviour the backend relies on: the bulk import answers 201 and
    silently drops predictions whose speaker is not a choice, so append the name first."""
    episode = _unique("ep")
    _, tasks = _make_episode(label_studio.document_root, episode, 2)
    result = push_tasks(
        tasks,
        url=label_studio.url,
        api_key=label_studio.token,
        project=_unique("predictions"),
        label_config=load_config(["Mika"]),
    )
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    task_ids = _task_ids_by_line(client, result.project_id)
    predictions = [
        {
            "task": task_ids[f"{episode}:1"],
            "result": speaker_prediction("Mika", score=0.9),
            "score": 0.9,
            "model_version": "test-1",
        },
        {
            "task": task_ids[f"{episode}:2"],
            "result": speaker_prediction("Ren", score=0.6),
            "score": 0.6,
            "model_version": "test-1",
        },
    ]
    endpoint = f"{label_studio.url}/api/projects/{result.project_id}/import/predictions"
    headers = {"Authorization": f"Token {label_studio.token}"}

    answer = requests.post(endpoint, json=predictions, headers=headers, timeout=30)
    assert answer.status_code == 201
    assert answer.json()["created"] == 1

    # Once "Ren" is appended to the project's config, the same prediction is accepted.
    config = client.projects.get(id=result.project_id).label_config
    client.projects.update(id=result.project_id, label_config=append_speakers(config, ["Ren"]))
    answer = requests.post(endpoint, json=predictions[1:], headers=headers, timeout=30)
    assert (answer.status_code, answer.json()["created"]) == (201, 1)


@needs_label_studio
@pytest.mark.slow
def test_a_second_start_on_the_same_data_folder_reuses_the_stored_credentials(label_studio):
    data_dir = label_studio.server.data_dir
    assert (data_dir / CREDENTIALS_FILE).exists()
    with LocalLabelStudio(data_dir=data_dir, document_root=label_studio.document_root) as again:
        assert again.port != label_studio.server.port
        assert (again.token, again.password) == (label_studio.token, label_studio.server.password)
        answer = requests.get(
            f"{again.url}/api/current-user/whoami",
            headers={"Authorization": f"Token {again.token}"},
            timeout=10,
        )
        assert answer.json()["email"] == again.username
    assert not again.running


@pytest.mark.slow
def test_a_data_folder_made_with_another_token_is_refused_in_one_line(label_studio):
    data_dir = label_studio.server.data_dir
    other = "0123456789abcdef0123456789abcdef01234567"
    assert other != label_studio.token
    server = LocalLabelStudio(
        data_dir=data_dir, document_root=label_studio.document_root, token=other
    )
    with pytest.raises(LabelStudioStartError, match="rejects our API token \\(HTTP 401\\)"):
        server.start()
    assert not server.running


def test_media_outside_the_document_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    _, tasks = _make_episode(tmp_path, "ep", 1)
    with pytest.raises(ValueError, match="not inside the Label Studio document root"):
        push_tasks(
            tasks,
            url="http://127.0.0.1:9",
            api_key="0" * 40,
            project="p",
            document_root=root,
            media_dir=tmp_path / "ep",
        )
    with pytest.raises(
        ValueError, match="not inside"
    ):  # the root itself is refused by Label Studio
        push_tasks(
            tasks,
            url="http://127.0.0.1:9",
            api_key="0" * 40,
            project="p",
            document_root=root,
            media_dir=root,
        )


def test_an_unreachable_label_studio_gives_one_clear_line(tmp_path):
    _, tasks = _make_episode(tmp_path, "ep", 1)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LabelStudioError, match=f"not reachable at {url}") as raised:
        push_tasks(tasks, url=url, api_key="0" * 40, project="p")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([{"data": {"text": "no id"}}], "task 0 has no data.line_id"),
        (
            [{"data": {"line_id": "e:1"}}, {"data": {"line_id": "e:1"}}],
            "tasks 0 and 1 share line_id 'e:1'",
        ),
    ],
)
def test_tasks_without_a_usable_line_id_are_refused(tasks, message):
    with pytest.raises(ValueError, match=message):
        push_tasks(tasks, url="http://127.0.0.1:9", api_key="0" * 40, project="p")


def test_a_missing_label_studio_gives_the_install_hint(tmp_path):
    server = LocalLabelStudio(
        data_dir=tmp_path / "data", document_root=tmp_path, executable=tmp_path / "label-studio"
    )
    with pytest.raises(FileNotFoundError, match="Label Studio is not installed: run `make setup`"):
        server.start()


def test_a_busy_port_is_refused_instead_of_silently_moved(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        server = LocalLabelStudio(data_dir=tmp_path / "data", document_root=tmp_path, port=busy)
        with pytest.raises(LabelStudioStartError, match=f"port {busy} .* already in use"):
            server.start()


def test_a_malformed_token_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not 40 hexadecimal"):
        LocalLabelStudio(data_dir=tmp_path, document_root=tmp_path, token="secret")
