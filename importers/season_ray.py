"""Run a season's episodes on Ray: one actor per worker, each keeping its models loaded.

Only this module imports Ray, and only when a runner starts, so the rest of the project never
needs it (``pip install 'speaker-grouping[cluster]'``). Workers are actors built from the same
picklable factory the serial runner uses (`importers.season.EpisodeWorker`); each imports
episodes one after another and writes straight into the output folder, which on a cluster must
be a folder every node sees at the same path (NFS, a mounted bucket), as must the videos.

Failures come back as data: a worker turns an episode's error into a failed `EpisodeOutcome`,
and a worker that dies (out of memory, a killed node) fails its episode with a one-line reason
while the other workers carry on.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from importers.season import EpisodeOutcome, EpisodeWorker

logger = logging.getLogger(__name__)

LOCAL = "local"
DEFAULT_LOCAL_WORKERS = 2

_LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for a single-machine instance: when it is off, Ray takes 127.0.0.1 as the node's
address and binds its servers (GCS, raylet, workers, agents) there. Without it, Ray replaces
``_node_ip_address="127.0.0.1"`` with the machine's routable address and listens on all
interfaces. Read when ``ray`` is first imported."""


class RayUnavailableError(ValueError):
    """Ray is not installed, or the cluster cannot be reached; one line saying which and why."""


class _EpisodeActor:
    """The body of a Ray actor: one `EpisodeWorker`, built once, for many episodes."""

    def __init__(self, make_worker: Callable[[], EpisodeWorker]) -> None:
        self._worker = make_worker()

    def import_one(self, video: str) -> EpisodeOutcome:
        return self._worker.import_one(Path(video))

    def close(self) -> None:
        self._worker.close()


class RayRunner:
    """`importers.season.EpisodeRunner` on Ray.

    address : ``"local"`` starts a private Ray on this machine bound to 127.0.0.1 with
    ``workers`` CPUs; ``"auto"`` joins the cluster this machine belongs to (``ray start``);
    anything else is a cluster address, ``host:port`` (the head's GCS, 6379 by default) or
    ``ray://host:port`` (Ray Client, 10001 by default).
    workers : actors to start; None means 2 locally and one per CPU of the cluster otherwise.
    Each actor asks Ray for one CPU.
    """

    def __init__(
        self,
        make_worker: Callable[[], EpisodeWorker],
        *,
        address: str = LOCAL,
        workers: int | None = None,
        verbose: bool = False,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        self._make_worker = make_worker
        self.address = address
        self.workers = workers
        self._verbose = verbose
        self._ray: Any = None
        self._started_ray = False
        self._actors: list[Any] = []

    def run(
        self, videos: Sequence[Path], *, on_start: Callable[[Path], None] | None = None
    ) -> Iterator[EpisodeOutcome]:
        """Yield each episode's outcome as it finishes; at most one episode per actor at once."""
        if not videos:
            return
        ray = self._start(len(videos))
        todo = list(videos)
        idle = list(self._actors)
        running: dict[Any, tuple[Any, Path]] = {}
        while todo or running:
            while todo and idle:
                actor, video = idle.pop(), todo.pop(0)
                if on_start is not None:
                    on_start(video)
                running[actor.import_one.remote(str(video))] = (actor, video)
            if not running:  # every actor died: what is left cannot run
                for video in todo:
                    yield EpisodeOutcome(video, "failed", detail="no Ray worker left to run it")
                return
            [done], _ = ray.wait(list(running), num_returns=1)
            actor, video = running.pop(done)
            try:
                outcome = ray.get(done)
            except ray.exceptions.RayError as error:  # the worker died or could not run it
                if not isinstance(error, ray.exceptions.RayActorError):
                    idle.append(actor)  # the actor lives; only this call went wrong
                yield EpisodeOutcome(video, "failed", detail=_ray_reason(error))
                continue
            idle.append(actor)
            yield outcome

    def _start(self, episodes: int) -> Any:
        ray = _import_ray(local=self.address == LOCAL)
        self._ray = ray
        if not ray.is_initialized():
            self._init(ray)
            self._started_ray = True
        count = self.workers
        if count is None:
            count = (
                DEFAULT_LOCAL_WORKERS
                if self.address == LOCAL
                else max(1, int(ray.cluster_resources().get("CPU", 1)))
            )
        actor_class = ray.remote(num_cpus=1)(_EpisodeActor)
        self._actors = [actor_class.remote(self._make_worker) for _ in range(min(count, episodes))]
        logger.info("%d Ray workers on %s", len(self._actors), self.address)
        return ray

    def _init(self, ray: Any) -> None:
        common: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": self._verbose,
            "configure_logging": False,
        }
        from ray.job_config import JobConfig

        try:
            if self.address == LOCAL:
                ray.init(
                    num_cpus=self.workers or DEFAULT_LOCAL_WORKERS,
                    _node_ip_address="127.0.0.1",
                    job_config=JobConfig(code_search_path=[_project_root()]),
                    **common,
                )
            else:
                ray.init(address=self.address, **common)
        except Exception as error:  # ConnectionError, RuntimeError, ValueError, TimeoutError...
            reason = " ".join(str(error).split())
            raise RayUnavailableError(
                f"--ray {self.address}: Ray did not start or connect: {reason}"
            ) from error

    def close(self) -> None:
        """Let each worker stop its helpers, then stop the actors (and a Ray we started)."""
        ray = self._ray
        if ray is None:
            return
        if self._actors:
            closing = [actor.close.remote() for actor in self._actors]
            try:
                ray.get(closing, timeout=60)
            except Exception as error:  # a dead worker has nothing left to close
                logger.debug("closing Ray workers: %s", error)
            for actor in self._actors:
                ray.kill(actor)
            self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def _import_ray(*, local: bool) -> Any:
    if local and "ray" not in sys.modules:
        os.environ.setdefault(_LOOPBACK_ONLY_ENV, "0")
        # Token auth is Ray's default for a new local instance; saying so spares its warning.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    # Ray reports usage to its developers over the network unless told not to.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as error:
        raise RayUnavailableError(
            "--ray needs Ray; install it with pip install 'speaker-grouping[cluster]' "
            f"(same version on every node): {error}"
        ) from error
    return ray


def _project_root() -> str:
    """The folder holding ``importers``: local workers import our code from the driver's copy
    (a checkout run with PYTHONPATH, as well as an installed package)."""
    return str(Path(__file__).resolve().parent.parent)


def _ray_reason(error: BaseException) -> str:
    """A Ray error as one line: its type and the first line of its message, no traceback."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    first = lines[0].strip() if lines else ""
    return f"Ray worker failed ({type(error).__name__}): {first}"[:300]
