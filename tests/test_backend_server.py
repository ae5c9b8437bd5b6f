"""The ML backend's HTTP protocol, state, operation log and media safety, without Label Studio.

The grouping itself is replaced by a small deterministic stand-in (nearest labelled line, else a
placeholder per voice direction), so these tests pin the backend's own behaviour and run in
seconds; tests/test_backend_label_studio.py runs the real grouper against a real Label Studio.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from label_config import load_config
from ml_backend import model as model_module
from ml_backend.config import BackendConfig
from ml_backend.features.store import FeatureStore, ModelInfo
from ml_backend.grouping.lines import load_lines
from ml_backend.media_access import MediaError, episode_folder, local_path
from ml_backend.operation_log import classify
from ml_backend.project_state import ProjectState
from ml_backend.server import create_app

SPEAKERS = ("a", "b", "c")


@dataclass(frozen=True)
class FakeProposal:
    line_id: str
    speaker: str | None
    cluster: int
    score: float
    alternatives: tuple = ()


class FakePlaceholders:
    def __init__(self, names: dict | None = None) -> None:
        self.names = dict(names or {})

    def to_json(self) -> dict:
        return {"names": self.names}

    @classmethod
    def from_json(cls, values: dict) -> FakePlaceholders:
        return cls(values.get("names"))


class FakeGrouper:
    """Nearest labelled line by voice; unlabelled and far: "Speaker <dominant axis>"."""

    fits = 0

    def __init__(self, **options) -> None:
        self.fitted_ = False

    def fit(self, lines, labels):
        type(self).fits += 1
        self.fitted_ = True
        return self

    def propose(self, lines, labels=None, placeholders=None):
        labels = dict(labels or {})
        named = [(lines.index_of(k), v) for k, v in labels.items()]
        out = []
        for i, line_id in enumerate(lines.line_ids):
            if line_id in labels:
                out.append(FakeProposal(line_id, labels[line_id], 0, 1.0))
                continue
            best = max(named, key=lambda p: float(lines.voice[i] @ lines.voice[p[0]]), default=None)
            if best is not None and float(lines.voice[i] @ lines.voice[best[0]]) > 0.8:
                sim = float(lines.voice[i] @ lines.voice[best[0]])
                out.append(FakeProposal(line_id, best[1], 1, round(sim, 3)))
            else:
                axis = int(np.argmax(lines.voice[i]))
                key = str(axis)
                number = placeholders.names.setdefault(key, len(placeholders.names) + 1)
                out.append(FakeProposal(line_id, f"Speaker {number}", number, 0.5))
        return out

    def save(self, folder: Path) -> None:
        (Path(folder) / "fake.json").write_text("{}")

    @classmethod
    def load(cls, folder: Path) -> FakeGrouper:
        assert (Path(folder) / "fake.json").exists()
        grouper = cls()
        grouper.fitted_ = True
        return grouper


@pytest.fixture(autouse=True)
def fake_grouping(monkeypatch):
    monkeypatch.setattr(
        model_module, "_grouping", lambda: (FakeGrouper, FakePlaceholders, load_lines)
    )


def make_episode(root: Path, episode: str = "ep-1", lines: int = 12) -> tuple[Path, list[dict]]:
    """An imported episode folder: tasks.json, placeholder clips, features.npz (3 speakers)."""
    folder = root / episode
    rng = np.random.default_rng(0)
    tasks, ids, voice = [], [], []
    for index in range(1, lines + 1):
        speaker = (index - 1) % len(SPEAKERS)
        clip = folder / "audio" / f"{index:04d}.wav"
        clip.parent.mkdir(parents=True, exist_ok=True)
        clip.write_bytes(b"RIFF")
        line_id = f"{episode}:{index}"
        ids.append(line_id)
        vector = np.zeros(8, np.float32)
        vector[speaker] = 1.0
        vector += rng.normal(0, 0.05, 8).astype(np.float32)
        voice.append(vector / np.linalg.norm(vector))
        tasks.append(
            {
                "data": {
                    "line_id": line_id,
                    "episode": episode,
                    "index": index,
                    "start": float(index),
                    "end": index + 0.8,
                    "text": f"line {index}",
                    "audio": f"/data/local-files/?d={episode}/audio/{index:04d}.wav",
                    "image": f"/data/local-files/?d={episode}/frames/{index:04d}.jpg",
                }
            }
        )
    (folder / "tasks.json").write_text(json.dumps(tasks))
    store = FeatureStore()
    store.add(ids, voice=np.stack(voice), voice_model=ModelInfo("fake-voice", "1", 8))
    store.save(folder / "features.npz")
    return folder, tasks


@pytest.fixture
def media(tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def config(tmp_path, media) -> BackendConfig:
    return BackendConfig(model_dir=tmp_path / "models", media_roots=(media,), refit_delay_s=0.01)


@pytest.fixture
def app(config):
    app = create_app(config)
    yield app
    app.extensions["speaker_grouping"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def predict_body(tasks: list[dict], project: str = "7.1700000000") -> dict:
    with_ids = [{"id": 100 + i, **task} for i, task in enumerate(tasks)]
    return {
        "tasks": with_ids,
        "project": project,
        "label_config": load_config(["a", "b", "c", "Speaker 1", "Speaker 2", "Speaker 3"]),
        "params": {"login": None, "password": None, "context": None},
    }


def annotation_event(annotation_id: int, task_id: int, task: dict, speaker: str, **extra) -> dict:
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {
            "id": annotation_id,
            "task": task_id,
            "completed_by": 1,
            "result": [
                {
                    "from_name": "speaker",
                    "to_name": "audio",
                    "type": "choices",
                    "value": {"choices": [speaker]},
                }
            ],
            "updated_at": f"2025-01-01T00:00:{annotation_id % 60:02d}Z",
            **extra,
        },
        "task": {"id": task_id, **task},
        "project": {"id": 7},
    }


# ---------------------------------------------------------------------------- protocol


def test_health_and_setup_are_fast_and_load_no_model(client):
    assert client.get("/health").json["status"] == "UP"
    answer = client.post("/setup", json={"project": "7.1700000000", "schema": "<View/>"})
    assert answer.status_code == 200
    assert answer.json["model_version"] == model_module.INITIAL_VERSION
    assert FakeGrouper.fits == 0


def test_predict_answers_every_task_in_order_with_a_score(client, media):
    _, tasks = make_episode(media)
    answer = client.post("/predict", json=predict_body(tasks[::-1]))
    assert answer.status_code == 200, answer.json
    results = answer.json["results"]
    assert len(results) == len(tasks)
    for result in results:
        assert 0.0 <= result["score"] <= 1.0
        assert result["model_version"] == model_module.INITIAL_VERSION
        assert result["result"][0]["from_name"] == "speaker"
    # Task order is kept: the first answer is for line 12, the third voice.
    assert results[0]["result"][0]["value"]["choices"] == ["Speaker 3"]
    assert results[-1]["result"][0]["value"]["choices"] == ["Speaker 1"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (json.dumps({"tasks": [], "project": "7"}).encode(), 400, "non-empty list"),
        (json.dumps({"tasks": [{"data": {}}], "project": "7"}).encode(), 400, "data.line_id"),
        (json.dumps({"tasks": [{"id": 1}], "project": "7"}).encode(), 400, "no data object"),
        (json.dumps({"tasks": [{"data": {"line_id": "e:1"}}]}).encode(), 400, "project is"),
        (json.dumps({"tasks": "x", "project": "abc"}).encode(), 400, "'<id>'"),
        (json.dumps({"tasks": [], "project": "7", "surprise": 1}).encode(), 400, "surprise"),
        (
            json.dumps({"tasks": [{"data": {"line_id": "../../x:1"}}], "project": "7"}).encode(),
            400,
            "not a plain slug",
        ),
    ],
)
def test_bad_predict_requests_get_a_4xx_with_a_clear_message(client, body, status, message):
    answer = client.post("/predict", data=body, content_type="application/json")
    assert answer.status_code == status
    assert message in answer.json["error"]


def test_unknown_task_fields_are_ignored(client, media):
    _, tasks = make_episode(media)
    tasks[0]["data"]["surprise"] = {"nested": [1, 2]}
    body = predict_body(tasks[:2])
    body["tasks"][0]["annotations"] = []
    body["tasks"][0]["whatever"] = "x"
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200
    assert len(answer.json["results"]) == 2


def test_missing_media_is_a_422_naming_the_url_and_spares_the_other_tasks(client, media):
    _, tasks = make_episode(media)
    lost = {
        "data": dict(
            tasks[0]["data"],
            line_id="gone:1",
            episode="gone",
            audio="/data/local-files/?d=gone/audio/0001.wav",
        )
    }
    alone = client.post("/predict", json=predict_body([lost]))
    assert alone.status_code == 422
    assert "gone/audio/0001.wav" in alone.json["error"]

    mixed = client.post("/predict", json=predict_body([lost, tasks[1]]))
    assert mixed.status_code == 200
    assert mixed.json["results"][0] == []
    assert mixed.json["results"][1]["score"] > 0
    assert mixed.json["errors"][0]["line_id"] == "gone:1"


def test_a_corrupt_feature_file_is_a_422_naming_it(client, media):
    folder, tasks = make_episode(media)
    (folder / "features.npz").write_bytes(b"not a zip")
    answer = client.post("/predict", json=predict_body(tasks[:2]))
    assert answer.status_code == 422
    assert "features.npz" in answer.json["error"]


@pytest.mark.parametrize(
    "url",
    [
        "/data/local-files/?d=../outside/secret.wav",
        "/data/local-files/?d=ep-1/../../outside/secret.wav",
        "/data/local-files/?d=%2Fetc%2Fpasswd",
        "/etc/passwd",
        "file:///etc/passwd",
        "/data/local-files/?d=link/secret.wav",
        "/data/../etc/passwd",
    ],
)
def test_path_traversal_is_refused(client, media, tmp_path, url):
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.wav").write_bytes(b"secret")
    (media / "link").symlink_to(outside, target_is_directory=True)
    task = {"data": {"line_id": "ep-x:1", "episode": "ep-x", "index": 1, "audio": url}}
    answer = client.post("/predict", json=predict_body([task]))
    assert answer.status_code == 422
    assert "refused" in answer.json["error"] or "outside" in answer.json["error"]
    with pytest.raises(MediaError):
        local_path(url, [media])


def test_local_paths_inside_the_root_resolve(media):
    folder, tasks = make_episode(media)
    assert local_path(tasks[0]["data"]["audio"], [media]) == (folder / "audio/0001.wav").resolve()
    assert local_path(str(folder / "audio/0002.wav"), [media]).name == "0002.wav"
    assert local_path("http://elsewhere.example/a.wav", [media]) is None
    assert episode_folder(tasks[0]["data"], [media]) == folder.resolve()


def test_remote_media_are_not_fetched_from_another_host(media, tmp_path):
    from ml_backend.media_access import Credentials, fetch

    with pytest.raises(MediaError, match="not on Label Studio's host"):
        fetch("http://evil.example/a.wav", Credentials("http://127.0.0.1:9", "k" * 40))
    with pytest.raises(MediaError, match="no Label Studio URL"):
        fetch("/data/upload/a.wav", Credentials(None, None))


def test_request_size_is_limited(tmp_path, media):
    config = BackendConfig(model_dir=tmp_path / "m", media_roots=(media,), max_request_bytes=2048)
    app = create_app(config)
    answer = app.test_client().post(
        "/predict", data=b"{" + b" " * 4096 + b"}", content_type="application/json"
    )
    assert answer.status_code == 413
    assert "larger than 2048" in answer.json["error"]


def test_basic_auth_guards_everything_but_health(tmp_path, media):
    config = BackendConfig(
        model_dir=tmp_path / "m", media_roots=(media,), basic_auth_user="u", basic_auth_pass="p"
    )
    client = create_app(config).test_client()
    assert client.get("/health").status_code == 200
    assert client.post("/setup", json={"project": "1"}).status_code == 401
    good = base64.b64encode(b"u:p").decode()
    bad = base64.b64encode(b"u:x").decode()
    assert (
        client.post(
            "/setup", json={"project": "1"}, headers={"Authorization": f"Basic {bad}"}
        ).status_code
        == 401
    )
    answer = client.post(
        "/setup", json={"project": "1"}, headers={"Authorization": f"Basic {good}"}
    )
    assert answer.status_code == 200


# ---------------------------------------------------------------------------- webhooks, state


def test_a_correction_refits_and_changes_the_other_lines_of_that_speaker(app, client, media):
    _, tasks = make_episode(media)
    before = client.post("/predict", json=predict_body(tasks)).json["results"]
    assert before[3]["result"][0]["value"]["choices"] == ["Speaker 1"]  # line 4 is speaker a

    answer = client.post("/webhook", json=annotation_event(1, 100, tasks[0], "Mika"))
    assert answer.status_code == 200
    assert answer.json["kinds"] == ["name"]  # a placeholder cluster got its name
    model = app.extensions["speaker_grouping"].model(7)
    assert model.worker.wait_idle(10)
    assert model.model_version.startswith("sg-0001-")

    after = client.post("/predict", json=predict_body(tasks)).json["results"]
    assert after[0]["result"][0]["value"]["choices"] == ["Mika"] and after[0]["score"] == 1.0
    assert after[3]["result"][0]["value"]["choices"] == ["Mika"]  # same voice, now named
    assert after[4]["result"][0]["value"]["choices"] == ["Speaker 2"]  # another voice, untouched
    assert all(r["model_version"] == model.model_version for r in after)


def test_skips_are_ignored_and_deletions_forget_the_label(app, client, media):
    _, tasks = make_episode(media)
    client.post("/predict", json=predict_body(tasks))
    skip = annotation_event(5, 100, tasks[0], "Speaker 1", was_cancelled=True)
    assert client.post("/webhook", json=skip).json["kinds"] == ["skipped"]
    model = app.extensions["speaker_grouping"].model(7)
    assert model.state.labels() == {}

    client.post("/webhook", json=annotation_event(6, 101, tasks[1], "Ren"))
    assert model.state.labels() == {"ep-1:2": "Ren"}
    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 6}], "project": {"id": 7}}
    assert client.post("/webhook", json=deleted).json["forgotten"] == 1
    assert model.state.labels() == {}
    assert (
        client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 7}}).json[
            "status"
        ]
        == "ignored"
    )


def test_the_new_speaker_text_box_wins_and_unknown_is_no_label(app, client, media):
    _, tasks = make_episode(media)
    event = annotation_event(8, 100, tasks[0], "a")
    event["annotation"]["result"].append(
        {
            "from_name": "new_speaker",
            "to_name": "audio",
            "type": "textarea",
            "value": {"text": ["  New  Person "]},
        }
    )
    client.post("/webhook", json=event)
    client.post("/webhook", json=annotation_event(9, 101, tasks[1], "Unknown"))
    assert app.extensions["speaker_grouping"].model(7).state.labels() == {"ep-1:1": "New Person"}


def test_bulk_created_annotations_are_all_recorded(app, client, media):
    _, tasks = make_episode(media)
    one = annotation_event(11, 100, tasks[0], "Mika")
    two = annotation_event(12, 101, tasks[1], "Ren")
    bulk = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [one["annotation"], two["annotation"]],
        "task": [one["task"], two["task"]],
        "project": {"id": 7},
    }
    assert client.post("/webhook", json=bulk).json["kinds"] == ["add", "add"]
    labels = app.extensions["speaker_grouping"].model(7).state.labels()
    assert labels == {"ep-1:1": "Mika", "ep-1:2": "Ren"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"action": "ANNOTATION_CREATED", "project": {"id": 7}}, "no annotation object"),
        ({"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}, "project": 7}, "integer id"),
        ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1}, "project": 7}, "no task id"),
        ({"action": "ANNOTATIONS_DELETED", "project": 7}, "annotations list"),
        ({"project": 7}, "without an action"),
        ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 2}}, "project is"),
        ({"action": "START_TRAINING", "project": 7, "extra": 1}, "extra"),
    ],
)
def test_bad_webhooks_get_a_400(client, payload, message):
    answer = client.post("/webhook", json=payload)
    assert answer.status_code == 400
    assert message in answer.json["error"]


def test_nothing_is_lost_across_a_restart(config, media):
    _, tasks = make_episode(media)
    first = create_app(config)
    client = first.test_client()
    client.post("/predict", json=predict_body(tasks))
    client.post("/webhook", json=annotation_event(1, 100, tasks[0], "Mika"))
    client.post("/webhook", json=annotation_event(2, 104, tasks[4], "Ren"))
    model = first.extensions["speaker_grouping"].model(7)
    assert model.worker.wait_idle(10)
    version = model.model_version
    shown = client.post("/predict", json=predict_body(tasks)).json["results"]
    first.extensions["speaker_grouping"].close()

    second = create_app(config).test_client()
    assert second.post("/setup", json={"project": "7.1700000000"}).json["model_version"] == version
    again = second.post("/predict", json=predict_body(tasks)).json["results"]
    assert again == shown
    state = ProjectState.open(config.model_dir, 7)
    assert state.labels() == {"ep-1:1": "Mika", "ep-1:5": "Ren"}
    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 2}], "project": {"id": 7}}
    assert second.post("/webhook", json=deleted).json["forgotten"] == 1  # map survived too


def test_a_recreated_project_with_the_same_id_starts_afresh(config, media):
    _, tasks = make_episode(media)
    client = create_app(config).test_client()
    client.post("/webhook", json=annotation_event(1, 100, tasks[0], "Mika"))
    client.post("/setup", json={"project": "7.1700000000"})
    client.post("/setup", json={"project": "7.1800000000"})
    assert ProjectState.open(config.model_dir, 7).labels() == {}
    assert any(p.name.startswith("7.replaced-") for p in config.model_dir.iterdir())


def test_burst_of_webhooks_while_predicting_loses_nothing_and_never_fails(media, config):
    _, tasks = make_episode(media, lines=30)
    app = create_app(config.with_(refit_delay_s=0.2))
    client = app.test_client()
    client.post("/predict", json=predict_body(tasks))
    statuses: list[int] = []
    problems: list[str] = []
    stop = threading.Event()
    state_file = config.model_dir / "7" / "state.json"

    def predictor() -> None:
        local = app.test_client()
        while not stop.is_set():
            answer = local.post("/predict", json=predict_body(tasks[:5]))
            statuses.append(answer.status_code)

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads(state_file.read_text())
            except (OSError, ValueError) as error:
                problems.append(repr(error))

    def hooks(offset: int) -> None:
        local = app.test_client()
        for k in range(25):
            number = offset + k
            position = number % len(tasks)
            event = annotation_event(
                1000 + number, 100 + position, tasks[position], SPEAKERS[number % 3]
            )
            statuses.append(local.post("/webhook", json=event).status_code)

    threads = [threading.Thread(target=predictor) for _ in range(8)]
    threads += [threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    senders = [threading.Thread(target=hooks, args=(25 * i,)) for i in range(8)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    stop.set()
    for thread in threads:
        thread.join()

    assert set(statuses) == {200}
    assert problems == []
    model = app.extensions["speaker_grouping"].model(7)
    assert model.worker.wait_idle(30)
    saved = json.loads(state_file.read_text())
    assert len(saved["annotations"]) == 200
    assert model.worker.rounds < 40  # bursts were coalesced
    assert model.worker.failures == 0
    app.extensions["speaker_grouping"].close()


def test_metrics_count_requests_fits_and_operations(app, client, media):
    _, tasks = make_episode(media)
    client.post("/predict", json=predict_body(tasks))
    client.post("/predict", data=b"nope", content_type="application/json")
    client.post("/webhook", json=annotation_event(1, 100, tasks[0], "Mika"))
    app.extensions["speaker_grouping"].model(7).worker.wait_idle(10)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sg_requests_total{endpoint="predict",status="200"} 1.0' in text
    assert 'sg_requests_total{endpoint="predict",status="400"} 1.0' in text
    assert 'sg_fits_total{outcome="ok"} 1.0' in text
    assert 'sg_operations_total{kind="name"} 1.0' in text
    assert "sg_request_seconds_bucket" in text


# ---------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("proposed", "label", "named_elsewhere", "kind"),
    [
        ("Mika", "Mika", True, "accepted"),
        (None, None, False, "accepted"),
        (None, "Mika", True, "add"),
        ("Mika", "Ren", True, "remove"),
        ("Mika", None, False, "remove"),
        ("Speaker 3", "Ren", False, "name"),
        ("Speaker 3", "Ren", True, "merge"),
    ],
)
def test_corrections_are_classified_as_design_section_5(proposed, label, named_elsewhere, kind):
    assert classify(proposed, label, named_elsewhere=named_elsewhere) == kind


def test_config_from_env_reads_roots_and_refuses_half_auth(tmp_path):
    env = {
        "MODEL_DIR": str(tmp_path),
        "LOCAL_FILES_DOCUMENT_ROOT": "/srv/media",
        "SG_MEDIA_ROOTS": os.pathsep.join(["/a", "/b"]),
        "LABEL_STUDIO_URL": "http://ls:8080/",
        "SG_MAX_REQUEST_BYTES": "4096",
    }
    config = BackendConfig.from_env(env)
    assert config.media_roots == (Path("/srv/media"), Path("/a"), Path("/b"))
    assert config.label_studio_url == "http://ls:8080"
    assert config.max_request_bytes == 4096
    with pytest.raises(ValueError, match="BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        BackendConfig.from_env({"BASIC_AUTH_USER": "u"})
    with pytest.raises(ValueError, match="SG_MAX_REQUEST_BYTES='lots'"):
        BackendConfig.from_env({"SG_MAX_REQUEST_BYTES": "lots"})


# ---------------------------------------------------------------------------- commands


def test_report_prints_the_operation_log_and_draws_a_chart(app, client, media, config, capsys):
    from speaker_grouping.cli import main

    _, tasks = make_episode(media)
    client.post("/predict", json=predict_body(tasks))
    client.post("/webhook", json=annotation_event(1, 100, tasks[0], "Mika"))  # names Speaker 1
    client.post("/webhook", json=annotation_event(2, 103, tasks[3], "Mika"))  # now accepted?
    client.post("/webhook", json=annotation_event(3, 101, tasks[1], "Mika"))  # merge
    app.extensions["speaker_grouping"].model(7).worker.wait_idle(10)
    png = config.model_dir / "report.png"
    code = main(
        ["report", "--project", "7", "--model-dir", str(config.model_dir), "--png", str(png)]
    )
    out = capsys.readouterr().out
    assert code == 0
    header, _, row = out.splitlines()[:3]
    assert header.split()[:5] == ["episode", "annotator", "reviewed", "accepted", "corrected"]
    assert row.split()[:3] == ["ep-1", "1", "3"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_a_log_is_a_one_line_error(tmp_path, capsys):
    from speaker_grouping.cli import main

    assert main(["report", "--project", "3", "--model-dir", str(tmp_path)]) == 2
    assert "no operation log for this project" in capsys.readouterr().err


def test_serve_refuses_a_port_out_of_range(tmp_path, capsys):
    from speaker_grouping.cli import main

    assert main(["serve", "--port", "70000", "--model-dir", str(tmp_path)]) == 2
    assert "is not a TCP port" in capsys.readouterr().err


# ---------------------------------------------------------------------------- media not in place


def fake_extract(episode_dir, store_path, voice, image):
    """Stands in for the embedders: a line's voice is one-hot on its clip's first byte."""
    tasks = json.loads((Path(episode_dir) / "tasks.json").read_text())
    ids, vectors = [], []
    for task in tasks:
        clip = Path(episode_dir) / task["data"]["audio"]
        vector = np.zeros(8, np.float32)
        vector[clip.read_bytes()[0] % 8] = 1.0
        ids.append(task["data"]["line_id"])
        vectors.append(vector)
    store = FeatureStore()
    store.add(ids, voice=np.stack(vectors), voice_model=ModelInfo("fake-voice", "1", 8))
    store.save(store_path)


def loose_tasks(urls: list[str]) -> list[dict]:
    return [
        {"data": {"line_id": f"loose:{i}", "episode": "loose", "index": i, "audio": url}}
        for i, url in enumerate(urls, start=1)
    ]


def test_local_media_outside_an_import_are_copied_and_embedded_in_the_cache(
    client, media, config, monkeypatch
):
    monkeypatch.setattr("ml_backend.media_access._extract", fake_extract)
    clips = media / "clips"
    clips.mkdir()
    for i, first in enumerate((0, 0, 5), start=1):
        (clips / f"c{i}.wav").write_bytes(bytes([first]) + b"data")
    urls = [f"/data/local-files/?d=clips/c{i}.wav" for i in (1, 2, 3)]
    answer = client.post("/predict", json=predict_body(loose_tasks(urls)))
    assert answer.status_code == 200, answer.json
    shown = [r["result"][0]["value"]["choices"][0] for r in answer.json["results"]]
    assert shown[0] == shown[1] != shown[2]
    cached = config.model_dir / "7" / "episodes" / "loose"
    assert (cached / "audio" / "0003.wav").read_bytes() == bytes([5]) + b"data"
    assert (cached / "features.npz").is_file()


def test_remote_media_are_fetched_from_label_studio_with_the_key(tmp_path, media, monkeypatch):
    requests_mock = pytest.importorskip("requests_mock")
    monkeypatch.setattr("ml_backend.media_access._extract", fake_extract)
    config = BackendConfig(
        model_dir=tmp_path / "m",
        media_roots=(media,),
        label_studio_url="http://ls.test:8080",
        label_studio_api_key="k" * 40,
        push_predictions=False,
    )
    app = create_app(config)
    urls = ["/data/upload/1/a.wav", "http://ls.test:8080/data/upload/1/b.wav"]
    with requests_mock.Mocker() as server:
        server.get("http://ls.test:8080/api/tasks", json={"tasks": [], "total": 0})
        server.get("http://ls.test:8080/data/upload/1/a.wav", content=b"\x02wav")
        server.get("http://ls.test:8080/data/upload/1/b.wav", content=b"\x02wav")
        answer = app.test_client().post("/predict", json=predict_body(loose_tasks(urls)))
        fetched = [r for r in server.request_history if "/data/" in r.url]
    assert answer.status_code == 200, answer.json
    assert len(fetched) == 2
    assert all(r.headers["Authorization"] == "Token " + "k" * 40 for r in fetched)
    app.extensions["speaker_grouping"].close()
