"""What Label Studio must hold for the annotation loop to work, checked and repaired.

Label Studio creates the ML backend's webhook once, when the backend is first connected, and
never moves it: a backend that comes back on another address (a new port, a new container
name) is connected again by hand or by the demo, which updates the ML backend record but leaves
the webhook pointing at the old address. Label Studio then says "Annotation saved" and the
backend never hears of it (docs/architecture.md §7). So whenever the backend starts or is set
up (``/setup``), the project's worker calls `ensure_connection`, which

1. makes sure one active webhook of the project sends every action, with its payload, to
   ``<backend URL>/webhook``, repairing the backend's stale one (same path, old address) rather
   than adding a second;
2. makes the predicted speaker and its score Data Manager columns of the default tab and of
   the "Doubt first" tab (sorted by score, lowest first), creating those tabs when missing.

The backend's URL is ``SG_PUBLIC_URL`` when set, else that of the project's one connected ML
backend. The catch-up that follows (reconcile, refit, push, pin the project's model version) is
`ml_backend.model.SpeakerGroupingModel.background_round`.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from foundation.label_studio import LabelStudioClient, LabelStudioError

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhook"
DEFAULT_VIEW = "Default"
DOUBT_VIEW = "Doubt first"
SCORE_COLUMN = "tasks:predictions_score"
SPEAKER_COLUMN = "tasks:predictions_results"
SHOWN_COLUMNS = (SPEAKER_COLUMN, SCORE_COLUMN)
"""Prediction columns Label Studio hides by default (visibility_defaults False) that we show."""


@dataclass(frozen=True)
class Connection:
    """What `ensure_connection` found and did."""

    backend_url: str | None
    webhook_id: int | None
    webhook_action: str
    """"kept", "repaired", "created" or "skipped" (no backend URL known)."""
    views: tuple[str, ...]
    pinned_version: str | None
    """The project's model version in Label Studio when it was checked."""

    def pinned(self, version: str) -> Connection:
        return replace(self, pinned_version=version)


def ensure_connection(
    api: LabelStudioClient | None,
    project: int,
    *,
    public_url: str | None,
    basic_auth: tuple[str | None, str | None] = (None, None),
) -> Connection:
    """Check and repair the project's webhook and views; `LabelStudioError` when unreachable.

    public_url : this backend's own address (``SG_PUBLIC_URL``), None to find it among the
        project's ML backends. basic_auth : the (user, password) its webhook must send.
    """
    if api is None:
        raise LabelStudioError("no Label Studio URL and key")
    with api:
        info = api.project(project)
        url = backend_url(api, project, public_url)
        headers = _auth_headers(*basic_auth)
        webhook_id, action = (None, "skipped")
        if url is not None:
            webhook_id, action = ensure_webhook(api, project, url + WEBHOOK_PATH, headers)
        else:
            logger.warning(
                "project %d: cannot tell which ML backend is this one; set SG_PUBLIC_URL so "
                "its webhook can be checked",
                project,
            )
        views = ensure_views(api, project)
    connection = Connection(url, webhook_id, action, views, info.get("model_version"))
    logger.info(
        "project %d: webhook %s (%s), views %s, Label Studio's model version %r",
        project,
        action,
        url,
        list(views),
        connection.pinned_version,
    )
    return connection


def backend_url(api: LabelStudioClient, project: int, configured: str | None) -> str | None:
    """``configured``, else the URL of the project's one ML backend (None when not one)."""
    if configured:
        return configured.rstrip("/")
    urls = {str(b.get("url") or "").rstrip("/") for b in api.ml_backends(project)} - {""}
    return urls.pop() if len(urls) == 1 else None


def ensure_webhook(
    api: LabelStudioClient, project: int, url: str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """One active webhook sending every action with its payload to ``url``; (id, what was done).

    An existing webhook to ``url`` is kept (and switched back on if an admin turned it off);
    else a webhook of the project to another address's ``/webhook`` (the backend's old address)
    is repaired; else one is created, as Label Studio does when a backend is connected.
    """
    wanted: dict[str, Any] = {
        "url": url,
        "send_payload": True,
        "send_for_all_actions": True,
        "is_active": True,
    }
    if headers:
        wanted["headers"] = headers
    hooks = api.webhooks(project)
    exact = [h for h in hooks if str(h.get("url") or "").rstrip("/") == url]
    if exact:
        hook = exact[0]
        if any(hook.get(key) != value for key, value in wanted.items() if key != "url"):
            api.update_webhook(int(hook["id"]), **wanted)
            return int(hook["id"]), "repaired"
        return int(hook["id"]), "kept"
    stale = [h for h in hooks if urlsplit(str(h.get("url") or "")).path.rstrip("/") == WEBHOOK_PATH]
    if stale:
        hook = stale[0]
        api.update_webhook(int(hook["id"]), **wanted)
        logger.info("project %d: webhook %s now points at %s", project, hook.get("url"), url)
        return int(hook["id"]), "repaired"
    created = api.create_webhook(project, **wanted)
    return int(created["id"]), "created"


def ensure_views(api: LabelStudioClient, project: int) -> tuple[str, ...]:
    """Show the predicted speaker and score in the default and "Doubt first" tabs.

    A tab's ``hiddenColumns`` lists what it hides; Label Studio's own defaults hide every
    prediction column, so a tab we create hides exactly those defaults minus ours, and an
    existing tab only loses ours from its list. Returns the titles of the tabs changed.
    """
    columns = api.columns(project)
    defaults = {
        kind: [
            f"{c.get('target', 'tasks')}:{c['id']}"
            for c in columns
            if "id" in c and (c.get("visibility_defaults") or {}).get(kind) is False
        ]
        for kind in ("explore", "labeling")
    }
    hidden = {kind: [c for c in ids if c not in SHOWN_COLUMNS] for kind, ids in defaults.items()}
    views = api.views(project)
    titles = {str((v.get("data") or {}).get("title") or ""): v for v in views}
    changed = []
    for title, ordering in ((DEFAULT_VIEW, None), (DOUBT_VIEW, [SCORE_COLUMN])):
        view = titles.get(title)
        if view is None and title == DEFAULT_VIEW and views:
            continue  # the project's first tab, whatever its name, is its default: left below
        if view is None:
            data: dict[str, Any] = {"title": title, "hiddenColumns": hidden}
            if ordering:
                data["ordering"] = ordering
            api.create_view(project, data)
            changed.append(title)
    for view in api.views(project):
        data = dict(view.get("data") or {})
        columns_hidden = data.get("hiddenColumns")
        if not isinstance(columns_hidden, dict):
            data["hiddenColumns"] = hidden
        elif any(c in (columns_hidden.get("explore") or []) for c in SHOWN_COLUMNS):
            data["hiddenColumns"] = {
                kind: [c for c in (ids or []) if c not in SHOWN_COLUMNS]
                for kind, ids in columns_hidden.items()
            }
        else:
            continue
        if data.get("title") == DOUBT_VIEW:
            data["ordering"] = [SCORE_COLUMN]
        api.update_view(int(view["id"]), project, data)
        changed.append(str(data.get("title")))
    return tuple(dict.fromkeys(changed))


def _auth_headers(user: str | None, password: str | None) -> dict[str, str] | None:
    """Basic-auth header for the webhook when the backend requires it."""
    if user is None or password is None:
        return None
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}
