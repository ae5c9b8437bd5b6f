"""Whole-import speed: the feature pass after the media pass (before) against during it (now).

Run ``python -m bench.bench_import_features [--repeats 3] [--minutes 24] [--cues 400]``.

It uses the same cached synthetic episode as :mod:`bench.bench_import` (made once into
``.cache/bench-import/``) and times, interleaved and each in a fresh Python process, what
``speaker-grouping import`` runs per episode (`prepare_episode`):

- ``sequential``: the media (probe, clips, frames, tasks.json), then the default features
  (resemblyzer voice, anime-colour image, silero-vad quality) computed from the files, model
  loads included: the import before the overlap (``overlap=False``);
- ``overlapped``: the same, with the features computed from the clips and frames in memory
  while the frame walk runs (``overlap=True``, what ``import`` does now);
- ``today``: the code before this benchmark's changes, run from a copy of that commit
  (``--today-tree DIR``, e.g. ``git archive 46c0cd4 | tar -x -C DIR``) by its own child
  (``--child media+features``): media, then features from the files, with the frame walk and
  audio decode as they were;
- ``media``: ``import --no-features`` (``--approaches media,...``), the floor;
- ``overlapped-all``: overlapped with the voice encoder and the VAD also running during the
  frame walk (`ml_backend.features.feed.DURING_MEDIA` = every kind), not after it;
- ``overlapped-dec1``: overlapped with one decoder thread per frame walk (an experiment).

For each, the table gives wall and CPU seconds (user + sys, worker processes included), how
many cores were busy on average (CPU ÷ wall), peak memory, and when each step ran (first to
last progress report, seconds from the start). Contention from other jobs moves wall times
more than CPU seconds, and hits interleaved approaches alike, so read the ratios. The table
goes to stdout (markdown) and, with the raw runs, to ``DIR/import_features_overlap.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPROACHES = ("today", "sequential", "overlapped", "media", "overlapped-all", "overlapped-dec1")
DEFAULT_APPROACHES = ("sequential", "overlapped")
BASELINES = ("today", "sequential")
"""The first of these that ran is what the ratios divide by."""
STEPS = ("clips", "frames", "hash", "quality", "voice", "image")


class _StepTimer:
    """A progress hook that keeps each step's first and last report, seconds from ``began``."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.spans: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def __call__(self, step: str, *, completed: int, total: int) -> None:
        now = time.perf_counter() - self.began
        with self._lock:
            span = self.spans.setdefault(step, [now, now])
            span[1] = now


THREAD_GROUPS = (
    ("av:", "H.264 decoder threads"),
    ("MainThread", "main: frame walk 1, tasks"),
    ("frames", "frame walk 2"),
    ("jpeg", "RGB + JPEG (+ sink)"),
    ("clips", "audio decode + clips"),
    ("load-models", "model loading"),
    ("feed-voice", "voice (feed)"),
    ("feed-quality", "quality (feed)"),
    ("quality", "quality (from files)"),
    ("feed-image", "image dispatch (feed)"),
    ("resemblyzer", "resemblyzer workers"),
)
"""Thread name prefixes (FFmpeg's own names, else Python's) → the part of the import they do."""


class _ThreadCpu:
    """CPU seconds per thread of this process, sampled from /proc, grouped by what they do.

    A thread's last sample is kept after it exits, so up to one interval of CPU per
    short-lived thread is missed; the process total comes from getrusage, not from here.
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.seconds: dict[int, tuple[str, float]] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> _ThreadCpu:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        self.names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id})
        for task in Path("/proc/self/task").iterdir():
            try:
                comm = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited between listing and reading
                continue
            tid = int(task.name)
            name = comm if comm.startswith("av:") else self.names.get(tid, comm)
            self.seconds[tid] = (name, (int(fields[11]) + int(fields[12])) / self._tick)

    def grouped(self) -> dict[str, float]:
        groups: dict[str, float] = {}
        for name, seconds in self.seconds.values():
            group = next((g for prefix, g in THREAD_GROUPS if name.startswith(prefix)), "other")
            groups[group] = round(groups.get(group, 0.0) + seconds, 2)
        return dict(sorted(groups.items(), key=lambda item: -item[1]))


def child_main(approach: str, video: Path, srt: Path, out: Path) -> None:
    """One measured import, as `speaker-grouping import` runs it; prints one JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    began = time.perf_counter()
    from ml_backend.features.prepare import prepare_episode

    if approach == "overlapped-dec1":
        import importers.media.frames

        importers.media.frames.DECODER_THREADS = 1
    if approach == "overlapped-all":
        import ml_backend.features.feed

        ml_backend.features.feed.DURING_MEDIA = ml_backend.features.feed.KINDS
    timer = _StepTimer(began)
    extractor = None
    if approach != "media":
        from ml_backend.features.extractor import FeatureExtractor

        extractor = FeatureExtractor.build(None, None)
    with _ThreadCpu() as threads:
        try:
            done = prepare_episode(
                video, out, srt, None, extractor, timer, overlap=approach != "sequential"
            )
        finally:
            if extractor is not None:
                extractor.close()
    wall = time.perf_counter() - began
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = done.media
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    print(
        json.dumps(
            {
                "wall_s": wall,
                "media_s": max(timer.spans.get(step, [0, 0])[1] for step in ("clips", "frames")),
                "cpu_s": cpu,
                "cores_busy": cpu / wall,
                "peak_rss_mb": own_peak_rss_kib() / 1024,
                "worker_peak_rss_mb": children.ru_maxrss / 1024,
                "thread_cpu_s": threads.grouped(),
                "worker_processes_cpu_s": children.ru_utime + children.ru_stime,
                "lines": len(result.tasks),
                "computed": done.features.computed if done.features is not None else {},
                "steps": {step: [round(t, 2) for t in span] for step, span in timer.spans.items()},
            }
        )
    )


def _commit(tree: Path) -> str | None:
    done = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None


def own_peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(
    approach: str, video: Path, srt: Path, cache: Path, today_tree: Path | None = None
) -> dict:
    root, child = ROOT, approach
    if approach == "today":  # the old code's own child, which timed exactly this
        root, child = today_tree, "media+features"
    with tempfile.TemporaryDirectory(dir=cache, prefix="work-") as work:
        command = [sys.executable, "-m", "bench.bench_import_features", "--child", child]
        command += ["--video", str(video), "--srt", str(srt), "--workdir", work]
        env = {**os.environ, "PYTHONPATH": str(root)}
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=root, env=env, check=False
        )
        if done.returncode:
            raise SystemExit(f"{approach} failed:\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(runs: dict[str, list[dict]], minutes: float, cues: int) -> str:
    baseline = next((name for name in BASELINES if name in runs), next(iter(runs)))
    base_wall = statistics.median(run["wall_s"] for run in runs[baseline])
    base_cpu = statistics.median(run["cpu_s"] for run in runs[baseline])
    rows = [
        f"| import | wall s (runs) | ÷ {baseline} | × real time | CPU s | ÷ {baseline} | "
        "cores busy | peak RSS MB | per step (last run): first → last s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, items in runs.items():
        wall = statistics.median(run["wall_s"] for run in items)
        cpu = statistics.median(run["cpu_s"] for run in items)
        busy = statistics.median(run["cpu_s"] / run["wall_s"] for run in items)
        rss = f"{max(run['peak_rss_mb'] for run in items):.0f}"
        workers = max(run["worker_peak_rss_mb"] for run in items)
        if workers > 1:
            rss += f" (+ workers {workers:.0f} each)"
        last = items[-1]["steps"]
        steps = "; ".join(
            f"{step} {last[step][0]:.0f} → {last[step][1]:.0f}" for step in STEPS if step in last
        )
        runs_s = ", ".join(f"{run['wall_s']:.1f}" for run in items)
        # Ratios of medians to the same-run baseline; per-repeat ratios pair runs that ran
        # back to back under about the same load.
        paired = [
            run["wall_s"] / base["wall_s"] for run, base in zip(items, runs[baseline], strict=False)
        ]
        rows.append(
            f"| {name} | {wall:.1f} ({runs_s}) | {wall / base_wall:.2f} "
            f"(per repeat {', '.join(f'{r:.2f}' for r in paired)}) | {minutes * 60 / wall:.0f}× | "
            f"{cpu:.1f} | {cpu / base_cpu:.2f} | {busy:.2f} | {rss} | {steps} |"
        )
    title = f"{minutes:g}-minute 720p episode, {cues} lines; medians of {len(runs[baseline])} runs"
    return title + "\n\n" + "\n".join(rows) + "\n\n" + thread_table(runs)


def thread_table(runs: dict[str, list[dict]]) -> str:
    """Median CPU seconds per part of the import (threads grouped by name), per approach."""
    names = list(runs)
    groups: list[str] = []
    for items in runs.values():
        for run in items:
            groups += [g for g in run.get("thread_cpu_s", {}) if g not in groups]
    groups.append("image worker processes")
    rows = [
        "| CPU s by part (median) | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for group in groups:
        cells = []
        for name in names:
            if not all("thread_cpu_s" in run for run in runs[name]):
                cells.append("–")  # the `today` child does not sample its threads
                continue
            if group == "image worker processes":
                values = [run["worker_processes_cpu_s"] for run in runs[name]]
            else:
                values = [run["thread_cpu_s"].get(group, 0.0) for run in runs[name]]
            cells.append(f"{statistics.median(values):.1f}")
        rows.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=24)
    parser.add_argument("--cues", type=int, default=400)
    parser.add_argument(
        "--approaches",
        default=",".join(DEFAULT_APPROACHES),
        help=f"comma-separated, from {', '.join(APPROACHES)}; the first listed runs first in "
        f"each round (default: {','.join(DEFAULT_APPROACHES)})",
    )
    parser.add_argument(
        "--today-tree",
        type=Path,
        help="a copy of the code before the overlap, for the `today` approach",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--child", choices=APPROACHES, help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--srt", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, Path(args.video), Path(args.srt), Path(args.workdir))
        return

    from bench.bench_import import CACHE, episode_files

    video, srt, _ = episode_files(args.minutes, args.cues)
    approaches = tuple(name.strip() for name in args.approaches.split(",") if name.strip())
    unknown = [name for name in approaches if name not in APPROACHES]
    if unknown or not approaches:
        parser.error(f"unknown approach(es) {unknown}; choose from {', '.join(APPROACHES)}")
    if "today" in approaches and not (args.today_tree and args.today_tree.is_dir()):
        parser.error("the `today` approach needs --today-tree DIR, a copy of the older code")
    runs: dict[str, list[dict]] = {name: [] for name in approaches}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for name in approaches:  # interleaved, so background load hits both alike
            result = measure(name, video, srt, CACHE, args.today_tree)
            result["load_average_1min"] = os.getloadavg()[0]
            runs[name].append(result)
            print(f"run {repeat + 1} {name}: {json.dumps(result)}", file=sys.stderr)
    table = markdown(runs, args.minutes, args.cues)
    print(table)
    report = {
        "video": video.name,
        "cues": args.cues,
        "commit": _commit(ROOT),
        "today_tree": str(args.today_tree) if "today" in approaches else None,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "runs": runs,
        "markdown": table,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "import_features_overlap.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
