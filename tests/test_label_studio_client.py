"""The one Label Studio client (`foundation.label_studio`): errors, retries, paging, bounds and
where the key goes. Each test runs the client against a real HTTP server on 127.0.0.1
(`tests.http_recorder`) that answers as scripted and records what it was sent, or against the
session's real Label Studio."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import pytest
import requests
from label_studio_sdk import LabelStudio

from foundation.label_studio import (
    LabelStudioClient,
    LabelStudioError,
    UntrustedUrlError,
)
from label_config import load_config
from speaker_grouping.local_label_studio import free_port
from tests.http_recorder import Recorder, start_recorder, stop

SECRET = "5ec2e7" * 6 + "abcd"

Answer = tuple[int, dict[str, str], bytes]


def _json(status: int, body: object) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


@dataclass
class Scripted(Recorder):
    """A server whose answer to each route is a function of (method, query, how often seen)."""

    routes: dict[str, Callable[[str, dict[str, list[str]], int], Answer]] = field(
        default_factory=dict
    )
    counts: dict[str, int] = field(default_factory=dict)

    def answer(self, method: str, path: str) -> Answer:
        route, _, query = path.partition("?")
        with self._lock:
            count = self.counts.get(route, 0)
            self.counts[route] = count + 1
        handler = self.routes.get(route)
        if handler is None:
            return _json(404, {"detail": "Not found."})
        return handler(method, parse_qs(query), count)


@pytest.fixture
def server():
    recorder = start_recorder(Scripted())
    yield recorder
    stop(recorder)


# --------------------------------------------------------------------------- errors


def test_an_unreachable_label_studio_is_one_line_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with LabelStudioClient(url, SECRET, retries=0) as client, pytest.raises(LabelStudioError) as e:
        client.project(1)
    assert f"not reachable at {url}" in str(e.value) and "\n" not in str(e.value)
    assert e.value.status is None


def test_a_rejected_key_says_where_to_get_one(server):
    server.routes["/api/projects/1"] = lambda *_: _json(401, {"detail": "Invalid token."})
    with LabelStudioClient(server.url, SECRET) as client, pytest.raises(LabelStudioError) as e:
        client.project(1)
    assert "rejected the API key (HTTP 401)" in str(e.value)
    assert "Account & Settings" in str(e.value) and e.value.status == 401


def test_a_refused_request_names_its_subject_status_and_reason_in_one_line(server):
    reason = {"validation_errors": {"label_config": ["toName='nowhere'\nnot found"]}}
    server.routes["/api/projects/"] = lambda *_: _json(400, reason)
    with LabelStudioClient(server.url, SECRET) as client, pytest.raises(LabelStudioError) as e:
        client.create_project("Episode 1", "<View/>")
    message = str(e.value)
    assert "refused a request for project 'Episode 1' (HTTP 400)" in message
    assert "nowhere" in message and "\n" not in message and e.value.status == 400


def test_an_answer_that_is_not_json_is_an_error_not_a_traceback(server):
    server.routes["/api/projects/3"] = lambda *_: (200, {"Content-Type": "text/html"}, b"<html>")
    with LabelStudioClient(server.url, SECRET) as client, pytest.raises(LabelStudioError) as e:
        client.project(3)
    assert "not JSON" in str(e.value)


# --------------------------------------------------------------------------- retries


def test_reads_are_retried_through_a_brief_outage(server):
    def flaky(method: str, query: dict, count: int) -> Answer:
        return _json(503, {}) if count < 2 else _json(200, {"id": 5, "title": "t"})

    server.routes["/api/projects/5"] = flaky
    with LabelStudioClient(server.url, SECRET, retries=2) as client:
        assert client.project(5)["id"] == 5
    assert server.counts["/api/projects/5"] == 3


def test_writes_are_never_retried(server):
    server.routes["/api/projects/"] = lambda *_: _json(503, {"detail": "busy"})
    with (
        LabelStudioClient(server.url, SECRET, retries=2) as client,
        pytest.raises(LabelStudioError),
    ):
        client.create_project("once", "<View/>")
    assert server.counts["/api/projects/"] == 1


def test_retries_give_up_after_their_count(server):
    server.routes["/api/projects/6"] = lambda *_: _json(502, {})
    with (
        LabelStudioClient(server.url, SECRET, retries=1) as client,
        pytest.raises(LabelStudioError) as e,
    ):
        client.project(6)
    assert "HTTP 502" in str(e.value)
    assert server.counts["/api/projects/6"] == 2


# --------------------------------------------------------------------------- paging


def test_results_pages_are_followed_to_the_end_and_not_past_it(server):
    projects = [{"id": i, "title": f"p{i}"} for i in range(1, 8)]

    def listing(method: str, query: dict, count: int) -> Answer:
        page, size = int(query["page"][0]), int(query["page_size"][0])
        chunk = projects[(page - 1) * size : page * size]
        more = page * size < len(projects)
        return _json(200, {"count": len(projects), "next": "x" if more else None, "results": chunk})

    server.routes["/api/projects/"] = listing
    with LabelStudioClient(server.url, SECRET) as client:
        got = list(client.pages("/api/projects/", page_size=3))
    assert [p["id"] for p in got] == list(range(1, 8))
    assert server.counts["/api/projects/"] == 3


def test_task_pages_stop_at_the_total(server):
    tasks = [{"id": i, "data": {"line_id": f"ep:{i}"}} for i in range(1, 6)]

    def listing(method: str, query: dict, count: int) -> Answer:
        page, size = int(query["page"][0]), int(query["page_size"][0])
        assert query["project"] == ["4"] and query["fields"] == ["task_only"]
        return _json(200, {"tasks": tasks[(page - 1) * size : page * size], "total": len(tasks)})

    server.routes["/api/tasks"] = listing
    with LabelStudioClient(server.url, SECRET) as client:
        got = list(client.tasks(4, page_size=2))
    assert [t["id"] for t in got] == [1, 2, 3, 4, 5]
    assert server.counts["/api/tasks"] == 3


def test_exact_titles_are_picked_out_of_the_contains_filter_oldest_first(server):
    found = [{"id": 9, "title": "Ep"}, {"id": 2, "title": "ep"}, {"id": 4, "title": "Ep"}]
    server.routes["/api/projects/"] = lambda *_: _json(200, {"next": None, "results": found})
    with LabelStudioClient(server.url, SECRET) as client:
        assert [p["id"] for p in client.projects_titled("Ep")] == [4, 9]


# --------------------------------------------------------------------------- bounds


def test_answers_larger_than_the_bound_are_refused(server):
    server.routes["/api/projects/8"] = lambda *_: _json(200, {"blob": "x" * 5000})
    with LabelStudioClient(server.url, SECRET) as client:
        with pytest.raises(LabelStudioError, match="larger than 1024 bytes"):
            client.call("GET", "/api/projects/8", max_bytes=1024)
        assert client.call("GET", "/api/projects/8", max_bytes=10_000)["blob"] == "x" * 5000


# --------------------------------------------------------------------------- where the key goes


def test_the_key_is_never_sent_to_another_origin(server, tmp_path):
    attacker = start_recorder(Recorder())
    with LabelStudioClient(server.url, SECRET) as client:
        with pytest.raises(UntrustedUrlError, match="not on Label Studio's origin"):
            client.call("GET", f"{attacker.url}/api/projects/1")
        with pytest.raises(UntrustedUrlError):
            client.download(f"{attacker.url}/x.wav", tmp_path / "x.wav", max_bytes=10)
    stop(attacker)
    assert attacker.seen == []
    assert not (tmp_path / "x.wav").exists()


def _jwt(claims: dict) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_a_personal_access_token_is_exchanged_and_only_the_access_token_is_used(server):
    refresh = _jwt({"token_type": "refresh", "exp": int(time.time()) + 3600})
    access = _jwt({"token_type": "access", "exp": int(time.time()) + 3600})

    def exchange(method: str, query: dict, count: int) -> Answer:
        return _json(200, {"access": access})

    server.routes["/api/token/refresh"] = exchange
    server.routes["/api/projects/1"] = lambda *_: _json(200, {"id": 1})
    with LabelStudioClient(server.url, refresh) as client:
        client.project(1)
        client.project(1)
    assert server.counts["/api/token/refresh"] == 1  # cached until it nears its expiry
    sent = {seen.path.split("?")[0]: seen for seen in server.seen}
    assert json.loads(sent["/api/token/refresh"].body) == {"refresh": refresh}
    assert "Authorization" not in sent["/api/token/refresh"].headers
    assert sent["/api/projects/1"].headers["Authorization"] == f"Bearer {access}"
    assert refresh not in sent["/api/projects/1"].text()


def test_an_access_token_near_its_expiry_is_renewed(server):
    refresh = _jwt({"token_type": "refresh", "exp": int(time.time()) + 3600})
    short = _jwt({"token_type": "access", "exp": int(time.time()) + 5})
    server.routes["/api/token/refresh"] = lambda *_: _json(200, {"access": short})
    server.routes["/api/projects/1"] = lambda *_: _json(200, {"id": 1})
    with LabelStudioClient(server.url, refresh) as client:
        client.project(1)
        client.project(1)
    assert server.counts["/api/token/refresh"] == 2


def test_a_refused_personal_access_token_is_one_line(server):
    refresh = _jwt({"token_type": "refresh", "exp": int(time.time()) + 3600})
    server.routes["/api/token/refresh"] = lambda *_: _json(401, {"detail": "Token is invalid"})
    with LabelStudioClient(server.url, refresh) as client, pytest.raises(LabelStudioError) as e:
        client.project(1)
    assert "rejected the API key (HTTP 401)" in str(e.value)
    assert "/api/projects/1" not in [seen.path for seen in server.seen]


# --------------------------------------------------------------------------- real Label Studio


@pytest.mark.label_studio
def test_the_client_reads_back_what_the_official_client_wrote(label_studio):
    sdk = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    title = f"client-{free_port()}"
    made = sdk.projects.create(title=title, label_config=load_config())
    media = {"audio": "/data/upload/x.wav", "image": "/data/upload/x.jpg", "text": "line"}
    rows = [{"data": {"line_id": f"ep:{i}", **media}} for i in range(5)]
    sdk.projects.import_tasks(id=made.id, request=rows)
    with LabelStudioClient(label_studio.url, label_studio.token) as client:
        assert [p["id"] for p in client.projects_titled(title)] == [made.id]
        tasks = list(client.tasks(made.id, include="id,data", page_size=2))
        assert sorted(t["data"]["line_id"] for t in tasks) == [f"ep:{i}" for i in range(5)]
        with pytest.raises(LabelStudioError) as missing:
            client.project(10**8)
        assert missing.value.status == 404


@pytest.mark.label_studio
def test_a_personal_access_token_of_a_real_label_studio_works(label_studio):
    legacy = {"Authorization": f"Token {label_studio.token}"}
    created = requests.post(f"{label_studio.url}/api/token/", headers=legacy, timeout=30)
    assert created.status_code in (200, 201), created.text
    personal = created.json()["token"]
    with LabelStudioClient(label_studio.url, personal) as client:
        title = f"pat-{free_port()}"
        made = client.create_project(title, load_config())
        assert client.project(made["id"])["title"] == title
