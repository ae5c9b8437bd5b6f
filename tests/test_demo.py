"""`speaker-grouping demo --check`: the README's main job, end to end, as a user runs it.

It starts its own Label Studio and our backend as child processes on 127.0.0.1, imports the
bundled sample episode, and must find a proposed speaker on every task; a second run over the
same data folder must reuse everything (no new tasks) and pass again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ls_fixtures import seed_from_template

pytestmark = [pytest.mark.label_studio, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def run_demo(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "speaker_grouping.cli",
            "demo",
            "--check",
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )


def test_demo_check_proposes_a_speaker_for_every_task_and_reruns_cleanly(label_studio, tmp_path):
    data_dir = tmp_path / "demo-data"
    seed_from_template(data_dir / "label-studio")

    first = run_demo(data_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "check passed: every line is a task, and every task has a proposed speaker" in (
        first.stdout
    )
    assert "(50 new)" in first.stdout, first.stdout  # the sample episode has 50 lines
    assert "http://127.0.0.1:" in first.stdout
    # Issue 16: the demo says where its media are (export and report need that folder).
    assert f"data:          {data_dir.resolve()}" in first.stdout, first.stdout
    assert f"(media: {data_dir.resolve() / 'media'}/" in first.stdout, first.stdout

    second = run_demo(data_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "(0 new)" in second.stdout, second.stdout
    assert "check passed" in second.stdout
    # Issue 16: both servers come back on the ports of the first run (data_dir/ports.json),
    # so Label Studio's ML backend URL and webhook still reach the backend.
    ports = json.loads((data_dir / "ports.json").read_text())
    for run in (first, second):
        assert f"Label Studio:  http://127.0.0.1:{ports['label_studio']}" in run.stdout
        assert f"ML backend:    http://127.0.0.1:{ports['backend']}" in run.stdout
    # Both servers were stopped: nothing keeps listening after the command returns.
    assert "Press Ctrl-C" not in second.stdout
