"""Start and stop a private Label Studio on 127.0.0.1, for the tests and for ``make demo``.

Label Studio is a Django app installed in its own virtual environment (``.venv-ls``), so it runs
as a child process. Things this module takes care of because Label Studio does not:

- A busy port makes Label Studio silently move to port+1, so we pick a free port ourselves and
  treat "is in use" in its log as a failure instead of talking to whatever holds the port.
- It binds 0.0.0.0 unless told otherwise; we bind only 127.0.0.1.
- Its API token is applied only when the user is first created. The credentials are therefore
  stored in the data folder and reused on the next start, and the token is checked against the
  API once the server is up, so a mismatch fails here rather than in the first real request.
- Without ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN`` the organisation is created with legacy
  tokens disabled and ``Authorization: Token <40 hex>`` answers 401. label-studio-sdk sends a
  non-JWT key exactly that way, so ``LabelStudio(base_url=url, api_key=token)`` works.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from foundation.atomic import atomic_write_json
from speaker_grouping.demo_ports import port_is_free

logger = logging.getLogger(__name__)

CREDENTIALS_FILE = "speaker-grouping-credentials.json"
LOG_FILE = "label-studio.log"
_REPO_ROOT = Path(__file__).resolve().parents[1]
_NOT_INSTALLED = "Label Studio is not installed: run `make setup` or set LABEL_STUDIO_BIN"
PROGRESS_FIRST_S = 5.0
PROGRESS_EVERY_S = 15.0
"""While Label Studio starts, ``on_progress`` hears from it after 5 s and then every 15 s: a first
start migrates a fresh database for one to two minutes, which must not look like a hang."""


class LabelStudioStartError(RuntimeError):
    """Label Studio did not come up; the message ends with the last lines of its log."""


def find_label_studio(executable: Path | str | None = None) -> Path:
    """The ``label-studio`` executable: the argument, ``$LABEL_STUDIO_BIN``, ``.venv-ls``, PATH."""
    candidates: list[Path] = []
    if executable is not None:
        candidates.append(Path(executable))
    elif os.environ.get("LABEL_STUDIO_BIN"):
        candidates.append(Path(os.environ["LABEL_STUDIO_BIN"]))
    else:
        candidates.append(_REPO_ROOT / ".venv-ls" / "bin" / "label-studio")
        on_path = shutil.which("label-studio")
        if on_path:
            candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    named = f" ({candidates[0]} is not an executable file)" if executable is not None else ""
    raise FileNotFoundError(_NOT_INSTALLED + named)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it), so Label Studio need not move."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class ChildServer:
    """What every server we run as a child process shares: a process group we own, a log
    file, and a context manager that stops it. Subclasses set ``name`` and ``log_path``."""

    name = "server"
    _process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> ChildServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> ChildServer:
        raise NotImplementedError

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever outlives ``timeout``."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, timeout)
                signal_group(process, signal.SIGKILL)
                process.wait()
        logger.info("%s stopped (exit code %s)", self.name, process.returncode)


class LocalLabelStudio(ChildServer):
    """A Label Studio server owned by this process; use it as a context manager.

    ``data_dir`` holds its database, log and stored credentials, and may be reused between runs
    (a migrated folder starts in seconds, a fresh one takes tens of seconds). ``document_root``
    is the only folder whose files Label Studio may serve through ``/data/local-files/?d=``.
    """

    name = "Label Studio"

    def __init__(
        self,
        *,
        data_dir: Path,
        document_root: Path,
        port: int | None = None,
        username: str = "admin@example.com",
        password: str | None = None,
        token: str | None = None,
        executable: Path | None = None,
        host: str = "127.0.0.1",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        if token is not None and not _is_legacy_token(token):
            raise ValueError(f"Label Studio token {token!r} is not 40 hexadecimal characters")
        self.data_dir = Path(data_dir).resolve()
        self.document_root = Path(document_root).resolve()
        self.port = port
        self.host = host
        self.executable = executable
        self.extra_env = dict(extra_env or {})
        self._username = username
        stored = self._stored_credentials()
        self._password = password or stored.get("password") or secrets.token_urlsafe(12)
        self._token = token or stored.get("token") or secrets.token_hex(20)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Label Studio has no URL before start()")
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        return self._token

    @property
    def username(self) -> str:
        return self._username

    @property
    def password(self) -> str:
        return self._password

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def start(
        self, timeout: float = 120.0, *, on_progress: Callable[[str], None] | None = None
    ) -> LocalLabelStudio:
        """Launch the server and return once its API accepts our token.

        ``on_progress(message)`` is called now and then while it is not up yet, with how long it
        has taken and how many database migrations its log shows applied.
        """
        if self.running:
            return self
        if self.port is not None and not port_is_free(self.port, self.host):
            raise LabelStudioStartError(f"port {self.port} on {self.host} is already in use")
        executable = find_label_studio(self.executable)
        if not self.document_root.is_dir():
            raise FileNotFoundError(
                f"Label Studio document root {self.document_root} is not a folder"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)

        command = [
            str(executable),
            "start",
            "--no-browser",
            "--internal-host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            # A new session gives the server its own process group, so stop() also reaches
            # anything it forks, and a Ctrl-C meant for the caller does not kill it mid-write.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                start_new_session=True,
            )
        logger.info("starting Label Studio at %s (log: %s)", self.url, self.log_path)
        try:
            self._wait_until_healthy(began + timeout, log_offset, on_progress)
            self._check_token()
        except BaseException:
            self.stop()
            raise
        self._store_credentials()
        logger.info("Label Studio is up at %s after %.1f s", self.url, time.monotonic() - began)
        return self

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # Label Studio also reads unprefixed names (HOST, PORT, USERNAME, DEBUG...), which a
        # shell may set for its own reasons; prefixed values win, so set every one we rely on.
        # HOST is dropped instead: when set, pages link their assets absolutely to it, which
        # breaks a browser that reaches the server through a forwarded port.
        for name in ("LABEL_STUDIO_HOST", "HEARTEX_HOST", "HOST"):
            env.pop(name, None)
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LABEL_STUDIO_DJANGO_DB": "sqlite",
                "LABEL_STUDIO_DATABASE_NAME": str(self.data_dir / "label_studio.sqlite3"),
                "LABEL_STUDIO_PORT": str(self.port),
                "LABEL_STUDIO_DEBUG": "false",
                "LABEL_STUDIO_USERNAME": self._username,
                "LABEL_STUDIO_PASSWORD": self._password,
                "LABEL_STUDIO_USER_TOKEN": self._token,
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                # A loopback ML backend is refused unless both of these are off.
                "SSRF_PROTECTION_ENABLED": "false",
                "ML_BLOCK_LOCAL_IP": "false",
                # Offline and quiet: no error reporting, analytics or version checks.
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "COLLECT_ANALYTICS": "false",
                "LATEST_VERSION_CHECK": "false",
                "FEATURE_FLAGS_OFFLINE": "true",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _wait_until_healthy(
        self,
        deadline: float,
        log_offset: int,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        health = f"{self.url}/health"
        began = time.monotonic()
        next_report = began + PROGRESS_FIRST_S
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise LabelStudioStartError(
                    f"Label Studio exited with code {self._process.returncode} before it was "
                    f"ready; {self._log_tail(log_offset)}"
                )
            if "is in use" in self._log_text(log_offset):
                raise LabelStudioStartError(
                    f"Label Studio found port {self.port} busy and moved to another one; "
                    f"{self._log_tail(log_offset)}"
                )
            try:
                with urllib.request.urlopen(health, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            now = time.monotonic()
            if now > deadline:
                raise LabelStudioStartError(
                    f"Label Studio did not answer {health} in time; {self._log_tail(log_offset)}"
                )
            if on_progress is not None and now >= next_report:
                next_report = now + PROGRESS_EVERY_S
                on_progress(self._progress_message(now - began, log_offset))
            time.sleep(0.5)

    def _progress_message(self, elapsed: float, log_offset: int) -> str:
        # Label Studio 1.23 logs "Initializing database.." and then migrates without a word
        # until the server line, so that line is all there is to go on.
        if "Initializing database" in self._log_text(log_offset):
            return (
                f"Label Studio is still starting ({elapsed:.0f} s): initialising its database; "
                "a fresh one takes one to two minutes to migrate (up to four under load)"
            )
        return f"Label Studio is still starting ({elapsed:.0f} s); log: {self.log_path}"

    def _check_token(self) -> None:
        from foundation.label_studio import LabelStudioClient, LabelStudioError

        try:
            with LabelStudioClient(self.url, self._token, timeout=10) as client:
                answer = client.call("GET", "/api/current-user/whoami")
        except LabelStudioError as error:
            if error.status is None:
                raise
            raise LabelStudioStartError(
                f"Label Studio at {self.url} rejects our API token (HTTP {error.status}); the data "
                f"folder {self.data_dir} was probably created with another token: pass that token "
                "or use a fresh data folder"
            ) from None
        email = answer.get("email") if isinstance(answer, dict) else None
        if email != self._username:
            raise LabelStudioStartError(
                f"the API token belongs to {email!r}, not {self._username!r}, in {self.data_dir}"
            )

    def _stored_credentials(self) -> dict[str, str]:
        path = self.data_dir / CREDENTIALS_FILE
        if not path.exists():
            return {}
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: unreadable Label Studio credentials ({error})") from None
        if not isinstance(stored, dict) or stored.get("username") != self._username:
            return {}
        return {key: value for key, value in stored.items() if isinstance(value, str)}

    def _store_credentials(self) -> None:
        # mkstemp inside atomic_write_json creates the file with mode 0600.
        atomic_write_json(
            self.data_dir / CREDENTIALS_FILE,
            {"username": self._username, "password": self._password, "token": self._token},
        )

    def _log_text(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _log_tail(self, offset: int, lines: int = 15) -> str:
        tail = self._log_text(offset).strip().splitlines()[-lines:]
        if not tail:
            return f"its log {self.log_path} is empty"
        return f"last lines of {self.log_path}:\n" + "\n".join(tail)


def _is_legacy_token(token: str) -> bool:
    return len(token) == 40 and all(char in "0123456789abcdefABCDEF" for char in token)


def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - the group leader was reused by another user
        process.send_signal(signum)
