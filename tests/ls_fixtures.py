"""Pytest plugin: one real Label Studio for the whole test session.

Registered from conftest with ``pytest_plugins = ["tests.ls_fixtures"]``. Every test marked
``label_studio`` shares one server and keeps its projects apart by unique titles.

A fresh data folder costs tens of seconds of database migrations (75 s on a busy 2-core box), a
migrated one a few seconds. So right after a fresh start, while the server is still empty, the
fixture snapshots its data folder (SQLite's online backup, safe while the server runs) into
``.cache/label-studio-template/``, and later sessions start from a copy of it. The first session
pays nothing extra; a template made by another Label Studio version is simply migrated again.

When Label Studio is not installed the tests that need it are skipped with the install hint,
unless ``SPEAKER_GROUPING_REQUIRE_LABEL_STUDIO=1`` (set it in CI) turns that into a failure.

Teams run Label Studio on PostgreSQL, so ``label_studio_postgres`` starts a second Label Studio
on a real PostgreSQL that the session starts itself (`tests.local_postgres`: Debian's binaries,
a fresh cluster in a temporary folder, 127.0.0.1 only; as root, owned by an unprivileged user).
Its database is migrated afresh every session (a minute or two), so only chosen tests use it,
through ``any_label_studio``, which runs a test once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from speaker_grouping.local_label_studio import (
    CREDENTIALS_FILE,
    LOG_FILE,
    LocalLabelStudio,
    find_label_studio,
)
from tests.local_postgres import LocalPostgres

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0
TEMPLATE_ROOT = Path(__file__).resolve().parents[1] / ".cache" / "label-studio-template"
_DATABASE = "label_studio.sqlite3"
_READY = "template-ready"


@dataclass(frozen=True)
class LabelStudioSession:
    """The running server, its media folder (its document root), and how long it took to start."""

    server: LocalLabelStudio
    document_root: Path
    startup_s: float
    from_template: bool
    database: str = "sqlite"
    progress: tuple[str, ...] = ()
    """What ``on_progress`` heard while the server started (nothing for a quick start)."""

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.server.token


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioSession]:
    try:
        executable = find_label_studio()
    except FileNotFoundError as error:
        if os.environ.get("SPEAKER_GROUPING_REQUIRE_LABEL_STUDIO") == "1":
            raise
        pytest.skip(str(error))
    root = tmp_path_factory.mktemp("label-studio")
    document_root = root / "media"
    document_root.mkdir()
    data_dir = root / "data"
    template = _template_for(executable)
    from_template = (template / _READY).exists()
    if from_template:
        shutil.copytree(template, data_dir, ignore=shutil.ignore_patterns(_READY))

    server = LocalLabelStudio(data_dir=data_dir, document_root=document_root)
    began = time.monotonic()
    server.start(timeout=START_TIMEOUT_S)
    startup_s = time.monotonic() - began
    try:
        if not from_template:
            _save_template(data_dir, template)
        yield LabelStudioSession(server, document_root, startup_s, from_template)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def label_studio_postgres(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LabelStudioSession]:
    """A Label Studio whose database is a PostgreSQL server this session starts and removes."""
    required = os.environ.get("SPEAKER_GROUPING_REQUIRE_LABEL_STUDIO") == "1"
    try:
        find_label_studio()
        postgres = LocalPostgres()
    except FileNotFoundError as error:
        if required:
            raise
        pytest.skip(str(error))
    postgres.start()
    try:
        root = tmp_path_factory.mktemp("label-studio-postgres")
        document_root = root / "media"
        document_root.mkdir()
        server = LocalLabelStudio(
            data_dir=root / "data",
            document_root=document_root,
            extra_env=postgres.label_studio_env(),
        )
        progress: list[str] = []
        began = time.monotonic()
        server.start(timeout=2 * START_TIMEOUT_S, on_progress=progress.append)
        try:
            yield LabelStudioSession(
                server,
                document_root,
                time.monotonic() - began,
                from_template=False,
                database="postgresql",
                progress=tuple(progress),
            )
        finally:
            server.stop()
    finally:
        postgres.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def any_label_studio(request: pytest.FixtureRequest) -> LabelStudioSession:
    """The SQLite Label Studio, then the PostgreSQL one: a module's tests run on both."""
    name = "label_studio" if request.param == "sqlite" else "label_studio_postgres"
    return request.getfixturevalue(name)


def seed_from_template(data_dir: Path) -> bool:
    """Start another Label Studio data folder from the migrated template, when one exists.

    For tests that run their own Label Studio (the demo): request the ``label_studio`` fixture
    first, which makes the template on a fresh machine.
    """
    template = _template_for(find_label_studio())
    if not (template / _READY).exists():
        return False
    shutil.copytree(template, data_dir, ignore=shutil.ignore_patterns(_READY))
    return True


def _template_for(executable: Path) -> Path:
    """One template per Label Studio install: a reinstall changes the executable's mtime."""
    stat = executable.resolve().stat()
    key = hashlib.sha256(f"{executable.resolve()}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return TEMPLATE_ROOT / key


def _save_template(data_dir: Path, template: Path) -> None:
    """Best effort: a failure only means the next session migrates from scratch again."""
    staging = template.parent / f".staging-{uuid.uuid4().hex}"
    try:
        staging.mkdir(parents=True)
        for entry in data_dir.iterdir():
            if entry.name in (_DATABASE, LOG_FILE):
                continue
            if entry.is_dir():
                shutil.copytree(entry, staging / entry.name)
            else:
                shutil.copy2(entry, staging / entry.name)
        source = sqlite3.connect(data_dir / _DATABASE)
        target = sqlite3.connect(staging / _DATABASE)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        if not (staging / CREDENTIALS_FILE).exists():
            raise FileNotFoundError(staging / CREDENTIALS_FILE)
        (staging / _READY).touch()
        staging.rename(template)  # atomic; fails if another session got there first
    except (OSError, sqlite3.Error) as error:
        logger.info("Label Studio template not saved (%s)", error)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
