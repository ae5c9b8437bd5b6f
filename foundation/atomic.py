"""Atomic file writes.

A crash or a full disk mid-write must leave the previous version of a file readable, because
tasks, reports and model state are what annotators' work hangs on. Every write therefore goes to
a temporary file in the same folder (same filesystem, so the rename is atomic) and is moved into
place with ``os.replace`` only once it is complete and flushed. The folder is fsynced after the
rename too, or a power cut could forget the rename while keeping the old file.

A process killed mid-write (kill -9) leaves its temporary file behind: the names end in
`TEMPORARY_SUFFIX` and start with a dot, so `remove_stale_temporaries` can clear them on start.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMPORARY_SUFFIX = ".tmp"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never half."""
    with atomic_writer(path) as out:
        out.write(data)


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` when the block ends without an error.

    For data written in pieces (a streamed download), so it never has to sit in memory whole.
    On an error the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX
    )
    try:
        # mkstemp makes the file private (0600); media and tasks must stay readable by the
        # Label Studio and backend processes, which may run as other users.
        os.fchmod(fd, _mode_for(target))
        with os.fdopen(fd, "wb") as tmp:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def fsync_directory(folder: str | Path) -> None:
    """Make a rename or a new file in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left under ``folder``.

    Only call this when no writer of this process is running in ``folder`` (on start), since a
    live writer's temporary file looks the same. Returns the files removed.
    """
    removed = []
    for path in Path(folder).rglob(f".*{TEMPORARY_SUFFIX}"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """JSON is written with ``ensure_ascii=False`` so names such as 鈴木 stay readable."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


def _mode_for(target: Path) -> int:
    """Keep an existing file's permissions; give a new one what ``open()`` would."""
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_current_umask()


def _current_umask() -> int:
    # Reading /proc avoids os.umask's set-and-restore, which races with other threads.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
