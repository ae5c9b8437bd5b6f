"""Every project the backend serves, opened on first use: what the server holds.

`Backend` also decides which Label Studio origin may be trusted with a key
(`Backend.learn_credentials`), how many projects it keeps (``SG_MAX_PROJECTS``), what a new
project stamp means (`Backend.model`), and what a restart recovers (`Backend.start`).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from foundation.atomic import remove_stale_temporaries
from foundation.label_studio import Credentials, base_url
from ml_backend.config import BackendConfig
from ml_backend.label_journal import JOURNAL_FILE
from ml_backend.model import INITIAL_VERSION, SpeakerGroupingModel
from ml_backend.project_state import ProjectState, StateError
from ml_backend.protocol import Conflict, MalformedRequest, Refused

logger = logging.getLogger(__name__)

FOLDERLESS_KEEP_S = 60.0
_TOKEN_CHARACTERS = frozenset("0123456789abcdefABCDEFghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ._-")


class Backend:
    """Every project's model, created on first use; what the server holds.

    It also decides which Label Studio origin may be trusted with a key (`learn_credentials`)
    and how many projects the backend keeps (``max_projects``).
    """

    def __init__(self, config: BackendConfig, *, metrics: Any = None) -> None:
        self.config = config
        self.metrics = metrics
        self._models: dict[int, SpeakerGroupingModel] = {}
        self._opened: dict[int, float] = {}
        self._lock = threading.Lock()
        self._setup_credentials: Credentials | None = None

    def start(self) -> list[int]:
        """Recover from a crash: clear stale temporaries, refit projects whose labels are ahead.

        Returns the projects whose refit was scheduled.
        """
        if not self.config.model_dir.is_dir():
            return []
        removed = remove_stale_temporaries(self.config.model_dir)
        if removed:
            logger.info("removed %d temporary files left by a crash", len(removed))
        behind = []
        for folder in sorted(self.config.model_dir.iterdir()):
            has_state = (folder / "state.json").is_file() or (folder / JOURNAL_FILE).is_file()
            if not (folder.name.isdigit() and has_state):
                continue
            try:
                state = ProjectState(folder, int(folder.name))
            except StateError as error:
                logger.error("%s", error)
                continue
            state.compact_journal()
            if state.labels() != state.fitted_labels:
                behind.append(int(folder.name))
            if state.annotation_ids():
                self.model(int(folder.name)).backfill_operations()
        for project in behind:
            logger.info("project %d: labels are ahead of the model; refitting", project)
            self.model(project).worker.schedule()
        return behind

    def credentials(self) -> Credentials:
        """The configured URL with its key; else what an allowed ``/setup`` told us."""
        url, key = self.config.label_studio_url, self.config.label_studio_api_key
        if url and key:
            return Credentials(url, key)
        return self._setup_credentials or Credentials(url, None)

    def learn_credentials(self, hostname: Any, token: Any) -> None:
        """Take Label Studio's address and token from ``/setup``, where the operator allows it.

        ``LABEL_STUDIO_API_KEY`` only ever goes to ``LABEL_STUDIO_URL``. With a URL configured,
        the hostname is never used (only a token, when no key is configured). Without one, the
        hostname is used with the ``/setup`` token only when the operator trusts it
        (SG_TRUST_SETUP_HOSTNAME=1, or its origin in SG_SETUP_HOSTNAMES); otherwise `Refused`,
        before any request is made.
        """
        if hostname is not None and not isinstance(hostname, str):
            raise MalformedRequest("hostname is not a string")
        if token is not None and not isinstance(token, str):
            raise MalformedRequest("access_token is not a string")
        if token and (len(token) > 512 or not set(token) <= _TOKEN_CHARACTERS):
            raise MalformedRequest("access_token is not a plain token (letters, digits, . _ -)")
        configured = self.config.label_studio_url
        if configured:
            if token and not self.config.label_studio_api_key:
                self._setup_credentials = Credentials(configured, token)
            return
        if not hostname:
            return
        try:
            origin = base_url(hostname)
        except ValueError as error:
            raise MalformedRequest(f"hostname: {error}") from None
        allowed = {base_url(h) for h in self.config.setup_hostnames if _is_url(h)}
        if not (self.config.trust_setup_hostname or origin in allowed):
            raise Refused(
                f"/setup names Label Studio at {origin}, which is not trusted: set "
                "LABEL_STUDIO_URL, or allow it with SG_SETUP_HOSTNAMES or SG_TRUST_SETUP_HOSTNAME=1"
            )
        if token:
            self._setup_credentials = Credentials(origin, token)

    def model(
        self, project: int, stamp: int | None = None, *, replace: bool = False
    ) -> SpeakerGroupingModel:
        """The project's model, opened on first use.

        A ``stamp`` that differs from the stored one names a project Label Studio recreated
        under the same id: ``replace`` (``/setup``) moves the old state aside, whole, and
        starts afresh; any other request gets `Conflict` and changes nothing.
        """
        with self._lock:
            model = self._models.get(project)
            if model is None:
                model = self._open(project)
            if not model.state.check_stamp(stamp):
                if not replace:
                    raise Conflict(
                        f"project {project} is stamped {model.state.stamp}, the request "
                        f"{stamp}: Label Studio recreated it? Connect the model again (/setup)"
                    )
                model = self._replace(project, model)
            if not model.credentials.usable and self.credentials().usable:
                model.credentials = self.credentials()
                model.cache.credentials = model.credentials
            return model

    def version_of(self, project: int) -> str:
        """The project's model version without opening (or creating) anything."""
        with self._lock:
            model = self._models.get(project)
        if model is not None:
            return model.model_version
        state_file = self.config.model_dir / str(project) / "state.json"
        if not state_file.is_file():
            return INITIAL_VERSION
        try:
            return (
                ProjectState.open(self.config.model_dir, project).model_version or INITIAL_VERSION
            )
        except StateError:
            return INITIAL_VERSION

    def _open(self, project: int) -> SpeakerGroupingModel:
        folder = self.config.model_dir / str(project)
        if not folder.exists():
            # Only projects with state count, so refused requests cannot fill the cap. Models
            # opened for them hold nothing on disk; past 4x the cap the ones idle for a minute
            # are dropped (a request still using one would otherwise race a second writer).
            if len(self._models) > 4 * self.config.max_projects:
                now = time.monotonic()
                for known, model in list(self._models.items()):
                    stale = now - self._opened.get(known, now) > FOLDERLESS_KEEP_S
                    if stale and not model.state.folder.exists() and not model.worker.busy:
                        del self._models[known]
            held = {
                int(p.name)
                for p in self.config.model_dir.iterdir()
                if p.name.isdigit() and p.is_dir()
            }
            if len(held) >= self.config.max_projects:
                raise Refused(
                    f"project {project}: the backend already holds {len(held)} projects, "
                    f"its limit (SG_MAX_PROJECTS={self.config.max_projects})"
                )
        model = SpeakerGroupingModel(
            project, config=self.config, credentials=self.credentials(), metrics=self.metrics
        )
        self._models[project] = model
        self._opened[project] = time.monotonic()
        return model

    def _replace(self, project: int, old: SpeakerGroupingModel) -> SpeakerGroupingModel:
        """Label Studio's project ``project`` is a new one (another database): start afresh.

        The old worker is stopped and joined first, so no refit of the old project can write
        into the new one; its folder is kept whole under a unique name (labels included).
        """
        old.worker.stop(timeout=None)
        folder = old.state.folder
        if folder.exists():
            archive = folder.with_name(
                f"{folder.name}.replaced-{old.state.stamp}-{time.strftime('%Y%m%dT%H%M%S')}"
                f"-{secrets.token_hex(3)}"
            )
            folder.rename(archive)
            logger.warning(
                "project %d was recreated in Label Studio; old state moved to %s", project, archive
            )
        del self._models[project]
        return self._open(project)

    def models(self) -> list[SpeakerGroupingModel]:
        with self._lock:
            return list(self._models.values())

    def close(self) -> None:
        for model in self.models():
            model.worker.stop()


def _is_url(text: str) -> bool:
    try:
        base_url(text)
    except ValueError:
        return False
    return True
