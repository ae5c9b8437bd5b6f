"""Issue 12, correctness: each test reproduces one defect of the table (rows 2, 3, 4, 9, 10) on
the real app, the real grouper and real state files, and pins that it stays fixed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from label_config import load_config, speaker_prediction
from ml_backend.config import BackendConfig
from ml_backend.project_state import ProjectState
from ml_backend.server import create_app
from tests.backend_fixtures import speakers_of, write_episode
from tests.http_recorder import Recorder, start_recorder, stop
from tests.ls_payloads import annotation_event
from tests.ls_payloads import stamped_annotation as annotation

SPEAKERS = ("a", "b", "c")
STAMP = "7.1700000000"


@pytest.fixture
def media(tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def config(tmp_path, media) -> BackendConfig:
    return BackendConfig(model_dir=tmp_path / "models", media_roots=(media,), refit_delay_s=0.0)


def predict_body(tasks: list[dict], project: str = STAMP, first_id: int = 100) -> dict:
    return {
        "tasks": [{"id": first_id + i, **task} for i, task in enumerate(tasks)],
        "project": project,
        "label_config": load_config(["a", "b", "c", "Speaker 1", "Speaker 2", "Speaker 3"]),
    }


def created(annotation_id: int, task_id: int, task: dict, speaker: str) -> dict:
    return annotation_event(annotation(annotation_id, task_id, speaker), task)


def state_files(model_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(model_dir)): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()
    }


def labelled_app(config: BackendConfig, media: Path, labels: int = 5):
    """An app whose project 7 has ``labels`` labels, fitted; returns (app, client, tasks)."""
    _, tasks = write_episode(media, "ep-1", speakers_of(12, SPEAKERS))
    app = create_app(config)
    client = app.test_client()
    assert client.post("/predict", json=predict_body(tasks)).status_code == 200
    for k in range(labels):
        event = created(k + 1, 100 + k, tasks[k], SPEAKERS[k % 3])
        assert client.post("/webhook", json=event).status_code == 200
    assert app.extensions["speaker_grouping"].model(7).worker.wait_idle(30)
    return app, client, tasks


# --------------------------------------------------------------------------- row 2


def test_a_task_whose_episode_disagrees_gets_an_error_and_the_project_keeps_working(config, media):
    """Row 2: one task whose data.episode disagreed with its folder registered the folder
    twice, and every later /predict and refit answered 500 "the same line id appears twice"."""
    app, client, tasks = labelled_app(config, media)
    poisoned = json.loads(json.dumps(tasks[0]))
    poisoned["data"]["episode"] = "other"
    trailing = json.loads(json.dumps(tasks[1]))
    trailing["data"]["episode"] = "ep-1\n"
    trailing["data"]["line_id"] = "ep-1\n:2"
    answer = client.post("/predict", json=predict_body([poisoned, trailing, *tasks[2:]]))
    assert answer.status_code == 200
    assert answer.json["results"][0] == [] and answer.json["results"][1] == []
    assert all(answer.json["results"][2:])
    errors = {e["task"]: e["error"] for e in answer.json["errors"]}
    assert "not of its task's episode 'other'" in errors[100]
    assert "not a plain slug" in errors[101]
    alone = client.post("/predict", json=predict_body([poisoned]))
    assert alone.status_code == 400
    assert list(ProjectState.open(config.model_dir, 7).episodes()) == ["ep-1"]
    again = client.post("/predict", json=predict_body(tasks))
    assert again.status_code == 200 and all(again.json["results"])
    assert client.post("/webhook", json=created(50, 105, tasks[5], "c")).status_code == 200
    model = app.extensions["speaker_grouping"].model(7)
    assert model.worker.wait_idle(30) and model.worker.failures == 0


def test_a_task_pointing_into_another_episodes_folder_is_refused(config, media):
    _, tasks = write_episode(media, "ep-1", speakers_of(6, SPEAKERS))
    client = create_app(config).test_client()
    stranger = json.loads(json.dumps(tasks[0]))
    stranger["data"]["episode"] = "ep-9"
    stranger["data"]["line_id"] = "ep-9:1"
    answer = client.post("/predict", json=predict_body([stranger]))
    assert answer.status_code == 422
    assert "whose lines are of episode 'ep-1'" in answer.json["error"]
    assert not (config.model_dir / "7").exists()  # refused: nothing stored


def test_a_state_already_poisoned_is_repaired_on_load(config, media):
    """Row 2: "also after a restart". A state written by the old code, with one folder under
    two episode ids, loads with the alias dropped and answers again."""
    folder, tasks = write_episode(media, "ep-1", speakers_of(9, SPEAKERS))
    app = create_app(config)
    assert app.test_client().post("/predict", json=predict_body(tasks)).status_code == 200
    app.extensions["speaker_grouping"].close()
    state_file = config.model_dir / "7" / "state.json"
    state = json.loads(state_file.read_text())
    state["episodes"]["ep-1\n"] = {"folder": str(folder), "source": "import"}
    state["episodes"]["other"] = {"folder": str(folder) + "/", "source": "import"}
    state_file.write_text(json.dumps(state))

    client = create_app(config).test_client()
    answer = client.post("/predict", json=predict_body(tasks))
    assert answer.status_code == 200 and all(answer.json["results"])
    assert list(json.loads(state_file.read_text())["episodes"]) == ["ep-1"]


# --------------------------------------------------------------------------- row 3


def test_a_predict_with_another_project_stamp_loses_no_label(config, media):
    """Row 3: a /predict with another stamp moved the state aside (5 labels became 0); a second
    one in the same second answered 500 and left the refit worker stopped."""
    app, client, tasks = labelled_app(config, media)
    before = state_files(config.model_dir)
    for _ in range(2):
        answer = client.post("/predict", json=predict_body(tasks, project="7.1800000000"))
        assert answer.status_code == 409
        assert "Connect the model again" in answer.json["error"]
    assert state_files(config.model_dir) == before
    assert len(ProjectState.open(config.model_dir, 7).labels()) == 5
    model = app.extensions["speaker_grouping"].model(7)
    version = model.model_version
    assert client.post("/webhook", json=created(9, 108, tasks[8], "c")).status_code == 200
    assert model.worker.wait_idle(30)
    assert model.model_version != version  # the worker still refits
    assert len(model.state.labels()) == 6


def test_setup_with_a_new_stamp_keeps_the_old_labels_whole_twice_in_a_second(config, media):
    app, client, _ = labelled_app(config, media)
    labels = ProjectState.open(config.model_dir, 7).labels()
    for stamp in ("7.1800000000", "7.1900000000"):
        answer = client.post("/setup", json={"project": stamp})
        assert answer.status_code == 200
    archives = sorted(p for p in config.model_dir.iterdir() if ".replaced-" in p.name)
    assert len(archives) == 2
    kept = ProjectState(archives[0] if "1700000000" in archives[0].name else archives[1], 7)
    assert kept.labels() == labels
    assert ProjectState.open(config.model_dir, 7).stamp == 1900000000
    assert app.extensions["speaker_grouping"].model(7).worker.failures == 0


# --------------------------------------------------------------------------- row 4


class SlowListing(Recorder):
    """A Label Studio whose task listing (with annotations) waits until the test lets it go."""

    def __init__(self, tasks: list[dict]) -> None:
        super().__init__(label_studio=True)
        self.tasks = tasks
        self.listing = threading.Event()
        self.release = threading.Event()

    def answer(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/api/tasks") and "fields=all" in path:
            self.listing.set()
            self.release.wait(30)
            body = json.dumps({"tasks": self.tasks, "total": len(self.tasks)}).encode()
            return 200, {"Content-Type": "application/json"}, body
        return super().answer(method, path)


def test_a_webhook_acknowledged_during_a_reconcile_is_kept(config, media):
    """Row 4: a webhook acknowledged while a reconcile listed Label Studio's annotations was
    dropped by that reconcile, and the refit ran without it."""
    _, tasks = write_episode(media, "ep-1", speakers_of(6, SPEAKERS))
    listed = [
        {"id": 100, **tasks[0], "annotations": [annotation(1, 100, "a")]},
        *({"id": 100 + k, **tasks[k], "annotations": []} for k in range(1, 6)),
    ]
    studio = start_recorder(SlowListing(listed))
    studio.release.set()  # the worker's own first reconcile runs through
    try:
        app = create_app(config.with_(label_studio_url=studio.url, label_studio_api_key="k" * 40))
        client = app.test_client()
        assert client.post("/webhook", json=created(1, 100, tasks[0], "a")).status_code == 200
        model = app.extensions["speaker_grouping"].model(7)
        assert model.worker.wait_idle(30)
        studio.listing.clear()
        studio.release.clear()
        reconcile = threading.Thread(target=model.reconcile)
        reconcile.start()
        assert studio.listing.wait(30)
        assert client.post("/webhook", json=created(2, 101, tasks[1], "b")).status_code == 200
        studio.release.set()
        reconcile.join(30)
        assert model.state.labels() == {"ep-1:1": "a", "ep-1:2": "b"}
        assert model.worker.wait_idle(30)
        assert model.state.fitted_labels == {"ep-1:1": "a", "ep-1:2": "b"}
        app.extensions["speaker_grouping"].close()
    finally:
        studio.release.set()
        stop(studio)


def test_a_reconcile_still_forgets_what_label_studio_deleted(config, media):
    _, tasks = write_episode(media, "ep-1", speakers_of(6, SPEAKERS))
    listed = [{"id": 100 + k, **tasks[k], "annotations": []} for k in range(6)]
    studio = start_recorder(SlowListing(listed))
    studio.release.set()
    try:
        app = create_app(config.with_(label_studio_url=studio.url, label_studio_api_key="k" * 40))
        client = app.test_client()
        assert client.post("/webhook", json=created(1, 100, tasks[0], "a")).status_code == 200
        model = app.extensions["speaker_grouping"].model(7)
        assert model.worker.wait_idle(30)  # its round reconciled: Label Studio has no annotation
        assert model.state.labels() == {} and model.state.annotation_ids() == set()
        app.extensions["speaker_grouping"].close()
    finally:
        stop(studio)


# --------------------------------------------------------------------------- row 9


def test_a_refused_bulk_webhook_stores_nothing(config, media):
    """Row 9: a bulk ANNOTATIONS_CREATED refused with 400 had already stored its first
    annotations, and scheduled no refit."""
    app, client, tasks = labelled_app(config, media, labels=1)
    before = state_files(config.model_dir)
    bulk = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [
            annotation(11, 101, "b"),
            annotation(12, 102, "c"),
            {**annotation(13, 103, "a"), "result": ["not an object"]},
        ],
        "task": [{"id": 100 + k, **tasks[k]} for k in (1, 2, 3)],
        "project": {"id": 7},
    }
    answer = client.post("/webhook", json=bulk)
    assert answer.status_code == 400
    assert "annotation 13" in answer.json["error"]
    assert state_files(config.model_dir) == before

    bulk["annotation"][2] = annotation(13, 103, "a")
    model = app.extensions["speaker_grouping"].model(7)
    version = model.model_version
    answer = client.post("/webhook", json=bulk)
    assert answer.status_code == 200 and len(answer.json["kinds"]) == 3
    assert model.worker.wait_idle(30)
    assert model.state.fitted_labels == {
        "ep-1:1": "a",
        "ep-1:2": "b",
        "ep-1:3": "c",
        "ep-1:4": "a",
    }
    assert model.model_version != version


# --------------------------------------------------------------------------- row 10


def test_start_removes_stale_temporaries_and_refits_when_labels_are_ahead(config, media):
    """Row 10: a kill -9 left a .tmp that was never removed, and no refit ran after a restart
    until the next event. Here the refit is held back (a long delay), the app is dropped with
    its labels on disk but not fitted, and a crashed writer's temporaries are left around."""
    _, tasks = write_episode(media, "ep-1", speakers_of(9, SPEAKERS))
    first = create_app(config.with_(refit_delay_s=3600))
    client = first.test_client()
    assert client.post("/predict", json=predict_body(tasks)).status_code == 200
    for k in range(3):
        assert client.post("/webhook", json=created(k + 1, 100 + k, tasks[k], SPEAKERS[k]))
    first.extensions["speaker_grouping"].close()
    folder = config.model_dir / "7"
    stale = [folder / ".state.json.x1y2z3.tmp", folder / "models" / ".weights.npz.abc.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    state = ProjectState.open(config.model_dir, 7)
    assert len(state.labels()) == 3 and state.fitted_labels == {}

    second = create_app(config)
    assert not any(path.exists() for path in stale)
    model = second.extensions["speaker_grouping"].model(7)
    assert model.worker.wait_idle(30)
    assert model.worker.rounds == 1
    state = ProjectState.open(config.model_dir, 7)
    assert state.fitted_labels == state.labels() and state.model_version
    assert not list(config.model_dir.rglob("*.tmp"))
    second.extensions["speaker_grouping"].close()


def test_start_logs_the_operations_a_crash_left_out(config, media):
    """Row 10: operations.json could miss webhooks in flight (a kill between storing the label
    and logging it). Here the log loses its last entry, as such a kill leaves it."""
    app, _, _ = labelled_app(config, media, labels=3)
    app.extensions["speaker_grouping"].close()
    log_file = config.model_dir / "7" / "operations.json"
    log = json.loads(log_file.read_text())
    dropped = log["annotations"].pop("3")
    log_file.write_text(json.dumps(log))

    second = create_app(config)
    restored = json.loads(log_file.read_text())["annotations"]
    assert sorted(restored) == ["1", "2", "3"]
    assert restored["3"]["label"] == dropped["label"] and restored["3"]["line_id"] == "ep-1:3"
    second.extensions["speaker_grouping"].close()


def test_a_predict_during_a_refit_reads_the_last_snapshot_instead_of_waiting(config, media):
    """Request threads read the immutable snapshot the worker published while the worker is
    busy: here the worker runs a command that blocks, as a long refit does."""
    app, client, tasks = labelled_app(config, media)
    model = app.extensions["speaker_grouping"].model(7)
    before = client.post("/predict", json=predict_body(tasks)).json
    held, release = threading.Event(), threading.Event()

    def refit_in_progress() -> None:
        held.set()
        release.wait(60)

    holder = threading.Thread(target=lambda: model.worker.call(refit_in_progress))
    holder.start()
    assert held.wait(30)
    answers: list = []
    asking = threading.Thread(
        target=lambda: answers.append(client.post("/predict", json=predict_body(tasks[:4])))
    )
    asking.start()
    asking.join(30)
    finished_while_held = not asking.is_alive()
    release.set()
    holder.join(30)
    asking.join(30)
    assert finished_while_held
    assert answers[0].status_code == 200
    assert answers[0].json["model_version"] == before["model_version"]
    assert answers[0].json["results"] == before["results"][:4]


def test_a_bulk_accept_is_one_operation_per_cluster(config, media):
    """Issue 16 item 5: "Create Annotations From Predictions" on a cluster is one bulk webhook;
    the log shows one operation for it, and a line corrected later leaves the group."""
    _, tasks = write_episode(media, "ep-1", speakers_of(9, SPEAKERS))
    app = create_app(config)
    client = app.test_client()
    answer = client.post("/predict", json=predict_body(tasks)).json
    shown = [r["result"][0]["value"]["choices"][0] for r in answer["results"]]
    cluster = [k for k, name in enumerate(shown) if name == shown[0]]
    assert len(cluster) >= 2
    bulk = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [
            {
                "id": 500 + k,
                "task": 100 + k,
                "completed_by": 1,
                "result": speaker_prediction(shown[k]),
            }
            for k in cluster
        ],
        "task": [{"id": 100 + k, **tasks[k]} for k in cluster],
        "project": {"id": 7},
    }
    reply = client.post("/webhook", json=bulk)
    assert reply.status_code == 200 and set(reply.json["kinds"]) == {"accepted"}
    model = app.extensions["speaker_grouping"].model(7)
    assert model.worker.wait_idle(30) and model.worker.failures == 0
    rows = model.oplog.entries()
    assert len(rows) == 1 and rows[0]["lines"] == len(cluster) and rows[0]["kind"] == "accepted"
    assert model.oplog.summary()[0]["reviewed"] == 1
    # One line of the cluster is corrected afterwards: it leaves the group, as a correction.
    k = cluster[-1]
    update = created(500 + k, 100 + k, tasks[k], "Someone else")
    update["action"] = "ANNOTATION_UPDATED"
    assert client.post("/webhook", json=update).status_code == 200
    rows = model.oplog.entries()
    assert [row.get("lines") for row in rows] == [len(cluster) - 1, None]
    assert rows[1]["kind"] in ("remove", "name")
    app.extensions["speaker_grouping"].close()
