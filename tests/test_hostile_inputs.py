"""Issue 12, "Must show": hostile inputs across /predict, /webhook, /setup, /versions and export
names. Every case gets a 4xx with a one-line error (zero 5xx, zero tracebacks in the log), and a
refused request changes no state: the state folder is compared byte for byte before and after.

The app is the real one with a real, labelled project 7 on an imported episode, so a refusal is
tested against a backend that has something to lose.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporters.clip_dataset import safe_path_names
from label_config import load_config
from ml_backend.config import BackendConfig
from ml_backend.server import create_app
from tests.backend_fixtures import speakers_of, write_episode
from tests.ls_payloads import annotation

STAMP = "7.1700000000"
Body = Callable[[list[dict]], Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(app, tasks, model_dir): project 7 predicted once and labelled twice, worker idle."""
    root = tmp_path_factory.mktemp("hostile")
    media = root / "media"
    _, tasks = write_episode(media, "ep-1", speakers_of(9, ("a", "b", "c")))
    config = BackendConfig(
        model_dir=root / "models", media_roots=(media,), refit_delay_s=0.0, max_projects=1
    )
    app = create_app(config)
    client = app.test_client()
    with_ids = [{"id": 100 + i, **t} for i, t in enumerate(tasks)]
    answer = client.post(
        "/predict",
        json={"project": STAMP, "tasks": with_ids, "label_config": load_config(["a", "b", "c"])},
    )
    assert answer.status_code == 200
    for k in range(2):
        event = {
            "action": "ANNOTATION_CREATED",
            "annotation": annotation(k + 1, 100 + k, "abc"[k]),
            "task": with_ids[k],
            "project": {"id": 7},
        }
        assert client.post("/webhook", json=event).status_code == 200
    assert app.extensions["speaker_grouping"].model(7).worker.wait_idle(30)
    yield app, with_ids, config.model_dir
    app.extensions["speaker_grouping"].close()


def state_files(model_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(model_dir)): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()
    }


def refused(served, method: str, path: str, caplog, **kwargs: Any) -> None:
    """Send one request; assert a one-line 4xx, no traceback logged, and no state changed."""
    app, _, model_dir = served
    before = state_files(model_dir)
    folders = sorted(p.name for p in model_dir.iterdir())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        answer = app.test_client().open(path, method=method, **kwargs)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.get_data()[:300])
    error = answer.get_json()["error"]
    assert isinstance(error, str) and error and "\n" not in error and "Traceback" not in error
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert app.extensions["speaker_grouping"].model(7).worker.wait_idle(30)
    assert sorted(p.name for p in model_dir.iterdir()) == folders
    assert state_files(model_dir) == before


def task_with(tasks: list[dict], **data: Any) -> list[dict]:
    """The first task with some data fields replaced (None removes the field)."""
    task = json.loads(json.dumps(tasks[0]))
    for key, value in data.items():
        if value is None:
            task["data"].pop(key, None)
        else:
            task["data"][key] = value
    return [task]


# --------------------------------------------------------------------------- /predict

RAW_BODIES = {
    "empty": b"",
    "truncated": b'{"tasks": [',
    "list": b"[1, 2]",
    "string": b'"tasks"',
    "null": b"null",
    "number": b"7",
    "not-utf8": b"\xff\xfe\x00{",
    "nested-lists": b"[" * 200_000 + b"]" * 200_000,
    "nested-objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "huge-int": b'{"project": ' + b"9" * 5000 + b', "tasks": []}',
}

PROJECTS: list[Any] = [
    "²",
    "1" * 5000,
    "٣",
    "-1",
    "0",
    "1.2.3",
    "1.",
    ".1",
    "1.x",
    " 7",
    "7 ",
    "7\n",
    "+7",
    "7e3",
    "0x10",
    True,
    None,
    7.5,
    [],
    {},
    2**70,
    -5,
    0,
    "",
    "9" * 19,
    "7.1700000000.1",
]

TASKS: dict[str, Body] = {
    "missing": lambda tasks: {"project": STAMP},
    "empty": lambda tasks: {"project": STAMP, "tasks": []},
    "string": lambda tasks: {"project": STAMP, "tasks": "x"},
    "object": lambda tasks: {"project": STAMP, "tasks": {}},
    "ints": lambda tasks: {"project": STAMP, "tasks": [1]},
    "nulls": lambda tasks: {"project": STAMP, "tasks": [None]},
    "data-int": lambda tasks: {"project": STAMP, "tasks": [{"data": 1}]},
    "data-list": lambda tasks: {"project": STAMP, "tasks": [{"data": []}]},
    "data-empty": lambda tasks: {"project": STAMP, "tasks": [{"data": {}}]},
    "id-string": lambda tasks: {"project": STAMP, "tasks": [{**tasks[0], "id": "100"}]},
    "id-bool": lambda tasks: {"project": STAMP, "tasks": [{**tasks[0], "id": True}]},
    "id-float": lambda tasks: {"project": STAMP, "tasks": [{**tasks[0], "id": 1.5}]},
    "too-many": lambda tasks: {"project": STAMP, "tasks": [{"data": {}}] * 20_001},
    "unknown-field": lambda tasks: {"project": STAMP, "tasks": tasks, "surprise": 1},
    "label-config-int": lambda tasks: {"project": STAMP, "tasks": tasks, "label_config": 5},
    "label-config-bad-xml": lambda tasks: {
        "project": STAMP,
        "tasks": tasks,
        "label_config": "<View><Choices",
    },
    "label-config-no-speaker": lambda tasks: {
        "project": STAMP,
        "tasks": tasks,
        "label_config": "<View/>",
    },
    "params-string": lambda tasks: {"project": STAMP, "tasks": tasks, "params": "x"},
    "params-list": lambda tasks: {"project": STAMP, "tasks": tasks, "params": []},
    "other-stamp": lambda tasks: {"project": "7.1800000000", "tasks": tasks},
    "new-project-over-the-cap": lambda tasks: {"project": "8.100", "tasks": tasks},
}

TASK_DATA: dict[str, dict[str, Any]] = {
    "line-id-int": {"line_id": 5},
    "line-id-missing": {"line_id": None},
    "line-id-no-colon": {"line_id": "ep-1"},
    "line-id-long": {"line_id": "x" * 300 + ":1"},
    "line-id-not-a-number": {"line_id": "ep-1:abc"},
    "line-id-empty-index": {"line_id": "ep-1:"},
    "line-id-empty-episode": {"line_id": ":1", "episode": None},
    "line-id-traversal": {"line_id": "../../etc:1", "episode": None},
    "line-id-newline": {"line_id": "ep-1\n:1", "episode": "ep-1\n"},
    "line-id-bidi": {"line_id": "ep\u202e-1:1", "episode": "ep\u202e-1"},
    "line-id-superscript": {"line_id": "ep-1:²"},
    "line-id-unknown-line": {"line_id": "ep-1:999"},
    "episode-int": {"episode": 5},
    "episode-traversal": {"episode": "../x"},
    "episode-newline": {"episode": "ep-1\n"},
    "episode-disagrees": {"episode": "other"},
    "episode-of-other-line": {"line_id": "ep-2:1", "episode": "ep-2"},
    "audio-nul": {"line_id": "ep-x:1", "episode": "ep-x", "audio": "/data/local-files/?d=a%00.wav"},
    "audio-nul-path": {"line_id": "ep-x:1", "episode": "ep-x", "audio": "/media/a%00.wav"},
    "audio-traversal": {
        "line_id": "ep-x:1",
        "episode": "ep-x",
        "audio": "/data/local-files/?d=../../etc/passwd",
    },
    "audio-encoded-traversal": {
        "line_id": "ep-x:1",
        "episode": "ep-x",
        "audio": "/data/local-files/?d=%2E%2E/%2E%2E/etc/passwd",
    },
    "audio-absolute": {
        "line_id": "ep-x:1",
        "episode": "ep-x",
        "audio": "/data/local-files/?d=/etc/passwd",
    },
    "audio-file-url": {"line_id": "ep-x:1", "episode": "ep-x", "audio": "file:///etc/passwd"},
    "audio-metadata-host": {
        "line_id": "ep-x:1",
        "episode": "ep-x",
        "audio": "http://169.254.169.254/latest/meta-data",
    },
    "audio-rooted-outside": {"line_id": "ep-x:1", "episode": "ep-x", "audio": "/etc/passwd"},
    "audio-int": {"line_id": "ep-x:1", "episode": "ep-x", "audio": 5},
    "audio-empty": {"line_id": "ep-x:1", "episode": "ep-x", "audio": ""},
    "audio-missing": {"line_id": "ep-x:1", "episode": "ep-x", "audio": None},
    "audio-upload-without-label-studio": {
        "line_id": "ep-x:1",
        "episode": "ep-x",
        "audio": "/data/upload/1/a.wav",
    },
}


@pytest.mark.parametrize("name", sorted(RAW_BODIES))
def test_predict_raw_bodies(served, caplog, name):
    refused(
        served, "POST", "/predict", caplog, data=RAW_BODIES[name], content_type="application/json"
    )


@pytest.mark.parametrize("project", PROJECTS, ids=[repr(p)[:20] for p in PROJECTS])
def test_predict_projects(served, caplog, project):
    _, tasks, _ = served
    refused(served, "POST", "/predict", caplog, json={"project": project, "tasks": tasks})


@pytest.mark.parametrize("name", sorted(TASKS))
def test_predict_bodies(served, caplog, name):
    _, tasks, _ = served
    refused(served, "POST", "/predict", caplog, json=TASKS[name](tasks))


@pytest.mark.parametrize("name", sorted(TASK_DATA))
def test_predict_task_data(served, caplog, name):
    _, tasks, _ = served
    body = {"project": STAMP, "tasks": task_with(tasks, **TASK_DATA[name])}
    refused(served, "POST", "/predict", caplog, json=body)


# --------------------------------------------------------------------------- /webhook


def created(annotation_value: Any, task: Any = None, **extra: Any) -> Body:
    def body(tasks: list[dict]) -> dict:
        return {
            "action": "ANNOTATION_CREATED",
            "annotation": annotation_value,
            "task": tasks[2] if task is None else task,
            "project": {"id": 7},
            **extra,
        }

    return body


def region(value: Any, from_name: str = "speaker") -> dict:
    return {"id": 50, "task": 102, "result": [{"from_name": from_name, "value": value}]}


WEBHOOKS: dict[str, Body] = {
    "no-action": lambda tasks: {"project": {"id": 7}},
    "action-int": lambda tasks: {"action": 5, "project": {"id": 7}},
    "action-empty": lambda tasks: {"action": "", "project": {"id": 7}},
    "action-list": lambda tasks: {"action": ["ANNOTATION_CREATED"], "project": {"id": 7}},
    "project-missing": lambda tasks: {"action": "START_TRAINING"},
    "project-superscript": lambda tasks: {"action": "START_TRAINING", "project": "²"},
    "project-id-string": lambda tasks: {"action": "START_TRAINING", "project": {"id": "x"}},
    "project-id-bool": lambda tasks: {"action": "START_TRAINING", "project": {"id": True}},
    "project-id-huge": lambda tasks: {"action": "START_TRAINING", "project": {"id": "1" * 5000}},
    "project-list": lambda tasks: {"action": "START_TRAINING", "project": []},
    "project-float": lambda tasks: {"action": "START_TRAINING", "project": 7.5},
    "project-over-the-cap": lambda tasks: {"action": "START_TRAINING", "project": {"id": 8}},
    "unknown-field": lambda tasks: {"action": "START_TRAINING", "project": 7, "surprise": 1},
    "annotation-missing": created(None),
    "annotation-string": created("x"),
    "annotation-list": created([]),
    "annotation-id-string": created(annotation("1", 102, "a")),
    "annotation-id-bool": created(annotation(True, 102, "a")),
    "annotation-id-missing": created({"task": 102, "result": []}),
    "annotation-no-task": created(annotation(50, None, "a"), task={}),
    "annotation-task-string": created(annotation(50, "x", "a"), task={}),
    "task-int": created(annotation(50, None, "a"), task=5),
    "task-list": created(annotation(50, None, "a"), task=[1]),
    "task-id-bool": created(annotation(50, None, "a"), task={"id": True}),
    "result-string": created({"id": 50, "task": 102, "result": "x"}),
    "result-int-item": created({"id": 50, "task": 102, "result": [1]}),
    "result-null-item": created({"id": 50, "task": 102, "result": [None]}),
    "value-string": created(region("x")),
    "choices-string": created(region({"choices": "a"})),
    "choices-int": created(region({"choices": [1]})),
    "choices-object": created(region({"choices": [{"a": 1}]})),
    "text-int": created(region({"text": [5]}, from_name="new_speaker")),
    "name-too-long": created(annotation(50, 102, "x" * 201)),
    "name-megabyte": created(annotation(50, 102, "x" * 1_000_000)),
    "name-bidi": created(annotation(50, 102, "Ann\u202eoJ")),
    "name-control": created(annotation(50, 102, "Ann\x1ba")),
    "name-nul": created(annotation(50, 102, "Ann\x00a")),
    "typed-name-bidi": created(region({"text": ["Ann\u2067a"]}, from_name="new_speaker")),
    "line-id-traversal": created(
        annotation(50, 102, "a"), task={"id": 102, "data": {"line_id": "../x:1"}}
    ),
    "line-id-int": created(annotation(50, 999, "a"), task={"id": 999, "data": {"line_id": 5}}),
    "episode-disagrees": created(
        annotation(50, 102, "a"),
        task={"id": 102, "data": {"line_id": "ep-1:3", "episode": "other"}},
    ),
    "unknown-task-no-line": created(annotation(50, 9999, "a"), task={"id": 9999}),
    "bulk-not-a-list": lambda tasks: {
        "action": "ANNOTATIONS_CREATED",
        "annotation": "x",
        "project": {"id": 7},
    },
    "bulk-empty": lambda tasks: {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [],
        "project": {"id": 7},
    },
    "bulk-ints": lambda tasks: {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [1],
        "project": {"id": 7},
    },
    "bulk-task-int": lambda tasks: {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [annotation(50, 102, "a")],
        "task": 5,
        "project": {"id": 7},
    },
    "bulk-task-ints": lambda tasks: {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [annotation(50, 102, "a")],
        "task": [1, 2],
        "project": {"id": 7},
    },
    "bulk-one-bad-of-three": lambda tasks: {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [
            annotation(50, 102, "a"),
            annotation(51, 103, "b"),
            annotation(52, 104, "Ann\u202eoJ"),
        ],
        "task": tasks[2:5],
        "project": {"id": 7},
    },
    "bulk-too-many": lambda tasks: {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [1] * 20_001,
        "project": {"id": 7},
    },
    "deleted-missing": lambda tasks: {"action": "ANNOTATIONS_DELETED", "project": {"id": 7}},
    "deleted-string": lambda tasks: {
        "action": "ANNOTATIONS_DELETED",
        "annotations": "1",
        "project": {"id": 7},
    },
    "deleted-ints": lambda tasks: {
        "action": "ANNOTATIONS_DELETED",
        "annotations": [1],
        "project": {"id": 7},
    },
    "deleted-id-string": lambda tasks: {
        "action": "ANNOTATIONS_DELETED",
        "annotations": [{"id": "1"}],
        "project": {"id": 7},
    },
    "deleted-id-bool": lambda tasks: {
        "action": "ANNOTATIONS_DELETED",
        "annotations": [{"id": True}],
        "project": {"id": 7},
    },
    "deleted-null": lambda tasks: {
        "action": "ANNOTATIONS_DELETED",
        "annotations": [None],
        "project": {"id": 7},
    },
}


@pytest.mark.parametrize("name", sorted(RAW_BODIES))
def test_webhook_raw_bodies(served, caplog, name):
    refused(
        served, "POST", "/webhook", caplog, data=RAW_BODIES[name], content_type="application/json"
    )


@pytest.mark.parametrize("name", sorted(WEBHOOKS))
def test_webhooks(served, caplog, name):
    _, tasks, _ = served
    refused(served, "POST", "/webhook", caplog, json=WEBHOOKS[name](tasks))


# --------------------------------------------------------------------------- /setup

SETUPS: dict[str, Any] = {
    **{f"project-{repr(p)[:16]}": {"project": p} for p in [*PROJECTS[:12], None, True, 7.5, []]},
    "hostname-int": {"project": 7, "hostname": 5, "access_token": "t"},
    "hostname-list": {"project": 7, "hostname": [], "access_token": "t"},
    "hostname-ftp": {"project": 7, "hostname": "ftp://127.0.0.1", "access_token": "t"},
    "hostname-javascript": {"project": 7, "hostname": "javascript:alert(1)"},
    "hostname-credentials": {"project": 7, "hostname": "http://u:p@127.0.0.1:8080"},
    "hostname-bad-port": {"project": 7, "hostname": "http://127.0.0.1:99999"},
    "hostname-untrusted": {"project": 7, "hostname": "http://127.0.0.1:1", "access_token": "t"},
    "hostname-newline": {"project": 7, "hostname": "http://h\n.example", "access_token": "t"},
    "token-int": {"project": 7, "hostname": "", "access_token": 5},
    "token-space": {"project": 7, "access_token": "a b"},
    "token-newline": {"project": 7, "access_token": "abc\r\nX-Evil: 1"},
    "token-long": {"project": 7, "access_token": "a" * 600},
    "unknown-field": {"project": 7, "surprise": 1},
    "new-project-over-the-cap": {"project": "8.100"},
}


@pytest.mark.parametrize("name", sorted(RAW_BODIES))
def test_setup_raw_bodies(served, caplog, name):
    refused(
        served, "POST", "/setup", caplog, data=RAW_BODIES[name], content_type="application/json"
    )


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_setups(served, caplog, name):
    refused(served, "POST", "/setup", caplog, json=SETUPS[name])


# --------------------------------------------------------------------------- /versions

VERSION_QUERIES = ["²", "-1", "abc", "1.2.3", "9" * 30, " 7", "7%0A", "0", "%00", "٣"]
VERSION_BODIES = {
    "list": b"[1]",
    "string": b'"7"',
    "truncated": b'{"project": ',
    "nested": b"[" * 200_000 + b"]" * 200_000,
    "project-string": b'{"project": "x"}',
    "project-bool": b'{"project": true}',
    "project-list": b'{"project": [7]}',
    "project-float": b'{"project": 7.5}',
}


@pytest.mark.parametrize("query", VERSION_QUERIES)
def test_versions_queries(served, caplog, query):
    refused(served, "GET", f"/versions?project={query}", caplog)


@pytest.mark.parametrize("name", sorted(VERSION_BODIES))
def test_versions_bodies(served, caplog, name):
    refused(
        served,
        "POST",
        "/versions",
        caplog,
        data=VERSION_BODIES[name],
        content_type="application/json",
    )


# --------------------------------------------------------------------------- export names

EXPORT_NAMES = [
    "𝒜" * 80,
    "😀" * 300,
    "../../etc/passwd",
    "..",
    ".",
    "",
    "CON",
    "nul.txt",
    'a/b\\c:d*e?f"g<h>i|j',
    "Ann\u202eoJ",
    "\u2066x\u2069",
    "bell\x07",
    "nul\x00byte",
    "c1\x9bname",
    "trailing. ",
    " leading",
    "x" * 10_000,
    "é" * 200,
    "\udcff surrogate",
    "name\nnewline",
]


@pytest.mark.parametrize("name", EXPORT_NAMES, ids=[repr(n)[:24] for n in EXPORT_NAMES])
def test_export_names_are_writable_file_names(tmp_path, name):
    (safe,) = safe_path_names([name]).values()
    assert 0 < len(safe.encode("utf-8", "surrogatepass")) <= 255 - len("_0001.wav")
    assert "/" not in safe and "\\" not in safe and safe not in (".", "..")
    folder = tmp_path / safe
    folder.mkdir()
    (folder / "ep_0001.wav").write_bytes(b"RIFF")
    assert folder.parent == tmp_path
