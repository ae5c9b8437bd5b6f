"""Issue 16 item 4: where an annotation moves many lines, the operation log and /metrics say so.

A real backend (Flask test client, real refits) on an episode of three clearly separated voices
(`tests.backend_fixtures.write_episode`)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ml_backend.config import BackendConfig
from ml_backend.grouping.stability import LARGE_MOVE
from ml_backend.server import create_app
from tests.test_backend_server import (
    annotation_event,
    choices,
    make_episode,
    predict_body,
    truth_of,
)


@pytest.fixture
def media(tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def app(tmp_path, media):
    config = BackendConfig(model_dir=tmp_path / "models", media_roots=(media,), refit_delay_s=0.01)
    app = create_app(config)
    yield app
    app.extensions["speaker_grouping"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def test_a_naming_that_moves_many_lines_is_logged_counted_and_warned(app, client, media, caplog):
    _, tasks = make_episode(media, lines=36)  # 12 lines per voice
    truth = truth_of(tasks)
    client.post("/predict", json=predict_body(tasks))
    with caplog.at_level(logging.WARNING, logger="ml_backend.model"):
        client.post("/webhook", json=annotation_event(1, 100, tasks[0], "Mika"))
        model = app.extensions["speaker_grouping"].model(7)
        assert model.worker.wait_idle(10) and model.worker.failures == 0
        after = choices(client.post("/predict", json=predict_body(tasks)).json["results"])
    renamed = sum(shown == "Mika" for shown in after[1:])
    assert renamed == truth.count(truth[0]) - 1 > LARGE_MOVE

    refits = model.oplog.refits()
    assert len(refits) == 1
    entry = refits[0]
    assert entry["labels"] == {tasks[0]["data"]["line_id"]: "Mika"}
    assert entry["lines_moved"] == renamed and entry["from_named"] == 0
    assert entry["large"] is True and entry["version"] == model.model_version
    line_id = tasks[0]["data"]["line_id"]
    assert any("moved" in r.getMessage() and line_id in r.getMessage() for r in caplog.records)

    text = client.get("/metrics").get_data(as_text=True)
    assert f"sg_lines_moved_sum {float(renamed)}" in text
    assert "sg_large_moves_total 1.0" in text


def test_accepting_a_right_proposal_moves_nothing(app, client, media):
    _, tasks = make_episode(media, lines=12)
    client.post("/predict", json=predict_body(tasks))
    client.post("/webhook", json=annotation_event(1, 100, tasks[0], "Mika"))
    model = app.extensions["speaker_grouping"].model(7)
    assert model.worker.wait_idle(10)
    shown = choices(client.post("/predict", json=predict_body(tasks)).json["results"])
    # line 4 has line 1's voice and now shows "Mika": accepting it changes no other line
    assert shown[3] == "Mika"
    client.post("/webhook", json=annotation_event(2, 103, tasks[3], "Mika"))
    assert model.worker.wait_idle(10)
    client.post("/predict", json=predict_body(tasks))
    last = model.oplog.refits()[-1]
    assert last["labels"] == {tasks[3]["data"]["line_id"]: "Mika"}
    assert last["lines_moved"] == 0 and last["large"] is False
