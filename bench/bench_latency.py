"""Latency of the HTTP backend: ``/predict`` for a whole episode, and how soon a correction
shows in the proposals.

    speaker-grouping bench latency [--episodes hard-seed1 [hard-seed2]] [--out FILE]

The backend runs as in `bench.bench_loop`: `ml_backend.server.create_app` served by werkzeug
on 127.0.0.1 in a thread, no Label Studio. The given episodes form one project (more than one
episode: the others are the gallery, as a season's project would be), so the line count is
whatever they hold; it is written next to every number.

- **cold** ``/predict`` of every task on a fresh MODEL_DIR and a fresh app (grouping with the
  priors, from the stored features); the first one in the process also pays the imports and is
  reported apart. Median of ``--cold`` runs.
- **warm** ``/predict`` of every task again on the same backend (the proposals are cached per
  model version). Median of ``--warm`` runs.
- **fit visible**: the lowest-scored wrong proposal is corrected by an ``ANNOTATION_CREATED``
  webhook; timed from sending it until ``/versions`` shows a model version fitted on it, and
  until a ``/predict`` of every task answered with that version and the corrected name. Median
  over ``--corrections`` corrections. It includes the backend's burst delay (``refit_delay_s``).

Targets (issue 6): ``/predict`` <= 2 s, fit visible <= 1 s median.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.bench_loop import (
    DEFAULT_WAIT_S,
    RESULTS,
    Annotator,
    LoopEpisode,
    RunningBackend,
    _stats,
    backend_config,
    cached_episodes,
    machine_load,
)
from foundation.atomic import atomic_write_json

logger = logging.getLogger(__name__)

TARGET_PREDICT_S = 2.0
TARGET_FIT_VISIBLE_S = 1.0
DEFAULT_EPISODES = ("hard-seed1",)


def project_tasks(episodes: Sequence[LoopEpisode]) -> tuple[list[dict], dict[int, str]]:
    """Every task of the episodes with running ids, and task id -> true name."""
    tasks: list[dict] = []
    truth: dict[int, str] = {}
    for episode in episodes:
        for task in episode.tasks(first_id=len(tasks) + 1):
            tasks.append(task)
            truth[task["id"]] = episode.true_name(task)
    return tasks, truth


def _roots(episodes: Sequence[LoopEpisode]) -> tuple[Path, ...]:
    return tuple(dict.fromkeys(episode.imported.parent for episode in episodes))


@contextmanager
def fresh_backend(episodes: Sequence[LoopEpisode], **config: Any) -> Iterator[RunningBackend]:
    """A backend on a fresh MODEL_DIR that can read the episodes' media."""
    roots = _roots(episodes)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as scratch:
        settings = backend_config(Path(scratch) / "models", roots[0], **config)
        with RunningBackend(settings.with_(media_roots=roots)) as backend:
            yield backend


def measure(
    episodes: Sequence[LoopEpisode],
    *,
    cold: int = 3,
    warm: int = 5,
    corrections: int = 10,
    wait_s: float = DEFAULT_WAIT_S,
    **config: Any,
) -> dict[str, Any]:
    tasks, truth = project_tasks(episodes)
    cold_s: list[float] = []
    warm_s: list[float] = []
    for run in range(cold):
        with fresh_backend(episodes, **config) as backend:
            annotator = Annotator(backend)
            annotator.setup()
            annotator.predict(tasks)
            cold_s.append(annotator.predict_s[-1])
            if run == cold - 1:
                for _ in range(warm):
                    annotator.predict(tasks)
                    warm_s.append(annotator.predict_s[-1])
    fit = _fit_visible(episodes, tasks, truth, corrections=corrections, wait_s=wait_s, **config)
    first, rest = cold_s[0], cold_s[1:] or cold_s
    return {
        "episodes": [episode.name for episode in episodes],
        "lines": len(tasks),
        "predict_cold_first_in_process_s": round(first, 3),
        "predict_cold_s": _stats(rest),
        "predict_warm_s": _stats(warm_s),
        **fit,
    }


def _fit_visible(
    episodes: Sequence[LoopEpisode],
    tasks: list[dict],
    truth: dict[int, str],
    *,
    corrections: int,
    wait_s: float,
    **config: Any,
) -> dict[str, Any]:
    by_id = {task["id"]: task for task in tasks}
    version_s: list[float] = []
    visible_s: list[float] = []
    post_fit_predict_s: list[float] = []
    misses = attempts = 0
    with fresh_backend(episodes, **config) as backend:
        annotator = Annotator(backend)
        annotator.setup()
        shown = annotator.predict(tasks)
        for _ in range(corrections):
            wrong = [t for t in by_id if shown[t].name != truth[t]]
            if not wrong:
                break
            task_id = min(wrong, key=lambda t: (shown[t].score, t))
            attempts += 1
            sent = time.perf_counter()
            answer = annotator.annotate(by_id[task_id], truth[task_id], shown[task_id].name)
            before = answer.get("model_version")
            waited = annotator.wait_fitted(before, sent, limit_s=wait_s)
            if waited is None:
                misses += 1
                shown = annotator.predict(tasks)
                continue
            version_s.append(waited)
            shown = annotator.predict(tasks)
            post_fit_predict_s.append(annotator.predict_s[-1])
            now = shown[task_id]
            if now.version == before or now.name != truth[task_id]:
                misses += 1
                continue
            visible_s.append(time.perf_counter() - sent)
        metrics = backend.app.test_client().get("/metrics").get_data(as_text=True)
    return {
        "corrections": attempts,
        "fit_version_visible_s": _stats(version_s),
        "fit_visible_in_predict_s": _stats(visible_s),
        "predict_after_fit_s": _stats(post_fit_predict_s),
        "fit_misses": misses,
        "backend_fit_s_mean": _metric_mean(metrics, "sg_fit_seconds"),
    }


def _metric_mean(text: str, name: str) -> float | None:
    values = {}
    for line in text.splitlines():
        for suffix in ("_sum", "_count"):
            if line.startswith(f"{name}{suffix} "):
                values[suffix] = float(line.split()[-1])
    if not values.get("_count"):
        return None
    return round(values["_sum"] / values["_count"], 3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="speaker-grouping bench latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--episodes",
        nargs="+",
        metavar="NAME",
        default=list(DEFAULT_EPISODES),
        help="cache episodes forming one project (default: hard-seed1)",
    )
    parser.add_argument(
        "--also",
        nargs="+",
        metavar="NAME",
        help="a second, larger project measured in the same run (e.g. hard-seed1 hard-seed2)",
    )
    parser.add_argument("--cold", type=int, default=3, help="cold /predict runs")
    parser.add_argument("--warm", type=int, default=5, help="warm /predict runs")
    parser.add_argument("--corrections", type=int, default=10)
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, help="refit wait limit, s")
    parser.add_argument("--refit-delay", type=float, help="backend's burst delay (default 0.3 s)")
    parser.add_argument("--priors", type=Path, help="priors file (default: the packaged ones)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latency.json")
    args = parser.parse_args(argv)
    if args.cold < 1 or args.warm < 1 or args.corrections < 1:
        raise ValueError("--cold, --warm and --corrections must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    config: dict[str, Any] = {}
    if args.refit_delay is not None:
        config["refit_delay_s"] = args.refit_delay
    if args.priors is not None:
        config["priors"] = args.priors
    from ml_backend.config import BackendConfig

    before = machine_load()
    projects = [args.episodes] + ([args.also] if args.also else [])
    results = []
    for names in projects:
        episodes = cached_episodes(names)
        result = measure(
            episodes,
            cold=args.cold,
            warm=args.warm,
            corrections=args.corrections,
            wait_s=args.wait,
            **config,
        )
        result["load_1m_after"] = machine_load()["load_1m"]
        results.append(result)
    document = {
        "benchmark": "HTTP backend latency: /predict of a whole episode, correction -> proposals",
        "machine": {"before": before, "after": machine_load()},
        "settings": {
            "refit_delay_s": config.get("refit_delay_s", BackendConfig.refit_delay_s),
            "priors": str(config.get("priors") or "packaged"),
        },
        "targets": {"predict_s": TARGET_PREDICT_S, "fit_visible_median_s": TARGET_FIT_VISIBLE_S},
        "projects": results,
    }
    atomic_write_json(args.out, document)
    print(
        "| project | lines | cold /predict s (first) | warm /predict s "
        "| fit → version s | fit → /predict shows it s | backend fit s |"
    )
    print("|" + "---|" * 7)
    for r in results:
        cold_median = r["predict_cold_s"]["median"]
        print(
            f"| {' + '.join(r['episodes'])} | {r['lines']} | {cold_median} "
            f"({r['predict_cold_first_in_process_s']}) | {r['predict_warm_s']['median']} "
            f"| {_median(r['fit_version_visible_s'])} | {_median(r['fit_visible_in_predict_s'])} "
            f"| {r['backend_fit_s_mean']} |"
        )
    print(
        f"targets: /predict <= {TARGET_PREDICT_S} s, fit visible <= {TARGET_FIT_VISIBLE_S} s "
        f"median; load average (1 min) {before['load_1m']} before, "
        f"{document['machine']['after']['load_1m']} after, on {before['cpus']} CPUs; "
        f"written to {args.out}"
    )
    return 0


def _median(stats: dict[str, Any] | None) -> Any:
    return "-" if stats is None else stats["median"]


if __name__ == "__main__":
    raise SystemExit(main())
