"""Atomic writes: the previous file survives a failed write, and permissions stay usable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from foundation import atomic
from foundation.atomic import atomic_write_bytes, atomic_write_json


def test_failed_write_leaves_previous_file_readable(tmp_path: Path, monkeypatch):
    target = tmp_path / "tasks.json"
    atomic_write_json(target, [{"data": {"line_id": "ep:1"}}])

    def crash(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, [{"data": {"line_id": "ep:2"}}])

    assert json.loads(target.read_text()) == [{"data": {"line_id": "ep:1"}}]
    assert [p.name for p in tmp_path.iterdir()] == ["tasks.json"]


def test_new_files_are_readable_by_others_and_existing_modes_are_kept(tmp_path: Path):
    fresh = tmp_path / "clip.wav"
    atomic_write_bytes(fresh, b"RIFF")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask

    fresh.chmod(0o640)
    atomic_write_bytes(fresh, b"RIFF2")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
    assert fresh.read_bytes() == b"RIFF2"
