"""A private PostgreSQL server for the end-to-end tests: Debian's ``postgresql`` binaries, a
fresh cluster in a temporary folder, 127.0.0.1 only, on a free port, password authentication.

PostgreSQL refuses to run as root. When the tests run as root (a container, CI), the cluster
belongs to an unprivileged user (``nobody`` by default, ``SG_POSTGRES_USER`` to choose another)
and ``initdb``/``pg_ctl`` run through ``runuser -u``; otherwise they run as the current user.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from speaker_grouping.local_label_studio import free_port

NOT_INSTALLED = (
    "PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on PATH): "
    "run `make setup-system`"
)
DATABASE = "postgres"


def find_postgres_bin() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: Debian's newest, else the ones on PATH."""

    def version(folder: str) -> tuple[int, ...]:
        name = Path(folder).parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        folders.append(str(Path(on_path).parent))
    for folder in folders:
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(folder)
    raise FileNotFoundError(NOT_INSTALLED)


class LocalPostgres:
    """``start()`` makes and starts the cluster, ``stop()`` stops it and removes its folder."""

    def __init__(self, *, user: str = "labelstudio") -> None:
        self.bin = find_postgres_bin()
        self.user = user
        self.password = secrets.token_hex(16)
        self.host = "127.0.0.1"
        self.port = 0
        self.root: Path | None = None
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._owner = pwd.getpwnam(os.environ.get("SG_POSTGRES_USER", "nobody"))

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def label_studio_env(self) -> dict[str, str]:
        """What Label Studio 1.23 reads to use this server (core/settings/base.py).

        The ``LABEL_STUDIO_`` prefix wins over the bare names there, and our launcher sets
        ``LABEL_STUDIO_DJANGO_DB=sqlite``, so the prefixed name is the one that must change.
        """
        return {
            "LABEL_STUDIO_DJANGO_DB": "default",
            "DJANGO_DB": "default",
            "POSTGRE_NAME": DATABASE,
            "POSTGRE_USER": self.user,
            "POSTGRE_PASSWORD": self.password,
            "POSTGRE_HOST": self.host,
            "POSTGRE_PORT": str(self.port),
        }

    def start(self) -> LocalPostgres:
        # Under /tmp, not pytest's root-only tmp_path: an unprivileged owner must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="sg-postgres-"))
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n", encoding="utf-8")
        if self._owner is not None:
            os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
            os.chown(password_file, self._owner.pw_uid, self._owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "--encoding=UTF8",
            "--locale=C",
        )
        password_file.unlink()
        self.port = free_port(self.host)
        # TCP on 127.0.0.1 only; the Unix socket lives in the private folder, not /run.
        options = f"-c listen_addresses={self.host} -p {self.port} -k {self.root} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w",
            "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._owner is not None:
            command = ["runuser", "-u", self._owner.pw_name, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=300, cwd=self.root, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} failed with code {done.returncode}: {done.stderr.strip()[-2000:]}\n"
                f"{self.log_tail()}"
            )
