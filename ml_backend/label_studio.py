"""The one HTTP client the backend talks to Label Studio with (push, reconcile, media).

Why one client: the API key must go to exactly one origin, Label Studio's, and every call must
have the same protections, so they live in one place:

- The key is sent only to the client's own origin (scheme, host, port). An absolute URL on any
  other origin is refused before a connection is opened.
- Redirects are followed by hand and only within that origin; ``requests`` would follow them
  anywhere, which makes the backend a proxy to whatever address a redirect names.
- Timeouts on every call; idempotent reads are retried with backoff when Label Studio is briefly
  unreachable or answers 502-504.
- Downloads are streamed to disk with a size bound, never held in memory whole.

`Credentials` say where Label Studio is and with which key; which origin may be trusted at all
is decided once, by `ml_backend.registry.Backend.learn_credentials` from `BackendConfig`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from speaker_grouping.atomic import atomic_writer

logger = logging.getLogger(__name__)

TIMEOUT_S = 60.0
MAX_REDIRECTS = 5
RETRIES = 2
RETRY_BACKOFF_S = 0.5
_RETRY_STATUSES = frozenset({502, 503, 504})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class LabelStudioError(RuntimeError):
    """Label Studio refused a call, could not be reached, or pointed elsewhere; one line."""


class UntrustedUrlError(LabelStudioError):
    """A URL outside Label Studio's origin: refused before any connection is made."""


@dataclass(frozen=True)
class Credentials:
    """Where Label Studio is and the key to read from and write to it."""

    url: str | None
    api_key: str | None

    @property
    def usable(self) -> bool:
        return bool(self.url and self.api_key)


def origin_of(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of an http(s) URL, lower-cased; ValueError for anything else."""
    if not isinstance(url, str) or any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise ValueError(f"{str(url)[:120]!r} is not a URL (blank or control characters)")
    try:
        parts = urlsplit(url)
        port = parts.port  # validates the port
    except ValueError as error:
        raise ValueError(f"{url[:120]!r} is not a URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url[:120]!r} is not an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url[:120]!r} carries credentials in the URL; refused")
    default = 80 if scheme == "http" else 443
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return scheme, host if port in (None, default) else f"{host}:{port}"


def base_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: the form a trusted origin is stored in."""
    scheme, netloc = origin_of(url)
    return f"{scheme}://{netloc}"


class LabelStudioClient:
    """Label Studio's REST API with the legacy token, bound to one origin."""

    def __init__(self, url: str, api_key: str, *, timeout: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.origin = origin_of(self.url)
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or .netrc picked up from the environment
        self._session.headers["Authorization"] = f"Token {api_key}"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def absolute(self, path_or_url: str) -> str:
        """A rooted path joined to Label Studio's URL, or an absolute URL on its origin."""
        if path_or_url.startswith("/") and not path_or_url.startswith("//"):
            return f"{self.url}{path_or_url}"
        if not self._on_origin(path_or_url):
            raise UntrustedUrlError(
                f"{path_or_url[:120]!r} is not on Label Studio's origin "
                f"{self.origin[0]}://{self.origin[1]}; refused"
            )
        return path_or_url

    def _on_origin(self, url: str) -> bool:
        """Whether ``url`` is absolute and on Label Studio's own scheme, host and port."""
        try:
            return origin_of(url) == self.origin
        except ValueError:
            return False

    def request(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:
        """One call; redirects followed only within the origin, reads retried with backoff."""
        url = self.absolute(path_or_url)
        method = method.upper()
        for attempt in range(RETRIES + 1):
            try:
                answer = self._follow(method, url, **kwargs)
            except requests.RequestException as error:
                if method in _IDEMPOTENT and attempt < RETRIES:
                    time.sleep(RETRY_BACKOFF_S * 2**attempt)
                    continue
                raise LabelStudioError(
                    f"Label Studio at {self.url} is not reachable ({type(error).__name__})"
                ) from None
            retry = answer.status_code in _RETRY_STATUSES and method in _IDEMPOTENT
            if retry and attempt < RETRIES:
                answer.close()
                time.sleep(RETRY_BACKOFF_S * 2**attempt)
                continue
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _follow(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        for _ in range(MAX_REDIRECTS + 1):
            answer = self._session.request(
                method, url, timeout=self.timeout, allow_redirects=False, **kwargs
            )
            if answer.status_code not in _REDIRECTS or "Location" not in answer.headers:
                return answer
            target = urljoin(url, answer.headers["Location"])
            answer.close()
            if not self._on_origin(target):
                raise LabelStudioError(
                    f"Label Studio redirected {method} {urlsplit(url).path} to another origin "
                    f"({target[:120]!r}); refused"
                )
            if answer.status_code == 303 or (answer.status_code in (301, 302) and method != "HEAD"):
                method = "GET"
                kwargs.pop("json", None)
                kwargs.pop("data", None)
            url = target
        raise LabelStudioError(f"Label Studio redirected more than {MAX_REDIRECTS} times; refused")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one API call; `LabelStudioError` for any HTTP error."""
        answer = self.request(method, path, **kwargs)
        with answer:
            if answer.status_code >= 400:
                raise LabelStudioError(
                    f"Label Studio answered {method} {path} with HTTP {answer.status_code}: "
                    f"{' '.join(answer.text.split())[:300]}"
                )
            if not answer.content:
                return None
            try:
                return answer.json()
            except ValueError:
                raise LabelStudioError(
                    f"Label Studio answered {method} {path} with something not JSON"
                ) from None

    def download(self, path_or_url: str, destination: Path, *, max_bytes: int) -> int:
        """Stream one file into ``destination`` (atomically); returns its size.

        Raises `LabelStudioError` for an HTTP error or a body larger than ``max_bytes``; the
        destination is then left as it was. Memory stays at one chunk whatever the size.
        """
        answer = self.request("GET", path_or_url, stream=True)
        with answer:
            if answer.status_code != 200:
                raise LabelStudioError(
                    f"{path_or_url[:120]!r}: Label Studio answered {answer.status_code}"
                )
            declared = answer.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise LabelStudioError(f"{path_or_url[:120]!r} is larger than {max_bytes} bytes")
            size = 0
            try:
                with atomic_writer(destination) as out:
                    for chunk in answer.iter_content(1 << 16):
                        size += len(chunk)
                        if size > max_bytes:
                            raise LabelStudioError(
                                f"{path_or_url[:120]!r} is larger than {max_bytes} bytes"
                            )
                        out.write(chunk)
            except requests.RequestException as error:
                raise LabelStudioError(
                    f"{path_or_url[:120]!r}: download failed ({type(error).__name__})"
                ) from None
        return size

    # ------------------------------------------------------------------ API

    def project(self, project: int) -> dict[str, Any]:
        return self.call("GET", f"/api/projects/{int(project)}")

    def update_project(self, project: int, **fields: Any) -> None:
        self.call("PATCH", f"/api/projects/{int(project)}", json=fields)

    def tasks(
        self, project: int, *, annotations: bool = False, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every task of the project (id, data; with annotations when asked), paged."""
        page, seen = 1, 0
        while True:
            params: dict[str, Any] = {"project": int(project), "page": page, "page_size": page_size}
            params["fields"] = "all" if annotations else "task_only"
            body = self.call("GET", "/api/tasks", params=params)
            items = body.get("tasks", []) if isinstance(body, dict) else body
            if not isinstance(items, list):
                raise LabelStudioError("Label Studio's task list is not a list")
            yield from (item for item in items if isinstance(item, dict))
            seen += len(items)
            total = body.get("total") if isinstance(body, dict) else None
            if not items or total is None or seen >= total:
                return
            page += 1

    def annotations(self, task: int) -> list[dict[str, Any]]:
        return self.call("GET", f"/api/tasks/{int(task)}/annotations/")

    def import_predictions(self, project: int, predictions: list[dict[str, Any]]) -> int:
        body = self.call(
            "POST", f"/api/projects/{int(project)}/import/predictions", json=list(predictions)
        )
        return int((body or {}).get("created", 0))

    def model_versions(self, project: int) -> dict[str, int]:
        return dict(self.call("GET", f"/api/projects/{int(project)}/model-versions/") or {})

    def delete_model_version(self, project: int, version: str) -> None:
        self.call(
            "DELETE",
            f"/api/projects/{int(project)}/model-versions/",
            json={"model_version": version},
        )

    # ------------------------------------------------------------------ connection (webhook, views)
    # What the backend checks on start and on /setup (`ml_backend.connection`).

    def ml_backends(self, project: int) -> list[dict[str, Any]]:
        """The ML backends connected to the project (id, url, title, ...)."""
        body = self.call("GET", "/api/ml", params={"project": int(project)})
        return [b for b in body or [] if isinstance(b, dict)]

    def update_ml_backend(self, backend: int, project: int, **fields: Any) -> None:
        """Change an ML backend record (Label Studio 1.23 answers 500 without ``project``)."""
        self.call("PATCH", f"/api/ml/{int(backend)}", json={"project": int(project), **fields})

    def webhooks(self, project: int) -> list[dict[str, Any]]:
        """The project's webhooks (id, url, is_active, send_payload, actions, ...)."""
        body = self.call("GET", "/api/webhooks/", params={"project": int(project)})
        return [w for w in body or [] if isinstance(w, dict) and w.get("project") == int(project)]

    def create_webhook(self, project: int, url: str, **fields: Any) -> dict[str, Any]:
        return self.call(
            "POST", "/api/webhooks/", json={"project": int(project), "url": url, **fields}
        )

    def update_webhook(self, webhook: int, **fields: Any) -> None:
        self.call("PATCH", f"/api/webhooks/{int(webhook)}/", json=fields)

    def views(self, project: int) -> list[dict[str, Any]]:
        """The project's Data Manager tabs (id, data: title, ordering, hiddenColumns, ...)."""
        body = self.call("GET", "/api/dm/views/", params={"project": int(project)})
        return [v for v in body or [] if isinstance(v, dict) and v.get("project") == int(project)]

    def create_view(self, project: int, data: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/api/dm/views/", json={"project": int(project), "data": data})

    def update_view(self, view: int, project: int, data: dict[str, Any]) -> None:
        self.call(
            "PATCH", f"/api/dm/views/{int(view)}/", json={"project": int(project), "data": data}
        )

    def columns(self, project: int) -> list[dict[str, Any]]:
        """The Data Manager's columns (id, target, visibility_defaults, ...)."""
        body = self.call("GET", "/api/dm/columns/", params={"project": int(project)})
        items = body.get("columns") if isinstance(body, dict) else body
        return [c for c in items or [] if isinstance(c, dict)]
