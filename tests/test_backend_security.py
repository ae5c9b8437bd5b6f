"""Issue 12, security: who gets the API key, what the backend may be made to request, and what
it refuses to start or store. Every test runs the real app (Flask test client) against real
HTTP servers on 127.0.0.1 (`tests.http_recorder`), one of which plays the attacker."""

from __future__ import annotations

import base64
import itertools
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from foundation.label_studio import LabelStudioClient, LabelStudioError, origin_of
from label_config import MAX_SPEAKER_NAME, clean_speaker_name, load_config
from ml_backend.config import BackendConfig, ConfigError
from ml_backend.media_access import Credentials, EpisodeCache, TaskMediaError, fetch_to
from ml_backend.server import create_app
from tests.backend_fixtures import speakers_of, write_episode
from tests.http_recorder import Recorder, start_recorder, stop
from tests.ls_payloads import annotation, annotation_event

REPO = Path(__file__).resolve().parents[1]
SECRET = "5ec2e7" * 6 + "abcd"  # the configured LABEL_STUDIO_API_KEY (40 hex)
SETUP_TOKEN = "setup-token-from-label-studio"


@pytest.fixture
def attacker():
    recorder = start_recorder(Recorder())
    yield recorder
    stop(recorder)


@pytest.fixture
def legit():
    recorder = start_recorder(Recorder(label_studio=True))
    yield recorder
    stop(recorder)


def state_files(model_dir: Path) -> dict[str, bytes]:
    """Every file under the model dir with its content: 'no state changed' is equality."""
    if not model_dir.exists():
        return {}
    return {
        str(p.relative_to(model_dir)): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()
    }


def webhook(annotation_id: int, task_id: int, speaker: str, line_id: str = "ep-1:1") -> dict:
    task = {"data": {"line_id": line_id, "episode": "ep-1"}}
    return annotation_event(annotation(annotation_id, task_id, speaker), task)


# --------------------------------------------------------------------------- the attacker test

CONFIGURATIONS = list(
    itertools.product(
        (None, "legit"),  # LABEL_STUDIO_URL
        (None, SECRET),  # LABEL_STUDIO_API_KEY
        (None, "attacker"),  # /setup hostname
        (False, True),  # SG_TRUST_SETUP_HOSTNAME
        (False, True),  # the legit Label Studio redirects every request to the attacker
    )
)


@pytest.mark.parametrize(("url", "key", "hostname", "trust", "redirect"), CONFIGURATIONS)
def test_the_attacker_never_receives_the_api_key(
    tmp_path, attacker, legit, url, key, hostname, trust, redirect
):
    """Issue 12 row 1: with a key and no URL, /setup's hostname got the real key; with neither,
    the backend made blind requests to any host. Here every path that talks HTTP runs: /setup,
    a predict whose media are on the attacker's host or on Label Studio's, an annotation, and a
    START_TRAINING (reconcile, refit, push)."""
    if redirect:
        legit.redirect_to = attacker.url
    config = BackendConfig(
        model_dir=tmp_path / "models",
        media_roots=(tmp_path,),
        label_studio_url=legit.url if url else None,
        label_studio_api_key=key,
        trust_setup_hostname=trust,
        refit_delay_s=0.0,
    )
    app = create_app(config)
    client = app.test_client()
    setup = client.post(
        "/setup",
        json={
            "project": "7.1700000000",
            "hostname": attacker.url if hostname else "",
            "access_token": SETUP_TOKEN,
        },
    )
    assert setup.status_code in (200, 403), setup.json
    tasks = [
        {
            "id": 1,
            "data": {
                "line_id": "ep-1:1",
                "episode": "ep-1",
                "index": 1,
                "audio": f"{attacker.url}/data/upload/1.wav",
                "image": f"{attacker.url}/data/upload/1.jpg",
            },
        },
        {
            "id": 2,
            "data": {
                "line_id": "ep-1:2",
                "episode": "ep-1",
                "index": 2,
                "audio": "/data/upload/2.wav",
            },
        },
    ]
    predict = client.post("/predict", json={"project": "7.1700000000", "tasks": tasks})
    assert 400 <= predict.status_code < 500, predict.json
    assert client.post("/webhook", json=webhook(1, 1, "Mika")).status_code == 200
    training = {"action": "START_TRAINING", "project": {"id": 7}}
    assert client.post("/webhook", json=training).status_code == 200
    backend = app.extensions["speaker_grouping"]
    for model in backend.models():
        assert model.worker.wait_idle(30)
    backend.close()

    assert SECRET not in attacker.everything()
    attacker_trusted = url is None and hostname and trust
    if not attacker_trusted:
        assert attacker.seen == [], [s.path for s in attacker.seen]
    if hostname and url is None and not trust:
        assert setup.status_code == 403
        assert "not trusted" in setup.json["error"]
        assert "SG_TRUST_SETUP_HOSTNAME" in setup.json["error"]


def test_an_untrusted_setup_hostname_is_refused_and_changes_nothing(tmp_path, attacker):
    config = BackendConfig(model_dir=tmp_path / "models", label_studio_api_key=SECRET)
    client = create_app(config).test_client()
    body = {"project": "7.1700000000", "hostname": attacker.url, "access_token": SETUP_TOKEN}
    answer = client.post("/setup", json=body)
    assert answer.status_code == 403
    assert answer.json["error"].count("\n") == 0
    assert state_files(config.model_dir) == {}
    assert attacker.seen == []


def test_an_allow_listed_setup_hostname_gets_the_setup_token_only(tmp_path, legit):
    config = BackendConfig.from_env(
        {
            "MODEL_DIR": str(tmp_path / "models"),
            "LABEL_STUDIO_API_KEY": SECRET,
            "SG_SETUP_HOSTNAMES": f"http://example.invalid, {legit.url}/",
        },
        refit_delay_s=0.0,
    )
    app = create_app(config)
    client = app.test_client()
    body = {"project": "7.1700000000", "hostname": legit.url, "access_token": SETUP_TOKEN}
    assert client.post("/setup", json=body).status_code == 200
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7}})
    assert app.extensions["speaker_grouping"].model(7).worker.wait_idle(30)
    assert legit.seen, "the allowed origin is used"
    assert all(s.headers.get("Authorization") == f"Token {SETUP_TOKEN}" for s in legit.seen)
    assert SECRET not in legit.everything()


@pytest.mark.parametrize(
    "hostname",
    [
        "ftp://127.0.0.1:21",
        "javascript:alert(1)",
        "http://user:pw@127.0.0.1:8080",
        "http://127.0.0.1:99999",
        "http://exa mple.com",
        "not a url",
    ],
)
def test_a_setup_hostname_that_is_no_http_origin_is_a_400(tmp_path, hostname):
    config = BackendConfig(model_dir=tmp_path / "models", trust_setup_hostname=True)
    answer = (
        create_app(config)
        .test_client()
        .post("/setup", json={"project": 7, "hostname": hostname, "access_token": "t"})
    )
    assert answer.status_code == 400
    assert answer.json["error"].startswith("hostname:")


# --------------------------------------------------------------------------- the one client


def test_redirects_off_label_studio_are_refused_and_never_reach_the_other_host(legit, attacker):
    """Issue 12 row 11: requests followed redirects to any host."""
    legit.redirect_to = attacker.url
    with (
        LabelStudioClient(legit.url, SECRET) as client,
        pytest.raises(LabelStudioError, match="another origin"),
    ):
        client.project(7)
    assert attacker.seen == []


def test_redirects_within_label_studio_are_followed(legit):
    redirector = start_recorder(Recorder(redirect_to=legit.url))
    try:
        # Same host and port is the same origin: point the client at the legit server, and make
        # the redirector's target the legit one's own path.
        legit.files["/data/upload/a.wav"] = b"RIFF-bytes"
        with LabelStudioClient(legit.url, SECRET) as client:
            answer = client.request("GET", "/data/upload/a.wav")
            assert answer.content == b"RIFF-bytes"
        with (
            LabelStudioClient(redirector.url, SECRET) as client,
            pytest.raises(LabelStudioError, match="another origin"),
        ):
            client.request("GET", "/data/upload/a.wav")
    finally:
        stop(redirector)


def test_downloads_are_bounded_and_leave_nothing_behind(tmp_path, legit):
    """Issue 12 row 11: fetch held up to 2 x 256 MB in memory; now it streams to disk."""
    legit.files["/data/upload/big.wav"] = b"x" * 5000
    target = tmp_path / "cache" / "big.wav"
    credentials = Credentials(legit.url, SECRET)
    with pytest.raises(TaskMediaError, match="larger than 4096 bytes"):
        fetch_to("/data/upload/big.wav", credentials, target, max_bytes=4096)
    assert not target.exists()
    assert list(target.parent.iterdir()) == [] if target.parent.exists() else True
    assert fetch_to("/data/upload/big.wav", credentials, target, max_bytes=5000) == 5000
    assert target.read_bytes() == b"x" * 5000
    assert [p.name for p in target.parent.iterdir()] == ["big.wav"]


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://Example.com", ("http", "example.com")),
        ("http://example.com:80/x", ("http", "example.com")),
        ("https://example.com:443", ("https", "example.com")),
        ("http://example.com:8080", ("http", "example.com:8080")),
        ("http://[::1]:8080/", ("http", "[::1]:8080")),
    ],
)
def test_origins_compare_scheme_host_and_port(url, origin):
    assert origin_of(url) == origin


# --------------------------------------------------------------------------- deployment


def test_require_auth_without_credentials_refuses_to_start():
    with pytest.raises(ConfigError, match="SG_REQUIRE_AUTH"):
        BackendConfig.from_env({"SG_REQUIRE_AUTH": "1"})
    config = BackendConfig.from_env(
        {"SG_REQUIRE_AUTH": "1", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "p"}
    )
    assert config.require_auth and config.basic_auth_user == "u"
    with pytest.raises(ConfigError, match="yes/no"):
        BackendConfig.from_env({"SG_REQUIRE_AUTH": "maybe"})


def test_the_wsgi_factory_exits_with_one_line_when_auth_is_required_but_missing(tmp_path):
    """What gunicorn runs in the image: exit status 4 (gunicorn: app failed to load, stop)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS")
    }
    env.update(SG_REQUIRE_AUTH="1", MODEL_DIR=str(tmp_path / "m"), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", "from ml_backend.server import create_app; create_app()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: SG_REQUIRE_AUTH is set but BASIC_AUTH_USER/BASIC_AUTH_PASS are not: "
        "refusing to serve without authentication"
    ]
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("configured", "sent", "status"),
    [
        (("ユーザー", "pässwort"), ("ユーザー", "pässwort"), 200),
        (("ユーザー", "pässwort"), ("ユーザー", "passwort"), 401),
        (("user", "secret"), ("usér", "sécret"), 401),
        (("user", "secret"), ("user", "secret"), 200),
    ],
)
def test_non_ascii_basic_auth_is_compared_not_crashed(tmp_path, configured, sent, status):
    """Issue 12 row 8: non-ASCII credentials gave 500, and a non-ASCII password locked out all."""
    config = BackendConfig(
        model_dir=tmp_path / "m", basic_auth_user=configured[0], basic_auth_pass=configured[1]
    )
    token = base64.b64encode(f"{sent[0]}:{sent[1]}".encode()).decode()
    answer = (
        create_app(config)
        .test_client()
        .post("/setup", json={"project": 7}, headers={"Authorization": f"Basic {token}"})
    )
    assert answer.status_code == status


def test_the_project_cap_refuses_new_projects_and_creates_nothing(tmp_path):
    """Issue 12 row 5: 300 new project ids made 300 folders (and threads)."""
    config = BackendConfig(model_dir=tmp_path / "m", max_projects=2)
    client = create_app(config).test_client()
    assert client.post("/setup", json={"project": "1.100"}).status_code == 200
    assert client.post("/setup", json={"project": "2.100"}).status_code == 200
    before = state_files(config.model_dir)
    answer = client.post("/setup", json={"project": "3.100"})
    assert answer.status_code == 403
    assert "SG_MAX_PROJECTS=2" in answer.json["error"]
    assert client.post("/webhook", json=webhook(1, 1, "Mika") | {"project": 3}).status_code == 403
    assert state_files(config.model_dir) == before
    assert not (config.model_dir / "3").exists()
    assert client.post("/setup", json={"project": "1.100"}).status_code == 200  # known: fine


def test_refused_requests_cannot_fill_the_project_cap(tmp_path):
    config = BackendConfig(model_dir=tmp_path / "m", max_projects=2)
    client = create_app(config).test_client()
    for project in range(10, 40):
        bad = {"action": "ANNOTATION_CREATED", "annotation": "x", "project": {"id": project}}
        assert client.post("/webhook", json=bad).status_code == 400
    assert client.post("/setup", json={"project": "1.100"}).status_code == 200
    assert client.post("/setup", json={"project": "2.100"}).status_code == 200
    assert sorted(p.name for p in config.model_dir.iterdir()) == ["1", "2"]


def test_versions_of_an_unknown_project_creates_nothing(tmp_path):
    config = BackendConfig(model_dir=tmp_path / "m")
    client = create_app(config).test_client()
    for number in range(1, 30):
        assert client.get(f"/versions?project={number}").status_code == 200
    assert state_files(config.model_dir) == {}
    assert not any(config.model_dir.iterdir())


def test_idle_projects_hold_no_thread(tmp_path, monkeypatch):
    """Issue 12 row 5: 300 projects held 305 threads; a worker now ends when idle."""
    from ml_backend import worker as worker_module

    monkeypatch.setattr(worker_module, "WORKER_IDLE_EXIT_S", 0.2)
    config = BackendConfig(model_dir=tmp_path / "m", refit_delay_s=0.0)
    app = create_app(config)
    client = app.test_client()
    for project in range(1, 6):
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": project}})
    workers = [m.worker for m in app.extensions["speaker_grouping"].models()]
    assert len(workers) == 5
    threads = [w._thread for w in workers]
    assert all(thread is not None for thread in threads)
    for thread in threads:
        thread.join(30)  # each ends by itself once idle
    assert not any(thread.is_alive() for thread in threads)
    assert all(w._thread is None for w in workers)
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert workers[0].wait_idle(30) and workers[0].rounds == 2  # a new event starts one again


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x" * (MAX_SPEAKER_NAME + 1), "at most 200"),
        ("A" * 1_000_000, "at most 200"),
        ("Ann\u202eoJ", "U+202E"),
        ("Ann\u2066a", "U+2066"),
        ("Ann\u200fa", "U+200F"),
        ("Ann\x07a", "XML cannot hold"),
        ("Ann\x1ba", "XML cannot hold"),
        ("Ann\x7fa", "U+007F"),
        ("Ann\x9ba", "U+009B"),
    ],
)
def test_speaker_names_are_bounded_and_free_of_control_and_bidi_characters(name, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        clean_speaker_name(name)


@pytest.mark.parametrize("name", ["x" * MAX_SPEAKER_NAME, "鈴木 一郎", "Zoë", "👩‍🚀 Ana"])
def test_ordinary_names_pass(name):
    assert clean_speaker_name(name) == name


def test_a_refused_name_changes_no_state_and_reaches_no_config(tmp_path):
    """Issue 12 row 5: a 1 MB speaker name was stored and pushed into the label config."""
    media = tmp_path / "media"
    _, tasks = write_episode(media, "ep-1", speakers_of(6, ("a", "b")))
    config = BackendConfig(model_dir=tmp_path / "m", media_roots=(media,), refit_delay_s=0.0)
    app = create_app(config)
    client = app.test_client()
    body = {
        "project": "7.1700000000",
        "tasks": [{"id": 100 + i, **t} for i, t in enumerate(tasks)],
        "label_config": load_config(["a", "b"]),
    }
    assert client.post("/predict", json=body).status_code == 200
    assert client.post("/webhook", json=webhook(1, 100, "Mika")).status_code == 200
    assert app.extensions["speaker_grouping"].model(7).worker.wait_idle(30)
    before = state_files(config.model_dir)
    for bad in ("A" * 1_000_000, "Ann\u202eoJ"):
        answer = client.post("/webhook", json=webhook(2, 101, bad, "ep-1:2"))
        assert answer.status_code == 400
        assert "speaker name" in answer.json["error"]
    assert state_files(config.model_dir) == before


# --------------------------------------------------------------------------- the HTTP-only cache


def test_two_predicts_on_one_http_episode_keep_each_others_lines(tmp_path):
    """Issue 12 row 11: each read tasks.json outside the lock, so one overwrote the other's
    lines. Both threads add disjoint lines of one episode to its cache at once."""
    from tests.backend_fixtures import speech_wav

    media = tmp_path / "loose"
    media.mkdir()
    voices = ("flite:slt", "flite:awb", "flite:rms", "flite:kal")
    tasks = []
    for index, voice in enumerate(voices, start=1):
        (media / f"{index}.wav").write_bytes(speech_wav(voice, f"This is line number {index}."))
        tasks.append(
            {
                "data": {
                    "line_id": f"loose:{index}",
                    "episode": "loose",
                    "index": index,
                    "audio": str(media / f"{index}.wav"),
                }
            }
        )
    cache = EpisodeCache(tmp_path / "cache", roots=(media,), credentials=Credentials(None, None))
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def add(part: list[dict]) -> None:
        barrier.wait()
        try:
            cache.from_tasks("loose", part)
        except BaseException as error:  # surfaced below
            failures.append(error)

    threads = [threading.Thread(target=add, args=(tasks[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    import json as json_module

    from ml_backend.features.store import FeatureStore

    stored = json_module.loads((tmp_path / "cache" / "loose" / "tasks.json").read_text())
    assert sorted(t["data"]["line_id"] for t in stored) == [f"loose:{i}" for i in range(1, 5)]
    store = FeatureStore.load(tmp_path / "cache" / "loose" / "features.npz")
    assert sorted(store.line_ids) == [f"loose:{i}" for i in range(1, 5)]


def test_request_bodies_in_flight_are_bounded(tmp_path, monkeypatch):
    """Issue 12 row 5: four 29 MB predicts at once reached 825 MB. Bodies in flight now share a
    budget: one that would pass it waits briefly, then gets 503, and memory stays bounded."""
    import socket

    import requests
    from werkzeug.serving import make_server

    from ml_backend import server as server_module

    monkeypatch.setattr(server_module, "BODY_WAIT_S", 0.3)
    config = BackendConfig(
        model_dir=tmp_path / "m", max_request_bytes=40_000, max_inflight_bytes=50_000
    )
    app = create_app(config)
    budget = app.extensions["speaker_grouping_body_budget"]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/predict"
    try:
        slow = socket.create_connection(("127.0.0.1", server.server_port), timeout=30)
        slow.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40000\r\nConnection: close\r\n\r\n{"
        )
        for _ in range(300):
            if budget.used == 40_000:
                break
            threading.Event().wait(0.01)
        assert budget.used == 40_000  # the first body holds its room while it arrives
        busy = requests.post(url, data=b" " * 30_000, timeout=30)
        assert busy.status_code == 503 and "busy" in busy.json()["error"]
        slow.sendall(b" " * 39_999)
        reply = b""
        while chunk := slow.recv(65536):
            reply += chunk
        slow.close()
        assert reply.startswith(b"HTTP/1.1 400")
        assert budget.used == 0
        after = requests.post(url, data=b" " * 30_000, timeout=30)
        assert after.status_code == 400  # room again: parsed (and refused as not JSON)
    finally:
        server.shutdown()
