"""Import speed: one-pass media cutting against one ffmpeg process per clip and per frame.

Run ``python -m bench.bench_import [--repeats 3] [--minutes 24] [--cues 400] [--out DIR]``.

It makes (once, then reuses from ``.cache/bench-import/``) a synthetic 720p H.264 + AAC
episode and an SRT of ``--cues`` lines, then times, in the same run and each in a fresh
Python process so that peak memory is that approach's alone:

- ``ours``: probe, then decode the audio once and write one WAV per line in a thread,
  beside the frame passes over the video (one walk per core, loop filter skipped on
  unreferenced frames: ``extract_frames``' defaults, or ``--walks`` and
  ``--skip-loop-filter``) writing each line's frame(s) — what ``importers.pipeline`` does
  with ``importers.media``;
- ``ours-sequential``: the same calls one after the other;
- ``ours-one-walk`` (only with ``--approaches``): as ``ours`` with one exact walk, the
  importer before the frame pass was split;
- ``naive``: ``ffmpeg -ss S -t D -i video -ac 1 -ar 16000 clip.wav`` per line and
  ``ffmpeg -ss T -i video -frames:v 1 frame.jpg`` per frame, one process at a time.
  A full naive run takes minutes, so by default it runs on a fixed random subset of lines
  (``--naive-subset``, seeded) and its time is scaled by lines/subset; the table says so.
  ``--naive-subset 0`` runs every line.

Every frame written is checked against the frame number the synthetic video draws into
it, and every WAV's length against its line, so a fast wrong answer cannot pass. The
table goes to stdout (markdown) and, with the raw runs, to ``DIR/import_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

# Only the standard library at module level: the naive child must stay small, because an
# ffmpeg process it starts inherits its resident size into ru_maxrss (fork, then exec).

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench-import"
WIDTH, HEIGHT, FPS, GOP, SEED = 1280, 720, 23.976, 250, 0
PAD_MS = 150
APPROACHES = ("ours", "ours-sequential", "ours-one-walk", "naive")
DEFAULT_APPROACHES = ("ours", "ours-sequential", "naive")
FRAME_POSITIONS = {1: (0.5,), 3: (0.25, 0.5, 0.75)}  # fractions of each line, as the pipeline


def episode_files(minutes: float, cues: int) -> tuple[Path, Path, dict]:
    """The cached benchmark video and SRT, made on first use; plus how long making took."""
    from bench.synthetic_video import make_cues, make_test_video, srt_text

    CACHE.mkdir(parents=True, exist_ok=True)
    stem = f"episode-{minutes:g}min-{WIDTH}x{HEIGHT}-seed{SEED}"
    video = CACHE / f"{stem}.mkv"
    sidecar = CACHE / f"{stem}.json"
    if not video.exists():
        print(f"making {video.name} (once; later runs reuse it) ...", file=sys.stderr)
        started = time.perf_counter()
        make_test_video(
            video,
            duration_s=minutes * 60,
            width=WIDTH,
            height=HEIGHT,
            fps=FPS,
            gop=GOP,
            seed=SEED,
            preset="superfast",
        )
        seconds = time.perf_counter() - started
        sidecar.write_text(json.dumps({"generation_s": round(seconds, 1)}) + "\n")
    made = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    srt = CACHE / f"{stem}-{cues}cues.srt"
    if not srt.exists():
        srt.write_text(srt_text(make_cues(minutes * 60, cues, seed=SEED)), encoding="utf-8")
    return video, srt, made


def read_cues(srt: Path) -> list[tuple[float, float]]:
    import pysrt

    return [(item.start.ordinal / 1000, item.end.ordinal / 1000) for item in pysrt.open(str(srt))]


def frame_requests(
    cues: list[tuple[float, float]], work: Path, frames_per_line: int
) -> list[tuple[float, Path]]:
    return [
        (start + fraction * (end - start), work / f"{number:04d}_{position}.jpg")
        for number, (start, end) in enumerate(cues, start=1)
        for position, fraction in enumerate(FRAME_POSITIONS[frames_per_line])
    ]


def ffmpeg_binary() -> tuple[str, str]:
    """System ffmpeg if installed, else the static build the imageio-ffmpeg wheel carries."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    version = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True)
    return exe, version.stdout.splitlines()[0]


# --- what each child process runs -------------------------------------------------------


def run_ours(
    video: Path,
    cues: list[tuple[float, float]],
    work: Path,
    frames_per_line: int,
    *,
    overlap: bool,
    walks: int | None,
    skip_loop_filter: str | None,
) -> None:
    from importers.media import (
        ClipOptions,
        decode_audio,
        extract_frames,
        probe_media,
        slice_clip,
        write_wav,
    )

    options = ClipOptions(pad_ms=PAD_MS)
    probe_media(video)

    def clips() -> None:
        audio = decode_audio(video, sample_rate=options.sample_rate)
        for number, (start, end) in enumerate(cues, start=1):
            clip = slice_clip(audio, start, end, options=options)
            write_wav(work / f"{number:04d}.wav", clip, options.sample_rate)

    frames = frame_requests(cues, work, frames_per_line)
    decode = {"walks": walks}
    if skip_loop_filter is not None:
        decode["skip_loop_filter"] = skip_loop_filter
    if not overlap:
        clips()
        extract_frames(video, frames, **decode)
        return
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            clips()
        except BaseException as error:  # re-raised below, in the main thread
            errors.append(error)

    worker = threading.Thread(target=guarded)
    worker.start()
    extract_frames(video, frames, **decode)
    worker.join()
    if errors:
        raise errors[0]


def run_naive(
    video: Path, cues: list[tuple[float, float]], work: Path, frames_per_line: int, ffmpeg: str
) -> None:
    pad = PAD_MS / 1000
    quiet = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    for number, (start, end) in enumerate(cues, start=1):
        first = max(0.0, start - pad)
        clip = [*quiet, "-ss", f"{first:.3f}", "-t", f"{end + pad - first:.3f}", "-i", str(video)]
        clip += ["-vn", "-ac", "1", "-ar", "16000", str(work / f"{number:04d}.wav")]
        subprocess.run(clip, check=True)
    for seconds, path in frame_requests(cues, work, frames_per_line):
        frame = [*quiet, "-ss", f"{seconds:.3f}", "-i", str(video), "-frames:v", "1"]
        subprocess.run([*frame, "-q:v", "3", str(path)], check=True)


def child_main(args: argparse.Namespace) -> None:
    """One measured run; prints one JSON line with wall time, CPU time and peak memory."""
    cues = read_cues(Path(args.srt))
    if args.subset:
        cues = [cues[i] for i in json.loads(args.subset)]
    work = Path(args.workdir)
    started = time.perf_counter()
    if args.child == "naive":
        run_naive(Path(args.video), cues, work, args.frames_per_line, args.ffmpeg)
    elif args.child == "ours-one-walk":
        run_ours(
            Path(args.video),
            cues,
            work,
            args.frames_per_line,
            overlap=True,
            walks=1,
            skip_loop_filter="default",
        )
    else:
        run_ours(
            Path(args.video),
            cues,
            work,
            args.frames_per_line,
            overlap=args.child == "ours",
            walks=args.walks,
            skip_loop_filter=args.skip_loop_filter,
        )
    wall = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
                # This process's own peak, and for the naive approach the biggest ffmpeg's.
                "peak_rss_mb": max(own_peak_rss_kib(), children.ru_maxrss) / 1024,
            }
        )
    )


def own_peak_rss_kib() -> int:
    """Peak resident size of this process since exec (VmHWM).

    Not ``ru_maxrss``: that carries over the parent's size at fork, here the bench's own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --- the parent: orchestrate, check, report ------------------------------------------


def expected_frame_numbers(times: list[float]) -> list[int]:
    """The frame each time should give: the first at or after it (Matroska rounds to ms)."""
    import numpy as np

    from bench.synthetic_video import exact_rate

    frame_s = 1 / float(exact_rate(FPS))
    last = max(times) + 1
    pts = np.rint(np.arange(int(last / frame_s) + 2) * frame_s * 1000) / 1000
    return [int(np.searchsorted(pts, t - 1e-3, side="left")) for t in times]


def check_outputs(work: Path, cues: list[tuple[float, float]], frames_per_line: int) -> dict:
    """How many WAVs have their line's length, and how many frames show the right time."""
    import numpy as np
    from PIL import Image

    from bench.synthetic_video import read_frame_index

    requests = frame_requests(cues, work, frames_per_line)
    expected = expected_frame_numbers([seconds for seconds, _ in requests])
    exact = sum(
        read_frame_index(np.asarray(Image.open(path).convert("L"))) == want
        for (_, path), want in zip(requests, expected, strict=True)
    )
    wavs_right = 0
    for number, (start, end) in enumerate(cues, start=1):
        with wave.open(str(work / f"{number:04d}.wav")) as wav:
            seconds = wav.getnframes() / wav.getframerate()
        wanted = end + PAD_MS / 1000 - max(0.0, start - PAD_MS / 1000)
        wavs_right += abs(seconds - wanted) < 0.03
    return {
        "frames_exact": int(exact),
        "frames": len(requests),
        "wavs_right_length": wavs_right,
        "lines": len(cues),
    }


def measure(
    approach: str,
    video: Path,
    srt: Path,
    frames_per_line: int,
    ffmpeg: str,
    subset: list[int] | None,
    decode_args: list[str],
) -> dict:
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="work-") as work:
        command = [sys.executable, "-m", "bench.bench_import", "--child", approach]
        command += ["--video", str(video), "--srt", str(srt), "--workdir", work]
        command += ["--ffmpeg", ffmpeg, "--frames-per-line", str(frames_per_line)]
        command += decode_args
        if subset is not None:
            command += ["--subset", json.dumps(subset)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
        if done.returncode:
            raise SystemExit(f"{approach} failed:\n{done.stderr}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        cues = read_cues(srt)
        if subset is not None:
            cues = [cues[i] for i in subset]
        result.update(check_outputs(Path(work), cues, frames_per_line))
    return result


def summarise(runs: list[dict], scale: float, duration_s: float) -> dict:
    wall = statistics.median(run["wall_s"] for run in runs) * scale
    return {
        "wall_s": round(wall, 2),
        "x_real_time": round(duration_s / wall, 1),
        "cpu_s": round(statistics.median(run["cpu_s"] for run in runs) * scale, 2),
        "peak_rss_mb": round(statistics.median(run["peak_rss_mb"] for run in runs), 1),
        "frames_exact": f"{runs[-1]['frames_exact']}/{runs[-1]['frames']}",
        "wavs_right_length": f"{runs[-1]['wavs_right_length']}/{runs[-1]['lines']}",
        "runs": len(runs),
        "scaled_from_subset": scale != 1.0,
    }


def markdown(summary: dict, cues: int, minutes: float, frames_per_line: int) -> str:
    naive = summary["naive"]["wall_s"]
    header = "approach | wall s | × real time | naive ÷ this | CPU s | peak RSS MB | frames exact"
    rows = [f"| {header} | runs |", "|---|---|---|---|---|---|---|---|"]
    for name, row in summary.items():
        label = f"{name} (subset, scaled)" if row["scaled_from_subset"] else name
        rows.append(
            f"| {label} | {row['wall_s']:.1f} | {row['x_real_time']:.0f}× | "
            f"{naive / row['wall_s']:.1f}× | {row['cpu_s']:.1f} | {row['peak_rss_mb']:.0f} | "
            f"{row['frames_exact']} | {row['runs']} |"
        )
    frames = "midpoint frame" if frames_per_line == 1 else f"{frames_per_line} frames"
    title = (
        f"{minutes:g}-minute 720p H.264 episode, {cues} lines (WAV clip + {frames} each); "
        "medians of the runs"
    )
    return title + "\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=24)
    parser.add_argument("--cues", type=int, default=400)
    parser.add_argument("--frames-per-line", type=int, choices=(1, 3), default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--naive-subset",
        type=int,
        default=100,
        help="time the naive approach on this many random lines and scale up (0: all lines)",
    )
    parser.add_argument(
        "--approaches",
        default=",".join(DEFAULT_APPROACHES),
        help=f"comma-separated, from {','.join(APPROACHES)} (naive must be among them)",
    )
    parser.add_argument(
        "--walks", type=int, help="frame walks for ours (default: one per usable core)"
    )
    parser.add_argument(
        "--skip-loop-filter",
        help="ours' skip_loop_filter (default: extract_frames' default; 'default' is exact)",
    )
    parser.add_argument("--child", choices=APPROACHES, help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--srt", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--ffmpeg", help=argparse.SUPPRESS)
    parser.add_argument("--subset", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
        return

    approaches = tuple(name.strip() for name in args.approaches.split(",") if name.strip())
    unknown = sorted(set(approaches) - set(APPROACHES))
    if unknown or "naive" not in approaches:
        parser.error(f"--approaches: unknown {unknown} or no naive in {list(approaches)}")
    decode_args = []
    if args.walks is not None:
        decode_args += ["--walks", str(args.walks)]
    if args.skip_loop_filter is not None:
        decode_args += ["--skip-loop-filter", args.skip_loop_filter]
    video, srt, made = episode_files(args.minutes, args.cues)
    ffmpeg, ffmpeg_version = ffmpeg_binary()
    duration_s = args.minutes * 60
    subset = None
    scale = 1.0
    if 0 < args.naive_subset < args.cues:
        subset = sorted(random.Random(SEED).sample(range(args.cues), args.naive_subset))
        scale = args.cues / args.naive_subset
    runs: dict[str, list[dict]] = {name: [] for name in approaches}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for name in approaches:  # interleaved, so background load hits every approach alike
            result = measure(
                name,
                video,
                srt,
                args.frames_per_line,
                ffmpeg,
                subset if name == "naive" else None,
                decode_args,
            )
            result["load_average_1min"] = os.getloadavg()[0]
            runs[name].append(result)
            print(f"run {repeat + 1} {name}: {json.dumps(result)}", file=sys.stderr)
    summary = {
        name: summarise(runs[name], scale if name == "naive" else 1.0, duration_s)
        for name in approaches
    }
    table = markdown(summary, args.cues, args.minutes, args.frames_per_line)
    print(table)
    report = {
        "video": {
            "file": video.name,
            "minutes": args.minutes,
            "size": f"{WIDTH}x{HEIGHT}",
            "fps": "24000/1001",
            "keyframe_interval": GOP,
            "codec": "H.264 (libx264 superfast, crf 23, B-frames) + AAC 48 kHz stereo, Matroska",
            "bytes": video.stat().st_size,
            "generation_s": made.get("generation_s"),
        },
        "cues": args.cues,
        "frames_per_line": args.frames_per_line,
        "pad_ms": PAD_MS,
        "ours_decode": {
            "walks": args.walks if args.walks is not None else "one per usable core",
            "usable_cores": len(os.sched_getaffinity(0)),
            "skip_loop_filter": args.skip_loop_filter or "extract_frames default",
        },
        "naive_subset": subset,
        "naive_scale": scale,
        "ffmpeg": ffmpeg_version,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "summary": summary,
        "runs": runs,
        "markdown": table,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.frames_per_line == 1 else f"_{args.frames_per_line}frames"
    out = args.out / f"import_speed{suffix}.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
