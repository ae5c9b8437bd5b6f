"""A real HTTP server on 127.0.0.1 that records every request it gets, for the security tests.

It plays either an attacker (answers 200 to anything, and remembers what it was sent) or a
minimal Label Studio (the few API routes the backend calls), optionally redirecting every
request elsewhere.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        """Everything the request carried, as one string to search for secrets."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"{self.method} {self.path}\n{head}\n{self.body.decode('latin-1')}"


@dataclass
class Recorder:
    """What the server was sent, and how it answers."""

    redirect_to: str | None = None
    label_studio: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"

    def everything(self) -> str:
        with self._lock:
            return "\n".join(request.text() for request in self.seen)

    def answer(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if self.redirect_to is not None:
            return 302, {"Location": f"{self.redirect_to}{path}"}, b""
        route = path.split("?", 1)[0]
        if route in self.files:
            return 200, {"Content-Type": "application/octet-stream"}, self.files[route]
        if not self.label_studio:
            return 200, {"Content-Type": "application/json"}, b"{}"
        body: Any = {}
        if route == "/api/tasks":
            body = {"tasks": [], "total": 0}
        elif route.startswith("/api/projects/") and route.endswith("/model-versions/"):
            body = {}
        elif route.startswith("/api/projects/") and route.endswith("/import/predictions"):
            body = {"created": 0}
        elif route.startswith("/api/projects/"):
            body = {"id": 7, "label_config": "<View/>", "task_number": 0}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def start_recorder(recorder: Recorder) -> Recorder:
    """Serve ``recorder`` on 127.0.0.1 (a free port) in a daemon thread; stop with `stop`."""

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with recorder._lock:
                recorder.seen.append(Seen(self.command, self.path, dict(self.headers), body))
            status, headers, payload = recorder.answer(self.command, self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _handle

        def log_message(self, *_: Any) -> None:
            pass

    recorder.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=recorder.server.serve_forever, daemon=True).start()
    return recorder


def stop(recorder: Recorder) -> None:
    if recorder.server is not None:
        recorder.server.shutdown()
        recorder.server.server_close()
