"""Start and stop our ML backend (``speaker-grouping serve``) as a child process on 127.0.0.1.

The demo runs the backend the way Label Studio meets it in production: a separate HTTP server
that Label Studio calls, not a function in the demo's own process. A child process keeps the
backend's torch threads and background refits from competing with the demo's own work, and
makes Ctrl-C stop both servers the same way.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from speaker_grouping.local_label_studio import ChildServer, free_port

logger = logging.getLogger(__name__)

LOG_FILE = "ml-backend.log"


class BackendStartError(RuntimeError):
    """The backend did not come up; the message ends with the last lines of its log."""


class LocalBackend(ChildServer):
    """Our backend served by a child process; use it as a context manager."""

    name = "the ML backend"

    def __init__(
        self,
        *,
        model_dir: Path,
        document_root: Path,
        label_studio_url: str | None = None,
        label_studio_api_key: str | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir).resolve()
        self.document_root = Path(document_root).resolve()
        self.label_studio_url = label_studio_url
        self.label_studio_api_key = label_studio_api_key
        self.port = port
        self.host = host
        self.extra_env = dict(extra_env or {})
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the backend has no URL before start()")
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.model_dir / LOG_FILE

    def start(self, timeout: float = 120.0) -> LocalBackend:
        """Launch the server and return once ``/health`` answers."""
        if self.running:
            return self
        self.model_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)
        command = [
            sys.executable,
            "-m",
            "speaker_grouping.cli",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--model-dir",
            str(self.model_dir),
        ]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                start_new_session=True,
            )
        try:
            self._wait_until_healthy(began + timeout, offset)
        except BaseException:
            self.stop()
            raise
        logger.info("backend is up at %s after %.1f s", self.url, time.monotonic() - began)
        return self

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "MODEL_DIR": str(self.model_dir),
                "LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.label_studio_url:
            env["LABEL_STUDIO_URL"] = self.label_studio_url
        if self.label_studio_api_key:
            env["LABEL_STUDIO_API_KEY"] = self.label_studio_api_key
        env.update(self.extra_env)
        return env

    def _wait_until_healthy(self, deadline: float, offset: int) -> None:
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BackendStartError(
                    f"the backend exited with code {self._process.returncode}; "
                    f"{self._log_tail(offset)}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise BackendStartError(
                    f"the backend did not answer {self.url}/health in time; "
                    f"{self._log_tail(offset)}"
                )
            time.sleep(0.3)
