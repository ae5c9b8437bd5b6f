"""The Label Studio ML-backend protocol over HTTP (Flask): ``create_app(config)``.

Endpoints (docs/architecture.md §7):

- ``GET /health``: ``{"status": "UP", ...}`` at once (no model is loaded for it).
- ``POST /setup``: ``{"model_version": v}``; reads one small state file, never a model.
- ``POST /predict``: ``{tasks, project, label_config, params}`` → ``{"results": [...]}`` in task
  order (see `ml_backend.model.SpeakerGroupingModel.predict`).
- ``POST /webhook``: Label Studio's webhook payloads; applied at once, refit in the background.
- ``GET /versions``: the current model version, for Label Studio's version picker.
- ``GET /metrics``: Prometheus text.

Bad input (not JSON, wrong shapes, unknown top-level fields, media that cannot be read) is
answered 4xx with ``{"error": "<one line>"}``; a 500 means a bug in the backend, and its
traceback goes to the log, never to the client.
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from werkzeug.exceptions import HTTPException

from label_config import speakers_in_config
from ml_backend.config import BackendConfig, ConfigError
from ml_backend.features.base import ModelUnavailableError
from ml_backend.features.store import FeatureStoreError
from ml_backend.grouping.priors import PriorsError
from ml_backend.media_access import TaskMediaError
from ml_backend.project_state import StateError
from ml_backend.protocol import (
    EVENTS,
    Conflict,
    MalformedRequest,
    Refused,
    Unprocessable,
    parse_tasks,
)
from ml_backend.registry import Backend
from ml_backend.worker import WorkerClosed

logger = logging.getLogger(__name__)

# What Label Studio 1.23 sends; anything else at the top level is refused as a likely mistake.
PREDICT_FIELDS = frozenset(
    {"tasks", "project", "label_config", "params", "model_version", "context"}
)
SETUP_FIELDS = frozenset(
    {"project", "schema", "hostname", "access_token", "extra_params", "model_version"}
)
WEBHOOK_FIELDS = frozenset(
    {"action", "annotation", "annotations", "task", "tasks", "project", "label_link"}
)
_ENDPOINTS = ("health", "setup", "predict", "webhook", "versions", "metrics")
_PROJECT_ID = re.compile(r"[0-9]{1,18}")
MAX_PROJECT_ID = 2**63 - 1
BODY_WAIT_S = 10.0
"""How long a request waits for room in the in-flight body budget before it gets 503."""


class Busy(RuntimeError):
    """Too many request bodies in flight at once: answered 503, the client may retry."""


class BodyBudget:
    """Bytes of request bodies being handled at once, bounded (SG_MAX_INFLIGHT_BYTES).

    A parsed JSON body takes several times its size in memory, so the budget bounds the
    backend's memory when clients send many large predicts at once: later ones wait for room.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = threading.Condition()

    def acquire(self, size: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._room:
            while self.used + size > self.limit:
                left = deadline - time.monotonic()
                if left <= 0 or not self._room.wait(left):
                    raise Busy(f"the backend is busy with {self.used} bytes of requests; retry")
            self.used += size

    def release(self, size: int) -> None:
        with self._room:
            self.used -= size
            self._room.notify_all()


class Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sg_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "sg_request_seconds",
            "HTTP request latency",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.fits = Counter("sg_fits", "Refits", ["outcome"], registry=self.registry)
        self.fit_seconds = Histogram(
            "sg_fit_seconds",
            "Refit duration",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.pushes = Counter("sg_pushed_predictions", "Predictions pushed", registry=self.registry)
        self.push_seconds = Histogram(
            "sg_push_seconds",
            "Push duration",
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.model_version = Gauge(
            "sg_model_version",
            "Model version number per project",
            ["project"],
            registry=self.registry,
        )
        self.operations = Counter(
            "sg_operations",
            "Annotations by kind (accepted, add, remove, merge, name, skipped)",
            ["kind"],
            registry=self.registry,
        )

        self.lines_moved = Histogram(
            "sg_lines_moved",
            "Unlabelled lines whose shown speaker a refit changed",
            registry=self.registry,
            buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200),
        )
        self.large_moves = Counter(
            "sg_large_moves",
            "Refits that changed more unlabelled lines than the warning threshold",
            registry=self.registry,
        )

    def moved(self, lines: int, *, large: bool) -> None:
        self.lines_moved.observe(lines)
        if large:
            self.large_moves.inc()

    def fitted(self, seconds: float, version: str) -> None:
        self.fits.labels("ok").inc()
        self.fit_seconds.observe(seconds)

    def fit_failed(self) -> None:
        self.fits.labels("failed").inc()

    def pushed(self, seconds: float, count: int) -> None:
        self.push_seconds.observe(seconds)
        self.pushes.inc(count)

    def operation(self, kind: str) -> None:
        self.operations.labels(kind).inc()


def create_app(config: BackendConfig | None = None) -> Flask:
    """The backend as a Flask app; ``app.extensions["speaker_grouping"]`` holds the `Backend`.

    Without ``config`` the settings come from the environment, as under gunicorn; a setting it
    cannot start with (SG_REQUIRE_AUTH without credentials) is then one logged line and exit
    status 4, which gunicorn reads as "the app failed to load" and stops, instead of a traceback
    and endless worker restarts.
    """
    if config is None:
        try:
            config = BackendConfig.from_env()
        except ConfigError as error:
            logger.critical("error: %s", error)
            raise SystemExit(4) from None
    config.model_dir.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    backend = Backend(config, metrics=metrics)
    backend.start()
    budget = BodyBudget(config.max_inflight_bytes)
    app = Flask(__name__)
    # Keep our key order: a prediction result lists its `value` first, for the Data Manager.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["speaker_grouping"] = backend
    app.extensions["speaker_grouping_metrics"] = metrics
    app.extensions["speaker_grouping_body_budget"] = budget

    @app.before_request
    def _start() -> Response | None:
        g.began = time.perf_counter()
        if (
            config.basic_auth_user is not None
            and request.endpoint != "health"
            and not _authorised(request.headers.get("Authorization", ""), config)
        ):
            answer = jsonify(error="authentication required")
            answer.status_code = 401
            answer.headers["WWW-Authenticate"] = 'Basic realm="speaker-grouping"'
            return answer
        size = request.content_length or 0
        if size:
            if size > config.max_request_bytes:
                return None  # Flask answers 413 when the body is read
            budget.acquire(size, BODY_WAIT_S)
            g.body_bytes = size
        return None

    @app.teardown_request
    def _release(_: BaseException | None) -> None:
        size = g.pop("body_bytes", 0)
        if size:
            budget.release(size)

    @app.after_request
    def _count(response: Response) -> Response:
        endpoint = request.endpoint if request.endpoint in _ENDPOINTS else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        if "began" in g:
            metrics.latency.labels(endpoint).observe(time.perf_counter() - g.began)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        message = error.description or error.name
        if error.code == 413:
            message = f"request body larger than {config.max_request_bytes} bytes"
        return jsonify(error=message), int(error.code or 500)

    @app.errorhandler(MalformedRequest)
    def _bad_request(error: MalformedRequest) -> tuple[Response, int]:
        return jsonify(error=str(error)), 400

    @app.errorhandler(Refused)
    def _refused(error: Refused) -> tuple[Response, int]:
        return jsonify(error=str(error)), 403

    @app.errorhandler(Conflict)
    @app.errorhandler(WorkerClosed)
    def _conflict(error: Exception) -> tuple[Response, int]:
        return jsonify(error=str(error)), 409

    @app.errorhandler(Busy)
    def _busy(error: Busy) -> tuple[Response, int]:
        return jsonify(error=str(error)), 503

    @app.errorhandler(Unprocessable)
    @app.errorhandler(TaskMediaError)
    @app.errorhandler(FeatureStoreError)
    def _unprocessable(error: Exception) -> tuple[Response, int]:
        return jsonify(error=str(error)), 422

    @app.errorhandler(PriorsError)
    @app.errorhandler(ModelUnavailableError)
    def _not_ready(error: Exception) -> tuple[Response, int]:
        # The deployment lacks a model file: not the client's fault, and not a crash either.
        logger.error("backend not ready: %s", error)
        return jsonify(error=f"backend not ready: {error}"), 503

    @app.errorhandler(Exception)
    def _bug(error: Exception) -> tuple[Response, int]:
        logger.exception("unhandled error in %s", request.path)
        if isinstance(error, StateError):
            return jsonify(error=f"backend state unreadable: {error}"), 500
        return jsonify(error=f"internal error ({type(error).__name__}); see the backend log"), 500

    @app.get("/health")
    @app.get("/")
    def health() -> Response:
        return jsonify(status="UP", model_class="SpeakerGroupingModel")

    @app.post("/setup")
    def setup() -> Response:
        body = _json_object(SETUP_FIELDS)
        project, stamp = _project(body.get("project"))
        backend.learn_credentials(body.get("hostname"), body.get("access_token"))
        model = backend.model(project, stamp, replace=True)
        model.record_stamp(stamp)
        if model.credentials.usable:
            model.catch_up()  # webhook, views, reconcile and version pin, in the background
        return jsonify(model_version=model.setup())

    @app.post("/predict")
    def predict() -> Response:
        body = _json_object(PREDICT_FIELDS)
        project, stamp = _project(body.get("project"))
        label_config = body.get("label_config")
        if label_config is not None and not isinstance(label_config, str):
            raise MalformedRequest("label_config is not a string")
        if label_config:
            try:
                speakers_in_config(label_config)  # refused before anything is stored
            except ValueError as error:
                raise MalformedRequest(f"label_config: {error}") from None
        params = body.get("params")
        if params is not None and not isinstance(params, Mapping):
            raise MalformedRequest("params is not an object")
        context = (params or {}).get("context") or body.get("context")
        parse_tasks(body.get("tasks"))  # a malformed body is refused before a project is opened
        model = backend.model(project, stamp)
        answer = model.predict(body.get("tasks"), context, label_config=label_config)
        model.record_stamp(stamp)
        metrics.model_version.labels(str(project)).set(model.snapshot.number)
        return jsonify(answer)

    @app.post("/webhook")
    def webhook() -> Response:
        body = _json_object(None)
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise MalformedRequest("webhook without an action")
        if action not in EVENTS:
            # Label Studio's ML webhook is sent for every action; others are not ours.
            return jsonify(status="ignored", action=action)
        _check_fields(body, WEBHOOK_FIELDS)
        project_info = body.get("project")
        project_id = project_info.get("id") if isinstance(project_info, Mapping) else project_info
        project, _ = _project(project_id)
        model = backend.model(project)
        return jsonify(model.record_event(action, body))

    @app.get("/versions")
    @app.post("/versions")
    def versions() -> Response:
        project: Any = request.args.get("project")
        if project is None and request.method == "POST" and request.content_length:
            project = _json_object(None).get("project")
        if project is None:
            return jsonify(versions=[])
        return jsonify(versions=[backend.version_of(_project(project)[0])])

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    return app


def _json_object(allowed: frozenset[str] | None) -> dict[str, Any]:
    try:
        body = request.get_json(silent=True, force=True)
    except RecursionError:
        raise MalformedRequest("request body is nested too deeply") from None
    if body is None:
        raise MalformedRequest("request body is not valid JSON")
    if not isinstance(body, dict):
        raise MalformedRequest(f"request body must be a JSON object, not {type(body).__name__}")
    if allowed is not None:
        _check_fields(body, allowed)
    return body


def _check_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise MalformedRequest(f"unknown field(s) {unknown}; known: {sorted(allowed)}")


def _project(value: Any) -> tuple[int, int | None]:
    """Label Studio's project uid ``"<id>.<created stamp>"`` (or a bare id) -> (id, stamp)."""
    if isinstance(value, bool) or value is None:
        raise MalformedRequest("project is required (Label Studio's project id)")
    if isinstance(value, int):
        project, stamp = value, None
    elif isinstance(value, str):
        head, dot, tail = value.partition(".")
        if not _PROJECT_ID.fullmatch(head) or (dot and not _PROJECT_ID.fullmatch(tail)):
            raise MalformedRequest(f"project {value[:40]!r} is not '<id>' or '<id>.<stamp>'")
        project, stamp = int(head), int(tail) if dot else None
    else:
        raise MalformedRequest(f"project must be an id, not {type(value).__name__}")
    if not 1 <= project <= MAX_PROJECT_ID:
        raise MalformedRequest(f"project id {str(project)[:40]} is not a positive 64-bit id")
    return project, stamp


def _authorised(header: str, config: BackendConfig) -> bool:
    """Basic auth, compared as UTF-8 bytes (``compare_digest`` refuses non-ASCII text)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except ValueError:
        return False
    expected_user = str(config.basic_auth_user).encode("utf-8")
    expected_password = str(config.basic_auth_pass).encode("utf-8")
    return hmac.compare_digest(user, expected_user) & hmac.compare_digest(
        password, expected_password
    )
