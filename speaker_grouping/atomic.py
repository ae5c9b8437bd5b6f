"""Atomic file writes.

A crash or a full disk mid-write must leave the previous version of a file readable, because
tasks, reports and model state are what annotators' work hangs on. Every write therefore goes to
a temporary file in the same folder (same filesystem, so the rename is atomic) and is moved into
place with ``os.replace`` only once it is complete and flushed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """JSON is written with ``ensure_ascii=False`` so names such as 鈴木 stay readable."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")
