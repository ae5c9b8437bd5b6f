"""Season import speed: ``import SEASON_DIR`` serially against ``--ray local --workers 2``.

Run ``python -m bench.bench_season [--repeats 3] [--episodes 6] [--preset tiny]``.

The season is generated once into ``.cache/bench-season/<preset>-<n>/`` (``ep01.mp4`` +
``ep01.srt`` ..., the ``bench.make_episode`` preset with seeds 1..n, so each episode has other
lines, voices and pictures). Each run is the real command in a fresh process, with the default
features (resemblyzer, anime-colour, silero-vad), into a fresh output folder, so model loads and
Ray's start-up are part of what is timed. Variants are interleaved and their order alternates
from one repeat to the next, so a machine that gets busier part-way hurts both alike.

CPU time is the user + system time of every process of the tree (read from ``/proc`` at each
sample, so a process's last 0.1 s may be missed). Peak memory is the peak of the summed PSS
(proportional set size: shared pages split between the processes sharing them, so libraries
mapped by every Ray worker count once) over the run's whole process tree (the driver and, with
Ray, its GCS, raylet and worker processes), sampled every 0.1 s from ``/proc``. The table goes
to stdout (markdown) and, with the raw runs, to ``bench/results/season_import.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from foundation.atomic import atomic_write_json
from foundation.layout import FEATURES_FILE, TASKS_FILE

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench-season"
RESULTS = ROOT / "bench" / "results" / "season_import.json"
SAMPLE_S = 0.1


def make_season_folder(preset: str, episodes: int) -> Path:
    """``ep01.mp4``/``ep01.srt``... in one flat folder, as a season import gets them; cached."""
    from bench.make_episode import make_episode

    folder = CACHE / f"{preset}-{episodes}"
    done = folder / "season.done"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(1, episodes + 1):
        with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
            files = make_episode(preset, seed=seed, out_dir=scratch)
            shutil.move(files.video, folder / f"ep{seed:02d}{files.video.suffix}")
            shutil.move(files.subtitles, folder / f"ep{seed:02d}{files.subtitles.suffix}")
    done.write_text("ok\n", encoding="utf-8")
    return folder


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def sample_tree(root: int, cpu_seen: dict[int, float]) -> int:
    """Summed PSS of ``root`` and all its descendants, in KiB; updates ``cpu_seen`` (pid →
    CPU seconds so far) so that CPU time of processes that exit later is not lost."""
    tree, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            utime, stime = stat[stat.rindex(")") + 2 :].split()[11:13]
            cpu_seen[pid] = (int(utime) + int(stime)) / CLOCK_TICKS
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError):
            continue
    return total


def measure(variant: str, season: Path, workers: int) -> dict:
    """One timed ``speaker-grouping import`` of the whole season in a fresh process."""
    command = [sys.executable, "-m", "speaker_grouping.cli", "import", str(season), "-q"]
    if variant == "ray":
        command += ["--ray", "local", "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        out = Path(scratch) / "out"
        began = time.perf_counter()
        process = subprocess.Popen(
            [*command, "--out", str(out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak = 0
        cpu_seen: dict[int, float] = {}
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, sample_tree(process.pid, cpu_seen))
                stop.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = process.communicate()
        wall = time.perf_counter() - began
        stop.set()
        sampler.join()
        summary = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        if process.returncode != 0 or not summary.startswith("imported "):
            raise RuntimeError(f"{variant} run failed ({process.returncode}): {stderr[-2000:]}")
        tasks = sum(
            len(json.loads(path.read_text())) for path in sorted(out.glob(f"*/{TASKS_FILE}"))
        )
        stores = len(list(out.glob(f"*/{FEATURES_FILE}")))
    return {
        "wall_s": round(wall, 2),
        "peak_pss_mib": round(peak / 1024, 1),
        "cpu_s": round(sum(cpu_seen.values()), 1),
        "summary": summary,
        "tasks": tasks,
        "feature_stores": stores,
    }


RAY_START = """
import time
began = time.perf_counter()
from importers.season_ray import LOCAL, RayRunner, _import_ray
runner = RayRunner(lambda: None, address=LOCAL, workers=2)
runner._init(_import_ray(local=True))
started = time.perf_counter()
import ray
ray.shutdown()
print(round(started - began, 2), round(time.perf_counter() - started, 2))
"""


def ray_start_s() -> dict:
    """What ``--ray local`` costs before any episode: starting a private Ray, and stopping it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", RAY_START], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"starting Ray failed: {done.stderr[-2000:]}")
    start, stop = map(float, done.stdout.split())
    return {"start_s": start, "stop_s": stop}


def markdown(runs: dict[str, list[dict]], workers: int) -> str:
    serial = statistics.median(run["wall_s"] for run in runs["serial"])
    lines = [
        "| variant | wall s (median) | runs | serial ÷ this | CPU s (median) | "
        "peak PSS MiB (median) |",
        "|---|---|---|---|---|---|",
    ]
    for variant, label in (("serial", "serial"), ("ray", f"--ray local --workers {workers}")):
        walls = [run["wall_s"] for run in runs[variant]]
        wall = statistics.median(walls)
        memory = statistics.median(run["peak_pss_mib"] for run in runs[variant])
        cpu = statistics.median(run["cpu_s"] for run in runs[variant])
        listed = ", ".join(f"{value:.1f}" for value in walls)
        lines.append(
            f"| {label} | {wall:.1f} | {listed} | {serial / wall:.2f}× | {cpu:.0f} | {memory:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_season", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant")
    parser.add_argument("--episodes", type=int, default=6, help="episodes in the season")
    parser.add_argument("--preset", default="tiny", help="bench.make_episode preset")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    season = make_season_folder(args.preset, args.episodes)
    videos = sorted(season.glob("ep*.mp4"))
    durations = [_duration(video) for video in videos]
    runs: dict[str, list[dict]] = {"serial": [], "ray": []}
    ray_starts: list[dict] = []
    for repeat in range(args.repeats):
        order = ("serial", "ray") if repeat % 2 == 0 else ("ray", "serial")
        for variant in order:
            load = os.getloadavg()[0]
            result = measure(variant, season, args.workers)
            result["load_before"] = round(load, 2)
            runs[variant].append(result)
            print(f"run {repeat + 1} {variant}: {json.dumps(result)}", file=sys.stderr)
        startup = ray_start_s()
        ray_starts.append(startup)
        print(f"run {repeat + 1} ray start/stop only: {json.dumps(startup)}", file=sys.stderr)
    table = markdown(runs, args.workers)
    start = statistics.median(run["start_s"] for run in ray_starts)
    table += (
        "\n\nImporting Ray and starting a private one (ray.init, 2 CPUs, no actor yet): "
        f"median {start:.1f} s"
    )
    print(table)
    serial = statistics.median(run["wall_s"] for run in runs["serial"])
    ray = statistics.median(run["wall_s"] for run in runs["ray"])
    report = {
        "benchmark": "season import: serial against --ray local",
        "command": "python -m bench.bench_season " + " ".join(argv or sys.argv[1:]),
        "season": {
            "preset": args.preset,
            "episodes": len(videos),
            "seeds": list(range(1, args.episodes + 1)),
            "durations_s": [round(value, 1) for value in durations],
            "features": "default (resemblyzer, anime-colour, silero-vad)",
        },
        "workers": args.workers,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "median_wall_s": {"serial": serial, "ray": ray},
        "serial_over_ray": round(serial / ray, 3),
        "runs": runs,
        "ray_start_only": ray_starts,
        "table": table,
        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    atomic_write_json(args.out, report)
    return 0


def _duration(video: Path) -> float:
    from importers.media import probe_media

    return probe_media(video).duration


if __name__ == "__main__":
    sys.exit(main())
