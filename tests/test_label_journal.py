"""The label journal: an acknowledged label is one fsynced line, replayed on read and folded
into state.json on start; a line cut by a crash is skipped; replay never brings back an older
entry than state.json holds."""

from __future__ import annotations

import json

from ml_backend.config import BackendConfig
from ml_backend.label_journal import JOURNAL_FILE
from ml_backend.project_state import ProjectState, rebuild_from_annotations
from ml_backend.server import create_app


def annotation(annotation_id: int, task: int, speaker: str, updated: str) -> dict:
    return {
        "id": annotation_id,
        "task": task,
        "result": [{"from_name": "speaker", "value": {"choices": [speaker]}}],
        "updated_at": updated,
    }


def webhook(annotation_id: int, task: int, speaker: str, line: int) -> dict:
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": annotation(annotation_id, task, speaker, f"2025-01-01T00:00:{line:02d}Z"),
        "task": {"id": task, "data": {"line_id": f"ep-1:{line}", "episode": "ep-1"}},
        "project": {"id": 7},
    }


def test_an_acknowledged_label_is_a_journal_line_folded_into_state_on_start(tmp_path):
    config = BackendConfig(model_dir=tmp_path / "m", refit_delay_s=3600)
    app = create_app(config)
    client = app.test_client()
    for k in range(1, 4):
        assert client.post("/webhook", json=webhook(k, 100 + k, "abc"[k - 1], k)).status_code == 200
    app.extensions["speaker_grouping"].close()
    folder = config.model_dir / "7"
    lines = (folder / JOURNAL_FILE).read_text().splitlines()
    assert [sorted(json.loads(line)["put"]) for line in lines] == [["1"], ["2"], ["3"]]
    assert not (folder / "state.json").exists()  # three labels cost three appends, no rewrite
    assert ProjectState.open(config.model_dir, 7).labels() == {
        "ep-1:1": "a",
        "ep-1:2": "b",
        "ep-1:3": "c",
    }

    second = create_app(config)  # start folds the journal into state.json
    assert (folder / JOURNAL_FILE).read_text() == ""
    saved = json.loads((folder / "state.json").read_text())
    assert sorted(saved["annotations"]) == ["1", "2", "3"]
    assert saved["tasks"] == {"101": "ep-1:1", "102": "ep-1:2", "103": "ep-1:3"}
    second.extensions["speaker_grouping"].close()


def test_a_line_cut_by_a_crash_is_skipped_and_the_rest_replayed(tmp_path):
    state = ProjectState.open(tmp_path, 7)
    state.record_annotation(annotation(1, 101, "a", "t1"), task_id=101, line_id="ep-1:1")
    state.forget_annotations([1])
    state.record_annotation(annotation(2, 102, "b", "t2"), task_id=102, line_id="ep-1:2")
    journal = tmp_path / "7" / JOURNAL_FILE
    with open(journal, "ab") as handle:
        handle.write(b'{"put": {"3": {"task": 103, "line_id": "ep-1')  # killed mid-write
    again = ProjectState.open(tmp_path, 7)
    assert again.labels() == {"ep-1:2": "b"}
    assert again.annotation_ids() == {2}


def test_replay_never_brings_back_an_older_entry(tmp_path):
    """A reconcile that finds a newer version of an annotation goes through the journal too,
    so replaying the journal onto a later state.json cannot restore the webhook's older one."""
    state = ProjectState.open(tmp_path, 7)
    state.record_annotation(
        annotation(1, 101, "a", "2025-01-01T00:00:01Z"), task_id=101, line_id="ep-1:1"
    )
    listed = [
        {
            "id": 101,
            "data": {"line_id": "ep-1:1"},
            "annotations": [annotation(1, 101, "b", "2025-01-02T00:00:00Z")],
        }
    ]
    assert rebuild_from_annotations(state, listed) == (1, 0)
    state.commit()  # any later state.json write
    assert ProjectState.open(tmp_path, 7).labels() == {"ep-1:1": "b"}
