"""The backend's settings, read once from the environment (or given directly in tests).

Environment variables (all optional except that predictions need some media root or a Label
Studio URL to reach the media):

- ``MODEL_DIR``: where per-project state lives (default ``./model-dir``).
- ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``: how the backend pushes refreshed predictions
  and fetches media it cannot read locally. Without them the backend only answers ``/predict``.
  The key is only ever sent to ``LABEL_STUDIO_URL``'s origin.
- ``SG_TRUST_SETUP_HOSTNAME=1`` / ``SG_SETUP_HOSTNAMES``: Label Studio's ``/setup`` call names a
  ``hostname`` and a token. Anyone who can reach the backend can send one, so with no
  ``LABEL_STUDIO_URL`` that hostname is used (with the ``/setup`` token, never with
  ``LABEL_STUDIO_API_KEY``) only when the operator trusts every hostname
  (``SG_TRUST_SETUP_HOSTNAME=1``) or lists its origin (``SG_SETUP_HOSTNAMES``, comma-separated,
  e.g. ``http://label-studio:8080``); any other is refused with 403 and no request is made.
- ``LOCAL_FILES_DOCUMENT_ROOT`` (or ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``): Label Studio's
  document root, so ``/data/local-files/?d=...`` URLs are read from disk; ``SG_MEDIA_ROOTS``:
  more allowed roots, separated by ``os.pathsep``. Nothing outside these roots is ever read.
- ``BASIC_AUTH_USER`` / ``BASIC_AUTH_PASS``: require HTTP basic auth on every endpoint except
  ``/health`` (Label Studio sends them when the ML backend is connected with basic auth).
- ``SG_REQUIRE_AUTH=1``: refuse to start without ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` (set in
  docker-compose.yml, so a deployment is never open by accident).
- ``SG_MAX_PROJECTS``: how many projects the backend keeps state for (default 100); a request
  for one more is refused with 403 and creates nothing.
- ``SG_MAX_INFLIGHT_BYTES``: request bodies being handled at once, in bytes (default 64 MiB); a
  request that would pass it waits briefly, then gets 503, so memory stays bounded.
- ``SG_MAX_REQUEST_BYTES``: largest request body accepted (default 32 MiB).
- ``SG_VOICE_MODEL`` / ``SG_IMAGE_MODEL``: embedders for media without stored features.
- ``SG_PRIORS``: a priors file of your own (``bench/train_priors.py``) instead of the packaged one.
- ``SG_REFIT_DELAY_S``: how long the refit worker waits to gather a burst of annotations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_INFLIGHT_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_PROJECTS = 100
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class ConfigError(ValueError):
    """A setting the backend cannot start with; one line naming the variable."""


ANNOTATION_PARAMS: dict[str, float] = {"name_none_margin": 0.2}
"""Grouper parameters (`GrouperParams`) the backend changes, where proposals feed an annotator
rather than a file.

A numbered speaker ("Speaker 7") is never a right answer to an annotator, so the backend lets
the name model give a numbered speaker's cluster the known name its members most probably
have, even on weak evidence: at worst it costs the same one correction, and it is shown with
its low score. Offline grouping keeps the numbered speaker (the grouper's default), since a
guessed name that is wrong merges two speakers in the output. The measurements behind both
choices are in bench/README.md, "Measurements behind code choices".
"""


@dataclass(frozen=True)
class BackendConfig:
    model_dir: Path = Path("model-dir")
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    media_roots: tuple[Path, ...] = ()
    """Allowed local media roots; the first is Label Studio's document root."""
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    voice_model: str | None = None
    image_model: str | None = None
    refit_delay_s: float = 0.3
    """Wait after the first event of a burst, so 50 quick annotations cost one refit."""
    push_predictions: bool = True
    """Push refreshed predictions to Label Studio after a refit (needs URL and key)."""
    priors: Path | None = None
    """Cold-start priors file for the grouper (None: the packaged ones)."""
    grouper_options: Mapping[str, Any] = field(default_factory=dict)
    """`GrouperParams` changes on top of `ANNOTATION_PARAMS` and the priors' parameters."""
    trust_setup_hostname: bool = False
    """Use any ``/setup`` hostname when no URL is configured (SG_TRUST_SETUP_HOSTNAME=1)."""
    setup_hostnames: tuple[str, ...] = ()
    """Origins a ``/setup`` hostname may name when no URL is configured (SG_SETUP_HOSTNAMES)."""
    require_auth: bool = False
    """Refuse to start without basic auth (SG_REQUIRE_AUTH=1, set by docker-compose.yml)."""
    max_projects: int = DEFAULT_MAX_PROJECTS
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", Path(self.model_dir))
        object.__setattr__(self, "media_roots", tuple(Path(root) for root in self.media_roots))
        if self.max_request_bytes < 1024:
            raise ConfigError(
                f"max_request_bytes must be at least 1024, got {self.max_request_bytes}"
            )
        if self.max_inflight_bytes < self.max_request_bytes:
            raise ConfigError(
                f"SG_MAX_INFLIGHT_BYTES ({self.max_inflight_bytes}) must be at least "
                f"SG_MAX_REQUEST_BYTES ({self.max_request_bytes})"
            )
        if self.max_projects < 1:
            raise ConfigError(f"SG_MAX_PROJECTS must be at least 1, got {self.max_projects}")
        if (self.basic_auth_user is None) != (self.basic_auth_pass is None):
            raise ConfigError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if self.require_auth and self.basic_auth_user is None:
            raise ConfigError(
                "SG_REQUIRE_AUTH is set but BASIC_AUTH_USER/BASIC_AUTH_PASS are not: "
                "refusing to serve without authentication"
            )
        if self.refit_delay_s < 0:
            raise ConfigError(f"refit_delay_s must be >= 0, got {self.refit_delay_s}")
        if self.label_studio_url is not None:
            object.__setattr__(self, "label_studio_url", self.label_studio_url.rstrip("/"))
        object.__setattr__(
            self, "setup_hostnames", tuple(h.strip().rstrip("/") for h in self.setup_hostnames)
        )

    def grouper_changes(self) -> dict[str, Any]:
        """`GrouperParams` the backend changes: `ANNOTATION_PARAMS`, then ``grouper_options``."""
        return {**ANNOTATION_PARAMS, **dict(self.grouper_options)}

    @property
    def document_root(self) -> Path | None:
        return self.media_roots[0] if self.media_roots else None

    @property
    def can_push(self) -> bool:
        return bool(self.push_predictions and self.label_studio_url and self.label_studio_api_key)

    def with_(self, **changes: Any) -> BackendConfig:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> BackendConfig:
        """Settings from ``environ`` (default ``os.environ``); keyword overrides win."""
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        roots: list[Path] = []
        document_root = text("LOCAL_FILES_DOCUMENT_ROOT") or text(
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
        )
        if document_root:
            roots.append(Path(document_root))
        roots.extend(Path(p) for p in (text("SG_MEDIA_ROOTS") or "").split(os.pathsep) if p)
        values: dict[str, Any] = {
            "model_dir": Path(text("MODEL_DIR") or "model-dir"),
            "label_studio_url": text("LABEL_STUDIO_URL") or text("LABEL_STUDIO_HOST"),
            "label_studio_api_key": text("LABEL_STUDIO_API_KEY"),
            "media_roots": tuple(roots),
            "basic_auth_user": text("BASIC_AUTH_USER"),
            "basic_auth_pass": text("BASIC_AUTH_PASS"),
            "max_request_bytes": _number(
                env, "SG_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES, int
            ),
            "voice_model": text("SG_VOICE_MODEL"),
            "image_model": text("SG_IMAGE_MODEL"),
            "refit_delay_s": _number(env, "SG_REFIT_DELAY_S", 0.3, float),
            "priors": Path(text("SG_PRIORS")) if text("SG_PRIORS") else None,
            "trust_setup_hostname": _flag(env, "SG_TRUST_SETUP_HOSTNAME"),
            "setup_hostnames": tuple(
                h for h in (text("SG_SETUP_HOSTNAMES") or "").split(",") if h.strip()
            ),
            "require_auth": _flag(env, "SG_REQUIRE_AUTH"),
            "max_projects": _number(env, "SG_MAX_PROJECTS", DEFAULT_MAX_PROJECTS, int),
            "max_inflight_bytes": _number(
                env, "SG_MAX_INFLIGHT_BYTES", DEFAULT_MAX_INFLIGHT_BYTES, int
            ),
        }
        values.update(overrides)
        return cls(**values)


def _number(env: Mapping[str, str], name: str, default: Any, kind: type) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value (1 or 0)")
