"""Issue 12, "Must show": the backend killed with SIGKILL loses no acknowledged label.

A real ``speaker-grouping serve`` subprocess takes 200 annotation webhooks from 8 threads while 8
more threads ask ``/predict``, and is killed with ``kill -9`` at three different points: early in
the burst, late in it, and right after the burst while the refit runs. After every kill it is
started again on the same MODEL_DIR. At the end every acknowledged annotation (answered 200) is
in the project's state, no temporary file is left, and the refit that start schedules has run
(the model is fitted on exactly the stored labels) without any new event.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from ml_backend.project_state import ProjectState
from tests.backend_fixtures import speakers_of, write_episode
from tests.ls_payloads import annotation, annotation_event

REPO = Path(__file__).resolve().parents[1]
SPEAKERS = ("a", "b", "c")
LINES = 30
EVENTS = 200
START_TIMEOUT_S = 120.0

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    """One ``speaker-grouping serve`` process on a free port."""

    def __init__(self, model_dir: Path, media: Path, log: Path, refit_delay: float = 0.05) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LABEL_STUDIO", "BASIC_AUTH", "SG_"))
        }
        env.update(PYTHONPATH=str(REPO), SG_REFIT_DELAY_S=str(refit_delay), HF_HUB_OFFLINE="1")
        self._log = open(log, "ab")  # noqa: SIM115 (closed in kill/stop)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "speaker_grouping.cli",
                "serve",
                "--port",
                str(self.port),
                "--model-dir",
                str(model_dir),
                "--document-root",
                str(media),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text(errors="replace")[-2000:]
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise AssertionError(f"the backend did not start: {log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def speaker_of(number: int) -> str:
    """Each round over the lines shifts the cast, so later events change the labels."""
    return SPEAKERS[(number % LINES + number // LINES) % 3]


def event(number: int, tasks: list[dict]) -> dict:
    position = number % len(tasks)
    body = annotation(
        1000 + number,
        100 + position,
        speaker_of(number),
        completed_by=1,
        updated_at=f"2025-01-01T00:{number // 60:02d}:{number % 60:02d}Z",
    )
    return annotation_event(body, tasks[position])


def predict_body(tasks: list[dict]) -> dict:
    return {"project": "7.1700000000", "tasks": [{"id": 100 + i, **t} for i, t in enumerate(tasks)]}


def burst(
    served: Served, numbers: list[int], tasks: list[dict], kill_after: int | None
) -> tuple[set[int], set[int]]:
    """Send ``numbers``' webhooks from 8 threads while 8 threads predict.

    With ``kill_after``, the process is killed with SIGKILL as soon as that many webhooks were
    acknowledged; otherwise right after the last one is. Returns (acknowledged, sent).
    """
    acknowledged: set[int] = set()
    sent: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    queue = list(numbers)
    target = len(numbers) if kill_after is None else kill_after

    def hooks() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                with lock:
                    if not queue:
                        return
                    number = queue.pop(0)
                    sent.add(number)
                try:
                    answer = session.post(
                        f"{served.url}/webhook", json=event(number, tasks), timeout=30
                    )
                except requests.RequestException:
                    return  # killed: this one was never acknowledged
                if answer.status_code == 200:
                    with lock:
                        acknowledged.add(number)
                        if len(acknowledged) >= target:
                            stop.set()
                else:
                    raise AssertionError(f"webhook {number}: {answer.status_code} {answer.text}")

    def predicts() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answer = session.post(
                        f"{served.url}/predict", json=predict_body(tasks[:5]), timeout=30
                    )
                except requests.RequestException:
                    return
                assert answer.status_code == 200, answer.text

    threads = [threading.Thread(target=hooks) for _ in range(8)]
    threads += [threading.Thread(target=predicts) for _ in range(8)]
    for thread in threads:
        thread.start()
    stop.wait(300)
    served.kill()
    for thread in threads:
        thread.join(60)
    return acknowledged, sent


def wait_until_fitted(model_dir: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = ProjectState.open(model_dir, 7)
        if state.model_version and state.fitted_labels == state.labels():
            return
        time.sleep(0.2)
    raise AssertionError("the model never caught up with the stored labels")


def test_kill_9_at_three_points_loses_no_acknowledged_label(tmp_path):
    media = tmp_path / "media"
    _, tasks = write_episode(media, "ep-1", speakers_of(LINES, SPEAKERS))
    model_dir = tmp_path / "models"
    log = tmp_path / "serve.log"
    acknowledged: set[int] = set()
    cursor = 0
    # Early in the burst, late in it, and after it before its refit (held back by a long delay).
    for kill_after, size, delay in ((25, 70, 0.05), (60, 70, 0.05), (None, 60, 3600.0)):
        served = Served(model_dir, media, log, refit_delay=delay)
        first = requests.post(f"{served.url}/predict", json=predict_body(tasks), timeout=60)
        assert first.status_code == 200
        numbers = list(range(cursor, min(cursor + size, EVENTS)))
        done, sent = burst(served, numbers, tasks, kill_after)
        acknowledged |= done
        cursor = max(sent) + 1 if sent else cursor

    behind = ProjectState.open(model_dir, 7)
    assert behind.fitted_labels != behind.labels()  # the last kill came before the refit ended
    left_by_kills = set(model_dir.rglob("*.tmp"))
    served = Served(model_dir, media, log)
    try:
        # Start removes what the kills left; files the running server is writing may come and go.
        assert not left_by_kills & set(model_dir.rglob("*.tmp")), left_by_kills
        # No event yet: the refit that start scheduled must bring the model up to the labels.
        wait_until_fitted(model_dir)
        rest = list(range(cursor, EVENTS))
        with requests.Session() as session:
            for number in rest:
                answer = session.post(f"{served.url}/webhook", json=event(number, tasks))
                assert answer.status_code == 200
                acknowledged.add(number)
        wait_until_fitted(model_dir)
        state = ProjectState.open(model_dir, 7)
        stored = state.annotation_ids()
        missing = sorted(1000 + n for n in acknowledged if 1000 + n not in stored)
        assert missing == []
        assert len(acknowledged) >= 150  # most of the 200 were acknowledged before a kill
        assert state.fitted_labels == state.labels() and state.model_version
        for number in acknowledged:
            entry = state.annotation(1000 + number)
            assert entry is not None and entry["speaker"] == speaker_of(number)
            assert entry["line_id"] == f"ep-1:{number % LINES + 1}"
        operations = json.loads((model_dir / "7" / "operations.json").read_text())
        assert {int(k) for k in operations["annotations"]} >= {1000 + n for n in acknowledged}
        again = requests.post(f"{served.url}/predict", json=predict_body(tasks), timeout=60)
        assert again.status_code == 200 and all(again.json()["results"])
        # A write in progress has its temporary file for a moment; a leaked one stays.
        deadline = time.monotonic() + 30
        while list(model_dir.rglob("*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not list(model_dir.rglob("*.tmp")), list(model_dir.rglob("*.tmp"))
    finally:
        served.stop()
