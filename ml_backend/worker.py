"""The worker of one project: the only thread that changes it.

Every change to a project goes through its worker's queue and runs there, one at a time, in the
order it arrived: labels from webhooks, episode and task registration, refits, pushes,
reconciles, speaker listing, and the project's reset. A request that changes something hands
the worker a command and waits for its answer (`ProjectWorker.call`), so a webhook is still
acknowledged only once its labels are in the journal; a request that only reads uses the
snapshot the worker last published (`ml_backend.model.Snapshot`), without any lock.

Refits are not commands but *rounds*: `schedule` asks for one ``delay`` seconds later, so the
rest of a burst of annotations arrives first and 50 quick labels cost one refit. Commands that
arrive while a round is due run first. The thread ends after `WORKER_IDLE_EXIT_S` with nothing
to do, so idle projects hold no thread; the next command or `schedule` starts a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

WORKER_IDLE_EXIT_S = 30.0
"""A project's thread ends after this long without work: idle projects hold none."""


class WorkerClosed(RuntimeError):
    """The project was reset or the backend is shutting down: this worker takes no command."""


class ProjectWorker:
    """One queue and (while there is work) one thread per project.

    round : called as ``round(force=..., reconcile=...)`` for each scheduled round; an
        exception is logged and counted in ``failures``, and the worker carries on.
    on_failure : called after a failed round (metrics).
    """

    def __init__(
        self,
        name: str,
        *,
        delay: float,
        round: Callable[..., None],
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._delay = delay
        self._round = round
        self._on_failure = on_failure
        self._cv = threading.Condition()
        self._commands: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._round_due: float | None = None
        self._retry_due: float | None = None
        self._force = False
        self._reconcile = False
        self._running = False
        self._closed: str | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._io_depth = 0
        self.rounds = 0
        self.failures = 0

    # ------------------------------------------------------------------ what callers use

    def submit(self, command: Callable[[], T]) -> Future[T]:
        """Queue ``command``; its future holds the answer or the exception it raised."""
        future: Future[T] = Future()
        with self._cv:
            if self._closed is not None:
                raise WorkerClosed(self._closed)
            self._commands.append((command, future))
            self._wake()
        return future

    def call(self, command: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``command`` on the worker and return its answer (or raise its exception).

        Called from the worker's own thread (a command that needs another), it runs at once.
        """
        if threading.get_ident() == self._ident:
            return command()
        return self.submit(command).result(timeout)

    def schedule(
        self, *, force: bool = False, reconcile: bool = False, after: float | None = None
    ) -> None:
        """Ask for a round ``after`` seconds (default: the burst delay) from now.

        A round already due sooner keeps its time: a burst of requests makes one round.
        """
        with self._cv:
            if self._closed is not None:
                return
            self._force |= force
            self._reconcile |= reconcile
            due = time.monotonic() + (self._delay if after is None else after)
            if self._round_due is None or due < self._round_due:
                self._round_due = due
            self._wake()

    def run_aside(self, io: Callable[[], T]) -> T:
        """Worker: run a round's slow part on a helper thread, and meanwhile the commands that
        arrive (webhooks, predicts' registrations), so none waits for Label Studio to answer a
        push or a listing, or for a fit. Raises `WorkerClosed` when a command closed the worker
        meanwhile (a reset), so the round stops before it writes anything more.

        ``io`` must not touch the project's state: it talks to Label Studio or computes on
        inputs nobody changes (the state is written by the worker once it returns). Called
        off the worker, or while another runs aside, it simply runs.
        """
        if not self.on_worker_thread or self._io_depth:
            return io()
        future: Future[T] = Future()

        def target() -> None:
            try:
                future.set_result(io())
            except BaseException as error:
                future.set_exception(error)
            with self._cv:
                self._cv.notify_all()

        threading.Thread(target=target, name=f"io-{self.name}", daemon=True).start()
        self._io_depth += 1
        try:
            while True:
                with self._cv:
                    while not future.done() and not self._commands:
                        self._cv.wait()
                    if not self._commands:
                        break
                    command, waiting = self._commands.popleft()
                self._execute(command, waiting)
        finally:
            self._io_depth -= 1
        if self._closed is not None:
            raise WorkerClosed(self._closed)
        return future.result()

    def retry(self, after: float, *, force: bool = False) -> None:
        """A round ``after`` seconds from now that leaves the worker idle until then.

        For what the worker retries by itself (Label Studio unreachable at start): waiting for
        it is not work in progress, so `wait_idle` does not wait for it.
        """
        with self._cv:
            if self._closed is not None:
                return
            self._reconcile = True
            self._force |= force
            self._retry_due = time.monotonic() + after
            self._cv.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"worker-{self.name}", daemon=True
                )
                self._thread.start()

    @property
    def busy(self) -> bool:
        """A command or round is queued, due or running."""
        return not self._idle.is_set()

    @property
    def on_worker_thread(self) -> bool:
        return threading.get_ident() == self._ident

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once every queued command and scheduled round has finished."""
        return self._idle.wait(timeout)

    def close(self, reason: str, timeout: float | None = 10.0) -> None:
        """Run the commands already queued, drop a pending round, then end the thread.

        Later commands raise `WorkerClosed` with ``reason``.
        """
        with self._cv:
            if self._closed is None:
                self._closed = reason
            self._round_due = self._retry_due = None
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread.ident != threading.get_ident():
            thread.join(timeout)

    def stop(self, timeout: float | None = 10.0) -> None:
        self.close("the backend is shutting down", timeout)

    # ------------------------------------------------------------------ the thread

    def _wake(self) -> None:
        self._idle.clear()
        self._cv.notify_all()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name=f"worker-{self.name}", daemon=True
            )
            self._thread.start()

    def _next(self) -> tuple[Callable[[], Any], Future[Any] | None] | None:
        """The next command, or a due round (future None); None when the thread should end."""
        with self._cv:
            while True:
                if self._commands:
                    return self._commands.popleft()
                if self._closed is not None:
                    return None
                now = time.monotonic()
                dues = [d for d in (self._round_due, self._retry_due) if d is not None]
                if dues and now >= min(dues):
                    force, reconcile = self._force, self._reconcile
                    self._force = self._reconcile = False
                    self._round_due = self._retry_due = None
                    return partial(self._round, force=force, reconcile=reconcile), None
                if self._round_due is None:
                    self._idle.set()
                wait = min(dues) - now if dues else WORKER_IDLE_EXIT_S
                if not self._cv.wait(wait) and not dues and not self._commands:
                    return None  # idle: the next submit or schedule starts a new thread

    def _run(self) -> None:
        self._ident = threading.get_ident()
        try:
            while True:
                item = self._next()
                if item is None:
                    return
                command, future = item
                if future is None:
                    self._run_round(command)
                else:
                    self._execute(command, future)
        finally:
            with self._cv:
                self._thread = None
                self._ident = None
                if not self._commands and self._round_due is None:
                    self._idle.set()
                if self._closed is None and (self._commands or self._round_due is not None):
                    self._wake()  # work arrived while this thread was ending
                elif self._closed is None and self._retry_due is not None:
                    self._thread = threading.Thread(
                        target=self._run, name=f"worker-{self.name}", daemon=True
                    )
                    self._thread.start()

    @staticmethod
    def _execute(command: Callable[[], Any], future: Future[Any]) -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(command())
            except BaseException as error:  # handed to the caller, who re-raises it
                future.set_exception(error)

    def _run_round(self, round_: Callable[[], None]) -> None:
        try:
            round_()
        except WorkerClosed:
            logger.info("%s: round stopped: the worker was closed", self.name)
        except Exception:  # the worker must survive one bad round; the next retries
            self.failures += 1
            logger.exception("%s: background round failed", self.name)
            if self._on_failure is not None:
                self._on_failure()
        self.rounds += 1
