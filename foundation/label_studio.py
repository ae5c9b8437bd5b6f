"""The one HTTP client for Label Studio: import push, export, the demo and the backend.

Why one client: the API key must go to exactly one origin, Label Studio's, and every call must
have the same protections and the same errors, so they live in one place:

- The key is sent only to the client's own origin (scheme, host, port). An absolute URL on any
  other origin is refused before a connection is opened.
- Redirects are followed by hand and only within that origin; ``requests`` would follow them
  anywhere, which makes the backend a proxy to whatever address a redirect names.
- Timeouts on every call; idempotent reads are retried with backoff when Label Studio is briefly
  unreachable or answers 502-504.
- Downloads are streamed to disk (or read) with a size bound, never held in memory unbounded.
- Lists are paged to their end, whichever of Label Studio's paging styles an endpoint uses.
- One error type, `LabelStudioError`, whose message is one line a user can act on: the server
  is not reachable, the key was rejected, or a request was refused and why.
- Both kinds of key Label Studio hands out work: a legacy token is sent as ``Token <key>``; a
  personal access token (a JWT refresh token) is exchanged at ``/api/token/refresh`` for a
  short-lived access token, sent as ``Bearer <access>`` and renewed before it expires.

`Credentials` say where Label Studio is and with which key; which origin may be trusted at all
is decided once, by `ml_backend.registry.Backend.learn_credentials` from `BackendConfig`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from foundation.atomic import atomic_writer

logger = logging.getLogger(__name__)

TIMEOUT_S = 60.0
MAX_REDIRECTS = 5
RETRIES = 2
RETRY_BACKOFF_S = 0.5
_RETRY_STATUSES = frozenset({502, 503, 504})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_JSON_BYTES = 1 << 30
"""The most a JSON answer (an export of a big project) may hold before it is refused."""
PAGE_SIZE = 100
_ACCESS_RENEW_S = 30.0
"""An access token is renewed this long before its expiry, so none expires in flight."""


class LabelStudioError(RuntimeError):
    """Label Studio refused a call, could not be reached, or pointed elsewhere; one line.

    status : the HTTP status of a refused call, None when there was no answer to judge.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
    """Label Studio's REST API, bound to one origin and one key.

    url : Label Studio's base URL (``http://host:8080``, optionally with a path prefix).
    api_key : a legacy token or a personal access token (Account & Settings).
    timeout : seconds for one request to connect and for each read of its answer.
    retries : how often an idempotent request is tried again after a lost connection or a
        502-504, with exponential backoff from `RETRY_BACKOFF_S`.
    """

    def __init__(
        self, url: str, api_key: str, *, timeout: float = TIMEOUT_S, retries: int = RETRIES
    ) -> None:
        self.url = url.rstrip("/")
        self.origin = origin_of(self.url)
        self.timeout = timeout
        self.retries = retries
        self._api_key = api_key
        self._personal = _is_refresh_token(api_key)
        self._access: tuple[str, float] | None = None  # (token, expiry as time.time())
        self._access_lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or .netrc picked up from the environment
        if not self._personal:
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
        """One call; redirects followed only within the origin, reads retried with backoff.

        Raises `LabelStudioError` when no answer comes; an answer of any status is returned.
        """
        url = self.absolute(path_or_url)
        method = method.upper()
        for attempt in range(self.retries + 1):
            try:
                answer = self._follow(method, url, **kwargs)
            except requests.RequestException as error:
                if method in _IDEMPOTENT and attempt < self.retries:
                    time.sleep(RETRY_BACKOFF_S * 2**attempt)
                    continue
                raise LabelStudioError(
                    f"Label Studio is not reachable at {self.url} ({type(error).__name__})"
                ) from None
            retry = answer.status_code in _RETRY_STATUSES and method in _IDEMPOTENT
            if retry and attempt < self.retries:
                answer.close()
                time.sleep(RETRY_BACKOFF_S * 2**attempt)
                continue
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _follow(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        for _ in range(MAX_REDIRECTS + 1):
            answer = self._session.request(
                method,
                url,
                timeout=self.timeout,
                allow_redirects=False,
                headers=self._auth_headers(),
                **kwargs,
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

    def _auth_headers(self) -> dict[str, str] | None:
        """``Bearer <access>`` for a personal access token (the session sends a legacy one)."""
        if not self._personal:
            return None
        with self._access_lock:
            if self._access is None or self._access[1] - _ACCESS_RENEW_S < time.time():
                self._access = self._exchange_refresh_token()
            return {"Authorization": f"Bearer {self._access[0]}"}

    def _exchange_refresh_token(self) -> tuple[str, float]:
        answer = self._session.post(
            f"{self.url}/api/token/refresh",
            json={"refresh": self._api_key},
            timeout=self.timeout,
            allow_redirects=False,
        )
        with answer:
            if answer.status_code in (400, 401, 403):
                raise self._refused("POST", "/api/token/refresh", answer, None)
            if answer.status_code != 200:
                raise LabelStudioError(
                    f"Label Studio at {self.url} did not exchange the personal access token "
                    f"(HTTP {answer.status_code})",
                    status=answer.status_code,
                )
            try:
                access = str(answer.json()["access"])
            except (ValueError, KeyError, TypeError):
                raise LabelStudioError(
                    f"Label Studio at {self.url} answered the token exchange without a token"
                ) from None
        claims = _jwt_claims(access) or {}
        expiry = claims.get("exp")
        return access, float(expiry) if isinstance(expiry, int | float) else time.time() + 300

    def _refused(
        self, method: str, path: str, answer: requests.Response, subject: str | None
    ) -> LabelStudioError:
        """The one-line error for an HTTP error answer."""
        status = answer.status_code
        if status in (401, 403):
            return LabelStudioError(
                f"Label Studio at {self.url} rejected the API key (HTTP {status}); "
                "use the token from its Account & Settings page",
                status=status,
            )
        what = subject or f"{method} {urlsplit(path).path}"
        return LabelStudioError(
            f"Label Studio at {self.url} refused a request for {what} (HTTP {status}): "
            f"{_error_detail(answer)}",
            status=status,
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        subject: str | None = None,
        max_bytes: int = MAX_JSON_BYTES,
        **kwargs: Any,
    ) -> Any:
        """The JSON answer of one API call; `LabelStudioError` for any HTTP error.

        subject : what the call is about, for the error message (``project 'x'``).
        max_bytes : the largest answer accepted; a larger one is refused while it streams.
        """
        body = self.read(method, path, subject=subject, max_bytes=max_bytes, **kwargs)
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise LabelStudioError(
                f"Label Studio answered {method} {urlsplit(path).path} with something not JSON"
            ) from None

    def read(
        self,
        method: str,
        path: str,
        *,
        subject: str | None = None,
        max_bytes: int = MAX_JSON_BYTES,
        **kwargs: Any,
    ) -> bytes:
        """The body of one API call, at most ``max_bytes``; `LabelStudioError` for an HTTP error."""
        answer = self.request(method, path, stream=True, **kwargs)
        with answer:
            if answer.status_code >= 400:
                raise self._refused(method, path, answer, subject)
            return b"".join(_bounded_chunks(answer, path, max_bytes))

    def download(self, path_or_url: str, destination: Path, *, max_bytes: int) -> int:
        """Stream one file into ``destination`` (atomically); returns its size.

        Raises `LabelStudioError` for an HTTP error or a body larger than ``max_bytes``; the
        destination is then left as it was. Memory stays at one chunk whatever the size.
        """
        answer = self.request("GET", path_or_url, stream=True)
        with answer:
            if answer.status_code != 200:
                raise LabelStudioError(
                    f"{path_or_url[:120]!r}: Label Studio answered {answer.status_code}",
                    status=answer.status_code,
                )
            size = 0
            with atomic_writer(destination) as out:
                for chunk in _bounded_chunks(answer, path_or_url, max_bytes):
                    size += len(chunk)
                    out.write(chunk)
        return size

    def pages(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        items: str = "results",
        page_size: int = PAGE_SIZE,
        subject: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a paged list, page by page, in the server's order.

        Label Studio pages its lists three ways: a plain JSON list (everything at once),
        ``{"results": [...], "next": url}`` and ``{"tasks": [...], "total": n}``; ``items``
        names the key of the last two. The end is learned from ``next`` or ``total``, never
        from a 404 on the page after the last (which Label Studio logs as a traceback).
        """
        page, seen = 1, 0
        while True:
            query = {**(params or {}), "page": page, "page_size": page_size}
            body = self.call("GET", path, params=query, subject=subject)
            if isinstance(body, list):
                yield from (item for item in body if isinstance(item, dict))
                return
            listed = body.get(items) if isinstance(body, dict) else None
            if not isinstance(listed, list):
                raise LabelStudioError(
                    f"Label Studio's answer to GET {path} is not a list of {items}"
                )
            yield from (item for item in listed if isinstance(item, dict))
            seen += len(listed)
            total = body.get("total", body.get("count"))
            done = (
                not listed
                or (isinstance(total, int) and seen >= total)
                or ("next" in body and not body["next"])
            )
            if done:
                return
            page += 1

    # ------------------------------------------------------------------ projects

    def projects(self, *, title: str | None = None) -> Iterator[dict[str, Any]]:
        """Every project (``title``: Label Studio's case-insensitive "contains" filter)."""
        params = {"title": title} if title is not None else {}
        return self.pages("/api/projects/", params=params, subject="the project list")

    def projects_titled(self, title: str) -> list[dict[str, Any]]:
        """The projects whose title is exactly ``title``, oldest (lowest id) first."""
        found = [p for p in self.projects(title=title) if p.get("title") == title]
        return sorted(found, key=lambda p: int(p["id"]))

    def project(self, project: int) -> dict[str, Any]:
        return self.call("GET", f"/api/projects/{int(project)}", subject=f"project {project}")

    def create_project(self, title: str, label_config: str) -> dict[str, Any]:
        return self.call(
            "POST",
            "/api/projects/",
            json={"title": title, "label_config": label_config},
            subject=f"project {title!r}",
        )

    def update_project(self, project: int, **fields: Any) -> None:
        self.call(
            "PATCH", f"/api/projects/{int(project)}", json=fields, subject=f"project {project}"
        )

    # ------------------------------------------------------------------ tasks

    def tasks(
        self,
        project: int,
        *,
        annotations: bool = False,
        include: str | None = None,
        page_size: int = 1000,
    ) -> Iterator[dict[str, Any]]:
        """Every task of the project (id, data; annotations and predictions when asked), paged.

        include : a comma-separated list of the task fields wanted (``"id,data"``), to keep
            the pages small.
        """
        params: dict[str, Any] = {"project": int(project)}
        params["fields"] = "all" if annotations else "task_only"
        if include is not None:
            params["include"] = include
        return self.pages(
            "/api/tasks",
            params=params,
            items="tasks",
            page_size=page_size,
            subject=f"the tasks of project {project}",
        )

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> int | None:
        """Create ``tasks`` (synchronously); the number created, or None if Label Studio
        queued the import instead (an edition with background imports)."""
        body = self.call(
            "POST",
            f"/api/projects/{int(project)}/import",
            json=list(tasks),
            subject=f"the task import of project {project}",
        )
        count = (body or {}).get("task_count")
        return None if count is None else int(count)

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

    # ------------------------------------------------------------------ storages

    def local_storages(self, project: int) -> list[dict[str, Any]]:
        """The project's local-files import storages."""
        body = self.call(
            "GET",
            "/api/storages/localfiles/",
            params={"project": int(project)},
            subject=f"the storages of project {project}",
        )
        return [item for item in body or [] if isinstance(item, dict)]

    def create_local_storage(self, project: int, **fields: Any) -> dict[str, Any]:
        """A local-files import storage (``path``, ``title``, ``regex_filter``, ...)."""
        return self.call(
            "POST",
            "/api/storages/localfiles/",
            json={"project": int(project), **fields},
            subject=f"a local-files storage of project {project}",
        )

    # ------------------------------------------------------------------ exports

    def create_export(self, project: int, **options: Any) -> dict[str, Any]:
        """Start a snapshot export (``title``, ``task_filter_options``, ...); its record."""
        return self.call(
            "POST",
            f"/api/projects/{int(project)}/exports/",
            json=options,
            subject=f"an export of project {project}",
        )

    def export(self, project: int, export: int) -> dict[str, Any]:
        return self.call("GET", f"/api/projects/{int(project)}/exports/{int(export)}")

    def download_export(
        self,
        project: int,
        export: int,
        *,
        export_type: str = "JSON",
        max_bytes: int = MAX_JSON_BYTES,
    ) -> bytes:
        """The converted snapshot's bytes, at most ``max_bytes``."""
        return self.read(
            "GET",
            f"/api/projects/{int(project)}/exports/{int(export)}/download",
            params={"exportType": export_type},
            max_bytes=max_bytes,
            subject=f"the export of project {project}",
        )

    def delete_export(self, project: int, export: int) -> None:
        self.call("DELETE", f"/api/projects/{int(project)}/exports/{int(export)}")

    # ------------------------------------------------------------------ ML backends and views

    def ml_backends(self, project: int) -> list[dict[str, Any]]:
        body = self.call("GET", "/api/ml/", params={"project": int(project)})
        return [item for item in body or [] if isinstance(item, dict)]

    def create_ml_backend(self, project: int, **fields: Any) -> dict[str, Any]:
        return self.call("POST", "/api/ml/", json={"project": int(project), **fields})

    def update_ml_backend(self, backend: int, **fields: Any) -> dict[str, Any]:
        return self.call("PATCH", f"/api/ml/{int(backend)}", json=fields)

    def delete_ml_backend(self, backend: int) -> None:
        self.call("DELETE", f"/api/ml/{int(backend)}")

    def views(self, project: int) -> list[dict[str, Any]]:
        body = self.call("GET", "/api/dm/views/", params={"project": int(project)})
        return [item for item in body or [] if isinstance(item, dict)]

    def create_view(self, project: int, data: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/api/dm/views/", json={"project": int(project), "data": data})

    def run_action(
        self, project: int, action: str, *, selected: dict[str, Any], timeout: float | None = None
    ) -> Any:
        """A Data Manager action (``retrieve_tasks_predictions``, ...) on the selected tasks."""
        client = self
        if timeout is not None and timeout != self.timeout:
            client = LabelStudioClient(self.url, self._api_key, timeout=timeout, retries=0)
            client._access = self._access
        try:
            return client.call(
                "POST",
                "/api/dm/actions",
                params={"id": action, "project": int(project)},
                json={"selectedItems": selected},
                subject=f"the action {action!r} on project {project}",
            )
        finally:
            if client is not self:
                client.close()


def _bounded_chunks(answer: requests.Response, what: str, max_bytes: int) -> Iterator[bytes]:
    """The body of a streamed answer in chunks, refused as soon as it passes ``max_bytes``."""
    too_large = f"{what[:120]!r} is larger than {max_bytes} bytes"
    declared = answer.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise LabelStudioError(too_large)
    size = 0
    try:
        for chunk in answer.iter_content(1 << 16):
            size += len(chunk)
            if size > max_bytes:
                raise LabelStudioError(too_large)
            yield chunk
    except requests.RequestException as error:
        raise LabelStudioError(
            f"{what[:120]!r}: reading Label Studio's answer failed ({type(error).__name__})"
        ) from None


def _error_detail(answer: requests.Response) -> str:
    """What Label Studio said was wrong, in at most 300 characters of one line."""
    try:
        text = answer.raw.read(64 * 1024, decode_content=True) if answer.raw else b""
    except Exception:  # the answer is an error already; its body is a courtesy
        text = b""
    raw = text.decode("utf-8", "replace")
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw
    if isinstance(body, dict):
        body = body.get("validation_errors") or body.get("detail") or body
    return " ".join(str(body).split())[:300]


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, unverified (only to read its type and expiry), or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _is_refresh_token(api_key: str) -> bool:
    """Whether ``api_key`` is a personal access token (a JWT refresh token), not a legacy one."""
    claims = _jwt_claims(api_key)
    return claims is not None and claims.get("token_type") == "refresh"
