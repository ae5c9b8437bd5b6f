"""The simulated annotation loop (docs/architecture.md §5) through the real HTTP backend, with the
research prototype's 1-NN workflow as the baseline, on the same episodes and embeddings.

    speaker-grouping bench loop [--episodes hard-seed1 standard-seed2 ...] [--out FILE]
        [--real-voices evaluation] [--wrong-answers 0 0.05] [--seed 1] [--direct]

**Ours.** The backend (`ml_backend.server.create_app`) is served by werkzeug on 127.0.0.1 in a
thread, with a fresh MODEL_DIR per episode and no Label Studio (nothing is pushed). Each task
of the episode's ``tasks.json`` gets a running task id. The simulated annotator asks
``/predict`` for the lines not yet reviewed and reviews them in score order, lowest first:

- a right proposal is accepted: 0 corrections, but submitted as an ``ANNOTATION_CREATED``
  webhook all the same, as Label Studio would;
- a wrong one (a numbered speaker such as "Speaker 7" is always wrong: the first line of every
  character needs its name) is corrected: 1 correction, a webhook with the true name (the
  ``character`` column of truth.csv) in the ``speaker`` choices, or typed into ``new_speaker``
  while the name is not yet a choice (a name becomes a choice once a prediction has shown it,
  since the backend appends the names it proposes to the project's config). The annotator then
  waits until a refit that includes every submitted label is visible as a new model version
  on ``/versions`` (at most ``--wait`` seconds), and asks ``/predict`` again.

The loop stops when every proposal not yet reviewed is right, checked once more after the
backend has fitted every submitted label, so that it ends with every line's proposal right.
The HTTP protocol does not say which labels a model version was fitted on, so that one check
reads the project's state in-process (``fitted_labels``); everything else goes over HTTP.

**The prototype.** Lines in file order, no scores; a line's proposal is the label of its
nearest reviewed line (cosine on the stored voice embeddings), none before the first review;
wrong ones are corrected, and the loop stops when every remaining line's 1-NN proposal is
right.

**Annotator mistakes** (``--wrong-answers 0 0.05 --seed 1``): in each run after the first, that
share of reviews is answered with a wrong name (another name already given, else another
character), drawn with the seed; the line keeps the wrong label. Every run records the loop
metrics of `bench.loop_metrics`: calibration of the shown scores, churn, how each new speaker's
first line was shown, and how many lines each wrong answer changed. ``--direct`` runs ours
in-process (`simulate_direct`), ``--real-voices SPLIT`` adds the real-voice episodes.

Both report corrections and reviews per 100 lines. Targets (issue 6): on ``hard`` ours needs at
most half the prototype's corrections per 100 lines; on ``standard`` at most 5. Results go to
``bench/results/loop.json`` with the machine's load, since walls on a shared machine vary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from foundation.atomic import atomic_write_json
from foundation.layout import line_index, tasks_path

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
PROJECT = 1
POLL_S = 0.01
DEFAULT_WAIT_S = 30.0
TARGET_HARD_RATIO = 0.5
TARGET_STANDARD_PER_100 = 5.0
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------- episodes


@dataclass(frozen=True)
class LoopEpisode:
    """One imported episode with its ground truth."""

    name: str
    preset: str
    imported: Path
    """The importer's folder: ``tasks.json`` and ``features.npz``."""
    truth: Mapping[int, str]
    """Cue index -> character (truth.csv's ``character`` column)."""

    @classmethod
    def from_folder(cls, name: str, imported: Path, truth_csv: Path, *, preset: str = "") -> Any:
        from bench.voice_accuracy import read_truth

        truth = {row.index: row.character for row in read_truth(truth_csv)}
        return cls(name, preset or name.split("-")[0], Path(imported), truth)

    def tasks(self, first_id: int = 1) -> list[dict[str, Any]]:
        """The episode's tasks as Label Studio holds them: ``{"id", "data"}``, ids running."""
        raw = json.loads(tasks_path(self.imported).read_text(encoding="utf-8"))
        tasks = [{"id": first_id + k, "data": task["data"]} for k, task in enumerate(raw)]
        unknown = [t["data"]["index"] for t in tasks if t["data"]["index"] not in self.truth]
        if unknown:
            raise ValueError(f"{self.name}: lines {unknown[:5]} have no row in truth.csv")
        return tasks

    def true_name(self, task: Mapping[str, Any]) -> str:
        return self.truth[int(task["data"]["index"])]


_NAME = re.compile(r"^(?P<preset>[a-z]+)-seed(?P<seed>\d+)$")


def cached_episodes(names: Sequence[str] | None, *, build: bool = False) -> list[LoopEpisode]:
    """Named cache episodes (``hard-seed1``), or the evaluation split without the season.

    Episodes not built yet are skipped with a warning unless ``build`` (minutes of CPU each).
    """
    from bench import episode_cache

    if names:
        wanted = []
        for name in names:
            match = _NAME.match(name)
            if match is None:
                raise ValueError(f"episode {name!r} is not '<preset>-seed<N>' (e.g. hard-seed1)")
            wanted.append((match["preset"], int(match["seed"])))
    else:
        wanted = [(p, s) for p, s in episode_cache.EVALUATION if p != "season"]
    chosen = []
    for preset, seed in wanted:
        folder = episode_cache.CACHE / f"{preset}-seed{seed}"
        if not build and not (folder / episode_cache.READY).is_file():
            logger.warning("%s-seed%d is not built yet; skipped", preset, seed)
            continue
        for cached in episode_cache.episodes(preset, seed):
            chosen.append(
                LoopEpisode.from_folder(cached.name, cached.imported, cached.truth, preset=preset)
            )
    if not chosen:
        raise FileNotFoundError("no benchmark episode is built yet (python -m bench.episode_cache)")
    return chosen


def real_voice_episodes(split: str) -> list[LoopEpisode]:
    """The real-voice episodes of ``split`` (training, evaluation, all), built on first use;
    preset ``real-train`` or ``real-eval``."""
    from bench.real_voices.episodes import EPISODES, built_episodes

    return [
        LoopEpisode.from_folder(
            e.name,
            e.imported,
            e.truth,
            preset="real-train" if EPISODES[e.name].split == "training" else "real-eval",
        )
        for e in built_episodes(split)
    ]


# ---------------------------------------------------------------------------- the backend


class RunningBackend:
    """`create_app(config)` served by werkzeug on 127.0.0.1 in a thread."""

    def __init__(self, config: Any) -> None:
        from werkzeug.serving import make_server

        from ml_backend.server import create_app

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.config = config
        self.app = create_app(config)
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def model(self, project: int = PROJECT) -> Any:
        return self.app.extensions["speaker_grouping"].model(project)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(10)
        self.app.extensions["speaker_grouping"].close()

    def __enter__(self) -> RunningBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def backend_config(model_dir: Path, media_root: Path, **overrides: Any) -> Any:
    """A backend without Label Studio: local media under the import folder, no pushes."""
    from ml_backend.config import BackendConfig

    return BackendConfig(
        model_dir=model_dir, media_roots=(media_root,), push_predictions=False, **overrides
    )


@dataclass(frozen=True)
class Shown:
    """What a prediction shows the annotator for one task."""

    name: str
    score: float
    version: str


class Annotator:
    """A simulated annotator talking to the backend over HTTP, as Label Studio would.

    Keeps the project's speaker list as Label Studio would hold it (every name a prediction has
    shown), the labels it submitted, and the refit latencies it waited through.
    """

    def __init__(self, backend: RunningBackend, *, project: int = PROJECT) -> None:
        import requests

        self.backend = backend
        self.project = project
        self.http = requests.Session()
        self.listed: set[str] = set()
        self.submitted: dict[str, str] = {}
        self.typed_names = 0
        self.predict_s: list[float] = []
        self.refit_s: list[float] = []
        self.refit_timeouts = 0
        self._next_annotation = 1

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        answer = self.http.post(f"{self.backend.url}{path}", json=body, timeout=120)
        if answer.status_code != 200:
            raise RuntimeError(f"{path} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()

    def setup(self) -> str:
        return self._post("/setup", {"project": self.project, "schema": self._config()})[
            "model_version"
        ]

    def version(self) -> str:
        answer = self.http.get(
            f"{self.backend.url}/versions", params={"project": self.project}, timeout=30
        )
        answer.raise_for_status()
        return answer.json()["versions"][0]

    def _config(self) -> str:
        from label_config import load_config

        return load_config(sorted(self.listed))

    def predict(self, tasks: Sequence[Mapping[str, Any]]) -> dict[int, Shown]:
        """Task id -> what its prediction shows; every task must get one."""
        body = {
            "tasks": list(tasks),
            "project": self.project,
            "label_config": self._config(),
            "params": {"login": None, "password": None, "context": None},
        }
        began = time.perf_counter()
        answer = self._post("/predict", body)
        self.predict_s.append(time.perf_counter() - began)
        shown = {}
        for task, result in zip(tasks, answer["results"], strict=True):
            if not result:
                errors = answer.get("errors") or [{}]
                raise RuntimeError(
                    f"no prediction for task {task['id']} ({len(errors)} task(s) failed; "
                    f"first: {errors[0].get('error')})"
                )
            name = result["result"][0]["value"]["choices"][0]
            shown[int(task["id"])] = Shown(name, float(result["score"]), result["model_version"])
            self.listed.add(name)
        return shown

    def annotate(self, task: Mapping[str, Any], name: str, shown: str) -> dict[str, Any]:
        """Submit ``name`` for the task, whose prediction showed ``shown`` pre-filled."""
        region = {"from_name": "speaker", "to_name": "audio", "type": "choices"}
        result: list[dict[str, Any]]
        if name in self.listed:
            result = [{**region, "value": {"choices": [name]}}]
        else:
            # Not a choice yet: the drop-down keeps the pre-filled proposal, the name is typed.
            self.typed_names += 1
            result = [
                {**region, "value": {"choices": [shown]}},
                {
                    "from_name": "new_speaker",
                    "to_name": "audio",
                    "type": "textarea",
                    "value": {"text": [name]},
                },
            ]
        annotation_id = self._next_annotation
        self._next_annotation += 1
        stamp = (_EPOCH + timedelta(seconds=annotation_id)).isoformat().replace("+00:00", "Z")
        body = {
            "action": "ANNOTATION_CREATED",
            "annotation": {
                "id": annotation_id,
                "task": int(task["id"]),
                "completed_by": 1,
                "result": result,
                "was_cancelled": False,
                "ground_truth": False,
                "lead_time": 3.0,
                "created_at": stamp,
                "updated_at": stamp,
            },
            "task": {"id": int(task["id"]), "data": task["data"], "project": self.project},
            "project": {"id": self.project},
        }
        answer = self._post("/webhook", body)
        if answer.get("status") != "queued":
            raise RuntimeError(f"webhook not taken: {answer}")
        self.submitted[str(task["data"]["line_id"])] = name
        # The refit proposes the name on this very line, and the backend appends every name it
        # proposes to the project's config: from now on it is a choice.
        self.listed.add(name)
        return answer

    def wait_fitted(self, before: str | None, began: float, *, limit_s: float) -> float | None:
        """Seconds from ``began`` until a version other than ``before`` that was fitted on every
        submitted label shows on ``/versions``; None after ``limit_s`` (counted as a timeout)."""
        state = self.backend.model(self.project).state
        while True:
            version = self.version()
            if version != before or before is None:
                fitted = state.fitted_labels
                if all(fitted.get(k) == v for k, v in self.submitted.items()):
                    return time.perf_counter() - began
            if time.perf_counter() - began > limit_s:
                self.refit_timeouts += 1
                logger.warning("no refit with every label after %.0f s", limit_s)
                return None
            time.sleep(POLL_S)


# ---------------------------------------------------------------------------- the two loops


@dataclass
class LoopResult:
    method: str
    lines: int
    reviews: int
    corrections: int
    wall_s: float
    typed_names: int = 0
    refits: int = 0
    refit_timeouts: int = 0
    refit_s: list[float] = field(default_factory=list)
    predict_s: list[float] = field(default_factory=list)
    final_wrong: int | None = None
    """Lines whose proposal is wrong once the loop stopped (re-asked after the last refit)."""
    mistakes: int = 0
    """Answers the simulated annotator got wrong on purpose (``--wrong-answers``)."""
    wrong_labels: int = 0
    """Labels left wrong when the loop stopped."""
    metrics: dict[str, Any] | None = None
    """Calibration, churn, new speakers and blast radius (`bench.loop_metrics`), if tracked."""

    @property
    def corrections_per_100(self) -> float:
        return 100.0 * self.corrections / self.lines if self.lines else 0.0

    @property
    def reviews_per_100(self) -> float:
        return 100.0 * self.reviews / self.lines if self.lines else 0.0

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document.pop("refit_s")
        document.pop("predict_s")
        document["corrections_per_100"] = round(self.corrections_per_100, 2)
        document["reviews_per_100"] = round(self.reviews_per_100, 2)
        document["wall_s"] = round(self.wall_s, 2)
        document["refit_visible_s"] = _stats(self.refit_s)
        document["predict_s"] = _stats(self.predict_s)
        return document


def _stats(values: Sequence[float]) -> dict[str, Any] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
    }


def run_ours(
    episode: LoopEpisode,
    *,
    work_dir: Path | None = None,
    wait_s: float = DEFAULT_WAIT_S,
    first_task_id: int = 1,
    wrong_answers: float = 0.0,
    seed: int = 0,
    **config: Any,
) -> LoopResult:
    """The simulated annotator against a fresh backend (MODEL_DIR under ``work_dir``).

    ``wrong_answers``: the share of reviews answered with a wrong name (drawn with ``seed``),
    as in `simulate_direct`; the loop metrics (`bench.loop_metrics`) are always recorded."""
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="bench-loop-") as scratch:
        settings = backend_config(Path(scratch) / "models", episode.imported.parent, **config)
        with RunningBackend(settings) as backend:
            annotator = Annotator(backend)
            result = _annotate_in_score_order(
                episode, annotator, first_task_id, wait_s, wrong_answers=wrong_answers, seed=seed
            )
    result.wall_s = time.perf_counter() - began
    return result


def _annotate_in_score_order(
    episode: LoopEpisode,
    annotator: Annotator,
    first_task_id: int,
    wait_s: float,
    *,
    wrong_answers: float = 0.0,
    seed: int = 0,
) -> LoopResult:
    from bench.loop_metrics import LoopTracker
    from label_config import UNKNOWN_CHOICE

    tasks = {t["id"]: t for t in episode.tasks(first_task_id)}
    truth = {task_id: episode.true_name(task) for task_id, task in tasks.items()}
    line_of = {task_id: str(task["data"]["line_id"]) for task_id, task in tasks.items()}
    tracker = LoopTracker({line_of[t]: name for t, name in truth.items()})
    rng = np.random.default_rng(seed)
    characters = sorted(set(truth.values()))
    given: dict[int, str] = {}
    remaining = set(tasks)
    reviews = corrections = refits = mistakes = 0
    annotator.setup()

    def seen(name: str) -> str | None:
        return None if name == UNKNOWN_CHOICE else name

    def ask() -> tuple[dict[int, Shown], list[int]]:
        shown = annotator.predict([tasks[t] for t in sorted(remaining)])
        order = sorted(remaining, key=lambda t: (shown[t].score, tasks[t]["data"]["index"]))
        tracker.observe({line_of[t]: (seen(shown[t].name), shown[t].score) for t in remaining})
        return shown, order

    shown, order = ask()
    while remaining:
        if all(shown[t].name == truth[t] for t in remaining):
            # Accepted labels since the last refit may still change proposals: look again
            # once the backend has fitted them all, and stop only if nothing turned wrong.
            if annotator.wait_fitted(None, time.perf_counter(), limit_s=wait_s) is None:
                break
            shown, order = ask()
            if all(shown[t].name == truth[t] for t in remaining):
                break
            continue
        task_id = order.pop(0)
        remaining.discard(task_id)
        reviews += 1
        proposal = shown[task_id]
        label = truth[task_id]
        if wrong_answers > 0 and rng.random() < wrong_answers:
            others = sorted(set(given.values()) - {label}) or [c for c in characters if c != label]
            if others:
                label = str(others[int(rng.integers(len(others)))])
                mistakes += 1
        given[task_id] = label
        tracker.answered(line_of[task_id], seen(proposal.name), label)
        if proposal.name == label:
            annotator.annotate(tasks[task_id], proposal.name, proposal.name)
            continue
        corrections += 1
        sent = time.perf_counter()
        answer = annotator.annotate(tasks[task_id], label, proposal.name)
        waited = annotator.wait_fitted(answer.get("model_version"), sent, limit_s=wait_s)
        if waited is not None:
            annotator.refit_s.append(waited)
            refits += 1
        if remaining:
            shown, order = ask()
    final = annotator.predict(list(tasks.values()))
    final_wrong = sum(
        final[t].name != truth[t] for t in tasks if given.get(t, truth[t]) == truth[t]
    )
    return LoopResult(
        method="ours",
        lines=len(tasks),
        reviews=reviews,
        corrections=corrections,
        wall_s=0.0,
        typed_names=annotator.typed_names,
        refits=refits,
        refit_timeouts=annotator.refit_timeouts,
        refit_s=list(annotator.refit_s),
        predict_s=list(annotator.predict_s),
        final_wrong=final_wrong,
        mistakes=mistakes,
        wrong_labels=sum(given[t] != truth[t] for t in given),
        metrics=tracker.summary(),
    )


ORDERS = ("score", "representative", "unreviewed-first")
"""Annotator-side review orders of `simulate_direct` (the backend's own order is the score's,
see `ml_backend.grouping.scoring`):

- ``score``: lowest score first ("Doubt first" in Label Studio);
- ``representative``: each cluster's most typical line (highest score) first, biggest cluster
  first, then the second most typical of each, and so on, as the prototype's file order
  effectively gives;
- ``unreviewed-first``: the most typical line of every cluster nobody has reviewed a line of
  yet, biggest first, then lowest score first (a mixture).
"""


def _review_key(
    order: str,
    shown: Mapping[str, Any],
    remaining: set[str],
    labels: Mapping[str, str],
    position: Mapping[str, int],
) -> Callable[[str], tuple]:
    """Sort key over line ids for ``order`` (see `ORDERS`); ties by line order."""
    if order == "score":
        return lambda k: (shown[k].score, position[k])
    members: dict[int, list[str]] = {}
    for k in remaining:
        members.setdefault(shown[k].cluster, []).append(k)
    rank: dict[str, int] = {}
    for cluster, ids in members.items():
        ids.sort(key=lambda k: (-shown[k].score, position[k]))
        for place, k in enumerate(ids):
            rank[k] = place if cluster >= 0 else 10**6
    size = {cluster: len(ids) for cluster, ids in members.items()}
    if order == "representative":
        return lambda k: (rank[k], -size[shown[k].cluster], position[k])
    reviewed_clusters = {shown[k].cluster for k in labels if k in shown}
    return lambda k: (
        (0, -size[shown[k].cluster], position[k])
        if rank[k] == 0 and shown[k].cluster not in reviewed_clusters
        else (1, shown[k].score, position[k])
    )


def simulate_direct(
    episode: LoopEpisode,
    *,
    grouper_options: Mapping[str, Any] | None = None,
    wrong_answers: float = 0.0,
    seed: int = 0,
    order: str = "score",
    track: bool = False,
) -> LoopResult:
    """The same annotator rules as `run_ours`, in-process on `SpeakerGrouper` (no HTTP, no
    refit delay): seconds instead of minutes per episode, for tuning on training episodes.

    Lowest score first (or another of `ORDERS`); a right proposal is accepted and becomes a
    label; a wrong one (a numbered speaker or no speaker is always wrong) is corrected, becomes
    a label, and is followed by fit + propose on every label so far, given the proposals shown
    before (the bounded blast radius, `ml_backend.grouping.stability`). Stops when every
    unreviewed proposal is right, after a last fit on every label.

    ``wrong_answers``: the share of reviews where the annotator gives a wrong name (drawn with
    ``seed``): another name already given, or else another character of the episode. A wrong
    answer that differs from the proposal counts as a correction and triggers a refit, as a
    real one would; the line keeps the wrong label (nobody reviews a line twice). ``track``
    records the loop's calibration, churn, new-speaker and blast-radius figures
    (`bench.loop_metrics`) into ``LoopResult.metrics``.
    """
    from bench.loop_metrics import LoopTracker
    from ml_backend.episode_lines import load_lines
    from ml_backend.grouping import SpeakerGrouper, SpeakerNumbers
    from ml_backend.grouping.params import params_for_priors
    from ml_backend.grouping.priors import load_priors

    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    began = time.perf_counter()
    lines = load_lines([episode.imported])
    truth = [episode.truth[line_index(line_id)] for line_id in lines.line_ids]
    order_key = {line_id: k for k, line_id in enumerate(lines.line_ids)}
    numbers = SpeakerNumbers()
    labels: dict[str, str] = {}
    from ml_backend.config import ANNOTATION_PARAMS

    priors = load_priors()
    params = params_for_priors(priors).replace(**ANNOTATION_PARAMS, **dict(grouper_options or {}))
    refit_s: list[float] = []
    predict_s: list[float] = []
    right = dict(zip(lines.line_ids, truth, strict=True))
    tracker = LoopTracker(right) if track else None
    rng = np.random.default_rng(seed)
    characters = sorted(set(truth))
    previous: dict[str, Any] = {}

    def ask() -> dict[str, Any]:
        nonlocal numbers
        t0 = time.perf_counter()
        grouper = SpeakerGrouper(params, priors=priors).fit(lines, labels)
        t1 = time.perf_counter()
        grouping = grouper.propose(lines, labels, numbers, previous=previous)
        proposals, numbers = grouping.proposals, grouping.speaker_numbers
        refit_s.append(t1 - t0)
        predict_s.append(time.perf_counter() - t1)
        out = {p.line_id: p for p in proposals}
        previous.clear()
        previous.update(out)
        if tracker is not None:
            tracker.observe({k: (out[k].speaker, out[k].score) for k in remaining})
        return out

    remaining = set(lines.line_ids)
    reviews = corrections = mistakes = 0
    shown = ask()
    fitted_all = True
    while remaining:
        if all(shown[k].speaker == right[k] for k in remaining):
            if fitted_all:
                break
            shown, fitted_all = ask(), True
            continue
        line_id = min(remaining, key=_review_key(order, shown, remaining, labels, order_key))
        remaining.discard(line_id)
        reviews += 1
        answer = right[line_id]
        if wrong_answers > 0 and rng.random() < wrong_answers:
            given = sorted(set(labels.values()) - {answer}) or [
                c for c in characters if c != answer
            ]
            if given:
                answer = str(given[int(rng.integers(len(given)))])
                mistakes += 1
        labels[line_id] = answer
        if tracker is not None:
            tracker.answered(line_id, shown[line_id].speaker, answer)
        if shown[line_id].speaker == answer:
            fitted_all = False
            continue
        corrections += 1
        shown, fitted_all = ask(), True
    final_wrong = sum(shown[k].speaker != right[k] for k in lines.line_ids if k not in labels)
    result = LoopResult(
        method="direct",
        lines=len(truth),
        reviews=reviews,
        corrections=corrections,
        wall_s=time.perf_counter() - began,
        refits=len(refit_s),
        refit_s=refit_s,
        predict_s=predict_s,
        final_wrong=final_wrong,
        mistakes=mistakes,
        wrong_labels=sum(labels[k] != right[k] for k in labels),
    )
    if tracker is not None:
        result.metrics = tracker.summary()
    return result


def prototype_loop(voice: np.ndarray, truth: Sequence[str]) -> tuple[int, int, int]:
    """The prototype's workflow on ``voice : (n, d) float32`` (L2-normalised rows, file order).

    Returns (reviews, corrections, wrong proposals left when it stopped, always 0).
    """
    n = len(truth)
    codes = np.unique(np.asarray(truth, dtype=object), return_inverse=True)[1].reshape(-1)
    best_sim = np.full(n, -np.inf)
    best = np.full(n, -1)
    reviews = corrections = 0
    for i in range(n):
        if np.array_equal(best[i:], codes[i:]):
            break
        reviews += 1
        corrections += int(best[i] != codes[i])
        similarity = voice @ voice[i]
        closer = similarity > best_sim
        closer[i] = True
        best_sim[closer] = similarity[closer]
        best[closer] = codes[i]
    return reviews, corrections, int(np.sum(best[reviews:] != codes[reviews:]))


def run_prototype(episode: LoopEpisode) -> LoopResult:
    from ml_backend.episode_lines import load_lines

    began = time.perf_counter()
    lines = load_lines([episode.imported])
    names = [episode.truth[line_index(line_id)] for line_id in lines.line_ids]
    reviews, corrections, wrong = prototype_loop(lines.voice.astype(np.float64), names)
    return LoopResult(
        method="prototype",
        lines=len(names),
        reviews=reviews,
        corrections=corrections,
        wall_s=time.perf_counter() - began,
        final_wrong=wrong,
    )


# ---------------------------------------------------------------------------- report


def machine_load() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_1m": round(one, 2),
        "load_5m": round(five, 2),
        "load_15m": round(fifteen, 2),
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-preset means and the targets."""
    presets: dict[str, Any] = {}
    for preset in dict.fromkeys(row["preset"] for row in rows):
        chosen = [row for row in rows if row["preset"] == preset]

        def mean(method: str, key: str, chosen: list = chosen) -> float:
            return round(statistics.fmean(row[method][key] for row in chosen), 2)

        entry: dict[str, Any] = {
            "episodes": len(chosen),
            "ours_corrections_per_100": mean("ours", "corrections_per_100"),
            "ours_reviews_per_100": mean("ours", "reviews_per_100"),
            "prototype_corrections_per_100": mean("prototype", "corrections_per_100"),
            "prototype_reviews_per_100": mean("prototype", "reviews_per_100"),
        }
        if preset == "hard":
            limit = TARGET_HARD_RATIO * entry["prototype_corrections_per_100"]
            entry["target"] = f"ours <= {TARGET_HARD_RATIO:g} x prototype = {limit:.2f}"
            entry["target_met"] = entry["ours_corrections_per_100"] <= limit
        elif preset == "standard":
            entry["target"] = f"ours <= {TARGET_STANDARD_PER_100:g}"
            entry["target_met"] = entry["ours_corrections_per_100"] <= TARGET_STANDARD_PER_100
        presets[preset] = entry
    return presets


def table(rows: Sequence[Mapping[str, Any]], presets: Mapping[str, Any]) -> str:
    head = (
        "| episode | lines | ours corr/100 | ours rev/100 | proto corr/100 | proto rev/100 "
        "| typed | refit visible median s | wall s |"
    )
    out = [head, "|" + "---|" * 9]
    for row in rows:
        ours, proto = row["ours"], row["prototype"]
        refit = ours["refit_visible_s"]
        out.append(
            f"| {row['episode']} | {ours['lines']} | {ours['corrections_per_100']:.2f} "
            f"| {ours['reviews_per_100']:.2f} | {proto['corrections_per_100']:.2f} "
            f"| {proto['reviews_per_100']:.2f} | {ours['typed_names']} "
            f"| {refit['median'] if refit else '-'} | {ours['wall_s']:.0f} |"
        )
    for preset, entry in presets.items():
        met = entry.get("target_met")
        out.append(
            f"| **{preset} mean** ({entry['episodes']}) | | "
            f"{entry['ours_corrections_per_100']:.2f} | {entry['ours_reviews_per_100']:.2f} "
            f"| {entry['prototype_corrections_per_100']:.2f} "
            f"| {entry['prototype_reviews_per_100']:.2f} | | "
            f"| {'' if met is None else ('target met' if met else 'target MISSED')} |"
        )
    return "\n".join(out)


def run(
    episodes: Sequence[LoopEpisode],
    *,
    wait_s: float = DEFAULT_WAIT_S,
    report: Callable[[str], None] | None = None,
    wrong_answers: Sequence[float] = (0.0,),
    seed: int = 1,
    direct: bool = False,
    **config: Any,
) -> dict[str, Any]:
    """Both loops on every episode (ours once per share of wrong answers); the document
    written to loop.json. ``direct`` runs ours in-process (`simulate_direct`) instead of
    through the HTTP server."""
    load_before = machine_load()
    cpu_before = time.process_time()
    rows = []
    first_task_id = 1
    for episode in episodes:
        proto = run_prototype(episode)
        for share in wrong_answers:
            if direct:
                ours = simulate_direct(
                    episode,
                    grouper_options={
                        **dict(config.get("grouper_options") or {}),
                        **({"priors": config["priors"]} if config.get("priors") else {}),
                    },
                    wrong_answers=share,
                    seed=seed,
                    track=True,
                )
            else:
                ours = run_ours(
                    episode,
                    wait_s=wait_s,
                    first_task_id=first_task_id,
                    wrong_answers=share,
                    seed=seed,
                    **config,
                )
                first_task_id += ours.lines
            row = {
                "episode": episode.name,
                "preset": episode.preset + (f" {share:.0%} wrong" if share else ""),
                "wrong_answers": share,
                "ours": ours.to_json(),
                "prototype": proto.to_json(),
                "load_1m_after": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            if report is not None:
                report(
                    f"{episode.name} ({share:.0%} wrong): ours {ours.corrections} corrections / "
                    f"{ours.reviews} reviews of {ours.lines} lines, {ours.mistakes} wrong "
                    f"answers, in {ours.wall_s:.0f} s; prototype "
                    f"{proto.corrections} / {proto.reviews}"
                )
    presets = summarise(rows)
    from ml_backend.config import BackendConfig

    return {
        "benchmark": (
            "simulated annotation loop (docs/architecture.md §5), ours over HTTP vs prototype 1-NN"
        ),
        "machine": {
            "before": load_before,
            "after": machine_load(),
            "process_cpu_s": round(time.process_time() - cpu_before, 1),
        },
        "settings": {
            "refit_delay_s": config.get("refit_delay_s", BackendConfig.refit_delay_s),
            "priors": str(config.get("priors") or "packaged"),
            "wait_limit_s": wait_s,
            "wrong_answers": list(wrong_answers),
            "seed": seed,
            "direct": direct,
        },
        "episodes": rows,
        "presets": presets,
    }


def metrics_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The loop metrics (`bench.loop_metrics`) per episode and share of wrong answers."""
    out = [
        "| episode | wrong answers | corr/100 | rev/100 | mistakes | lines changed per wrong "
        "answer (median, max) | right→wrong per wrong answer | churn right→wrong /100 "
        "| wrong scored ≥ 0.9 | new speaker's first line as placeholder |",
        "|" + "---|" * 10,
    ]
    for row in rows:
        ours = row["ours"]
        m = ours.get("metrics")
        if not m:
            continue
        changed = m["blast"]["wrong_answer_changed"]
        broke = m["blast"]["wrong_answer_broke"]
        first = m["new_speakers"]
        out.append(
            f"| {row['episode']} | {row['wrong_answers']:.0%} | {ours['corrections_per_100']:.2f} "
            f"| {ours['reviews_per_100']:.2f} | {ours['mistakes']} "
            f"| {_median_max(changed)} | {_median_max(broke)} "
            f"| {m['churn']['right_to_wrong_per_100']:.1f} "
            f"| {m['calibration']['wrong_scored_high']}/{m['calibration']['wrong']} "
            f"| {first['first_line'].get('placeholder', 0)}/{first['speakers']} |"
        )
    return "\n".join(out)


def _median_max(values: Sequence[int]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):g}, {max(values)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="speaker-grouping bench loop", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--episodes",
        nargs="+",
        metavar="NAME",
        help="cache episodes such as hard-seed1 (default: the evaluation split, season left out)",
    )
    parser.add_argument(
        "--build", action="store_true", help="build cache episodes that are missing (slow)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "loop.json")
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, help="refit wait limit, s")
    parser.add_argument("--refit-delay", type=float, help="backend's burst delay (default 0.3 s)")
    parser.add_argument("--priors", type=Path, help="priors file (default: the packaged ones)")
    parser.add_argument(
        "--real-voices",
        choices=("training", "evaluation", "all"),
        help="add the real-voice episodes of this split (bench/real_voices; built on first use)",
    )
    parser.add_argument(
        "--wrong-answers",
        type=float,
        nargs="+",
        default=[0.0],
        metavar="SHARE",
        help="shares of reviews the annotator answers with a wrong name, each a run "
        "(e.g. 0 0.05; default 0)",
    )
    parser.add_argument("--seed", type=int, default=1, help="which reviews are answered wrong")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="run ours in-process (simulate_direct, same rules, no HTTP): seconds per episode",
    )
    args = parser.parse_args(argv)
    if any(not 0.0 <= share < 1.0 for share in args.wrong_answers):
        parser.error("--wrong-answers: each share must be in [0, 1)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    config: dict[str, Any] = {}
    if args.refit_delay is not None:
        config["refit_delay_s"] = args.refit_delay
    if args.priors is not None:
        config["priors"] = args.priors
    episodes = [] if args.real_voices and not args.episodes else None
    if episodes is None:
        episodes = cached_episodes(args.episodes, build=args.build)
    if args.real_voices:
        episodes += real_voice_episodes(args.real_voices)
    document = run(
        episodes,
        wait_s=args.wait,
        report=lambda line: print(line, flush=True),
        wrong_answers=args.wrong_answers,
        seed=args.seed,
        direct=args.direct,
        **config,
    )
    atomic_write_json(args.out, document)
    print(table(document["episodes"], document["presets"]))
    print(metrics_table(document["episodes"]))
    before, after = document["machine"]["before"], document["machine"]["after"]
    print(
        f"load average (1 min) {before['load_1m']} before, {after['load_1m']} after, "
        f"on {before['cpus']} CPUs; written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
