"""Whole-import speed: media only against media + the default features, as ``import`` runs them.

Run ``python -m bench.bench_import_features [--repeats 3] [--minutes 24] [--cues 400]``.

It uses the same cached synthetic episode as :mod:`bench.bench_import` (made once into
``.cache/bench-import/``) and times, interleaved and each in a fresh Python process:

- ``media``: ``import --no-features`` (probe, clips, frames, tasks.json);
- ``media+features``: ``import`` with the default features (resemblyzer voice, anime-colour
  image, silero-vad quality) written to ``features.npz``, model loads included.

For ``media+features`` the table also gives when each feature step ran (first to last
progress report, seconds from the start), so the slow step is visible. The table goes to
stdout (markdown) and, with the raw runs, to ``DIR/import_features_speed.json``.
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
APPROACHES = ("media", "media+features")
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


def child_main(approach: str, video: Path, srt: Path, out: Path) -> None:
    """One measured import; prints one JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    began = time.perf_counter()
    from importers.pipeline import import_episode

    timer = _StepTimer(began)
    extractor = None
    if approach == "media+features":
        from speaker_grouping.commands.features import FeatureExtractor

        extractor = FeatureExtractor.build(None, None)
        extractor.start_loading()  # as `import` does
    result = import_episode(video, subtitles=srt, out_dir=out, hook=timer)
    media_s = time.perf_counter() - began
    if extractor is not None:
        try:
            extractor.extract(result.episode_dir, hook=timer)
        finally:
            extractor.close()
    wall = time.perf_counter() - began
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "media_s": media_s,
                "cpu_s": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
                "peak_rss_mb": own_peak_rss_kib() / 1024,
                "worker_peak_rss_mb": children.ru_maxrss / 1024,
                "lines": len(result.tasks),
                "steps": {step: [round(t, 2) for t in span] for step, span in timer.spans.items()},
            }
        )
    )


def own_peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(approach: str, video: Path, srt: Path, cache: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=cache, prefix="work-") as work:
        command = [sys.executable, "-m", "bench.bench_import_features", "--child", approach]
        command += ["--video", str(video), "--srt", str(srt), "--workdir", work]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
        if done.returncode:
            raise SystemExit(f"{approach} failed:\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(runs: dict[str, list[dict]], minutes: float, cues: int) -> str:
    base = statistics.median(run["wall_s"] for run in runs["media"])
    rows = [
        "| import | wall s (runs) | features s | CPU s | peak RSS MB | per step: first → last s |",
        "|---|---|---|---|---|---|",
    ]
    for name, items in runs.items():
        wall = statistics.median(run["wall_s"] for run in items)
        features = wall - statistics.median(run["media_s"] for run in items)
        cpu = statistics.median(run["cpu_s"] for run in items)
        rss = f"{max(run['peak_rss_mb'] for run in items):.0f}"
        workers = max(run["worker_peak_rss_mb"] for run in items)
        if workers > 1:
            rss += f" (+ workers {workers:.0f} each)"
        last = items[-1]["steps"]
        steps = "; ".join(
            f"{step} {last[step][0]:.0f} → {last[step][1]:.0f}" for step in STEPS if step in last
        )
        runs_s = ", ".join(f"{run['wall_s']:.1f}" for run in items)
        rows.append(
            f"| {name} | {wall:.1f} ({runs_s}) | {features:.1f} | {cpu:.0f} | {rss} | {steps} |"
        )
    title = (
        f"{minutes:g}-minute 720p episode, {cues} lines; medians; features add "
        f"{statistics.median(run['wall_s'] for run in runs['media+features']) - base:.1f} s"
    )
    return title + "\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=24)
    parser.add_argument("--cues", type=int, default=400)
    parser.add_argument(
        "--only", choices=APPROACHES, help="time one approach (for quick checks on a busy box)"
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
    approaches = (args.only,) if args.only else APPROACHES
    runs: dict[str, list[dict]] = {name: [] for name in approaches}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for name in approaches:  # interleaved, so background load hits both alike
            result = measure(name, video, srt, CACHE)
            result["load_average_1min"] = os.getloadavg()[0]
            runs[name].append(result)
            print(f"run {repeat + 1} {name}: {json.dumps(result)}", file=sys.stderr)
    table = markdown(runs, args.minutes, args.cues) if not args.only else json.dumps(runs)
    print(table)
    report = {
        "video": video.name,
        "cues": args.cues,
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
    out = args.out / "import_features_speed.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
