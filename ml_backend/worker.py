"""The refit worker of one project: the only thread that refits, pushes and reconciles.

Webhooks only record labels and `schedule` a round; the worker waits ``delay`` to gather the
rest of a burst into one refit, then runs `SpeakerGroupingModel.background_round`. Its thread
ends after `WORKER_IDLE_EXIT_S` without events, so idle projects hold no thread, and the next
`schedule` starts a new one.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

logger = logging.getLogger(__name__)

WORKER_IDLE_EXIT_S = 30.0
"""A project's refit thread ends after this long without events: idle projects hold none."""


class RoundRunner(Protocol):
    """What the worker drives: `ml_backend.model.SpeakerGroupingModel`, named by its shape so
    that the worker (below the model) does not import the model back."""

    project: int
    metrics: Any

    def background_round(self, *, force: bool, reconcile: bool) -> None: ...


class RefitWorker:
    """One background thread per project: waits for events, gathers a burst, refits, pushes."""

    def __init__(self, model: RoundRunner, *, delay: float) -> None:
        self._model = model
        self._delay = delay
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._stopping = threading.Event()
        self._force = False
        self._reconcile = False
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.failures = 0

    def schedule(self, *, force: bool = False, reconcile: bool = False) -> None:
        with self._lock:
            self._force |= force
            self._reconcile |= reconcile
            self._idle.clear()
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"refit-{self._model.project}", daemon=True
                )
                self._thread.start()

    @property
    def busy(self) -> bool:
        """A round is scheduled or running."""
        return not self._idle.is_set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once every scheduled round has finished (for tests and shutdown)."""
        return self._idle.wait(timeout)

    def stop(self, timeout: float | None = 10.0) -> None:
        with self._lock:
            self._stop = True
            self._stopping.set()
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            if not self._wake.wait(WORKER_IDLE_EXIT_S):
                with self._lock:
                    if not self._wake.is_set():
                        self._thread = None  # idle: the next schedule() starts a new thread
                        return
            if self._stop:
                return
            self._stopping.wait(self._delay)  # let the rest of a burst arrive
            with self._lock:
                if self._stop:
                    return  # stopped during the delay: nothing more is written
                self._wake.clear()
                force, reconcile = self._force, self._reconcile
                self._force = self._reconcile = False
            try:
                self._model.background_round(force=force, reconcile=reconcile)
            except Exception:  # the worker must survive one bad round; the next retries
                self.failures += 1
                logger.exception("project %d: background refit failed", self._model.project)
                if self._model.metrics is not None:
                    self._model.metrics.fit_failed()
            self.rounds += 1
            with self._lock:
                if not self._wake.is_set():
                    self._idle.set()
                if self._stop:
                    return
