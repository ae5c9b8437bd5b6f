"""Import speed: one-pass media cutting against one ffmpeg process per clip and per frame.

Run ``python -m bench.bench_import [--repeats 3] [--minutes 24] [--cues 400] [--out DIR]``.

It makes (once, then reuses from ``.cache/bench-import/``) a synthetic 720p H.264 + AAC
episode and an SRT of ``--cues`` lines, then times, in the same run and each in a fresh
Python process so peak memory is that approach's alone:

- ``ours``: probe, decode the audio once, write one WAV per line, extract the midpoint
  frame of every line in one forward pass (``importers.media``), one after the other as
  the import pipeline calls them;
- ``ours-overlap``: the same, with the audio work in a thread beside the frame pass;
- ``naive``: ``ffmpeg -ss S -t D -i video -ac 1 -ar 16000 clip.wav`` per line and
  ``ffmpeg -ss T -i video -frames:v 1 frame.jpg`` per frame, one process at a time.

Every frame written is checked against the frame number the synthetic video draws into
it, so a fast wrong answer cannot pass. The table goes to stdout (markdown) and, with the
raw runs, to ``DIR/import_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from bench.synthetic_video import exact_rate, make_cues, make_test_video, srt_text

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench-import"
WIDTH, HEIGHT, FPS, GOP, SEED = 1280, 720, 23.976, 250, 0
PAD_MS = 150
APPROACHES = ("ours", "ours-overlap", "naive")


def episode_files(minutes: float, cues: int) -> tuple[Path, Path, dict]:
    """The cached benchmark video and SRT, made on first use; plus how long making took."""
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


def ffmpeg_binary() -> tuple[str, str]:
    """System ffmpeg if installed, else the static build the imageio-ffmpeg wheel carries."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    version = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True)
    return exe, version.stdout.splitlines()[0]


# --- what each child process runs -------------------------------------------------------


def run_ours(video: Path, cues: list[tuple[float, float]], work: Path, overlap: bool) -> None:
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

    frames = [
        ((start + end) / 2, work / f"{number:04d}.jpg")
        for number, (start, end) in enumerate(cues, start=1)
    ]
    if overlap:
        errors: list[BaseException] = []

        def guarded() -> None:
            try:
                clips()
            except BaseException as error:  # re-raised below, in the main thread
                errors.append(error)

        worker = threading.Thread(target=guarded)
        worker.start()
        extract_frames(video, frames)
        worker.join()
        if errors:
            raise errors[0]
    else:
        clips()
        extract_frames(video, frames)


def run_naive(video: Path, cues: list[tuple[float, float]], work: Path, ffmpeg: str) -> None:
    pad = PAD_MS / 1000
    quiet = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    for number, (start, end) in enumerate(cues, start=1):
        first = max(0.0, start - pad)
        clip = [*quiet, "-ss", f"{first:.3f}", "-t", f"{end + pad - first:.3f}", "-i", str(video)]
        clip += ["-vn", "-ac", "1", "-ar", "16000", str(work / f"{number:04d}.wav")]
        subprocess.run(clip, check=True)
        middle = (start + end) / 2
        frame = [*quiet, "-ss", f"{middle:.3f}", "-i", str(video), "-frames:v", "1"]
        frame += ["-q:v", "3", str(work / f"{number:04d}.jpg")]
        subprocess.run(frame, check=True)


def child_main(args: argparse.Namespace) -> None:
    """One measured run; prints one JSON line with wall time, CPU time and peak memory."""
    cues = read_cues(Path(args.srt))
    if args.subset:
        cues = [cues[i] for i in json.loads(args.subset)]
    work = Path(args.workdir)
    started = time.perf_counter()
    if args.child == "naive":
        run_naive(Path(args.video), cues, work, args.ffmpeg)
    else:
        run_ours(Path(args.video), cues, work, overlap=args.child == "ours-overlap")
    wall = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
                # Linux reports KiB; for the naive approach the biggest ffmpeg process counts.
                "peak_rss_mb": max(own.ru_maxrss, children.ru_maxrss) / 1024,
            }
        )
    )


# --- the parent: orchestrate, check, report ------------------------------------------


def frame_numbers_expected(video: Path, times: list[float]) -> list[int]:
    """The frame each time should give: first frame at or after it (Matroska rounds to ms)."""
    rate = exact_rate(FPS)
    count = int(float(rate) * 60 * 60 * 3)
    pts_ms = np.rint(np.arange(count) * 1000 / float(Fraction(rate))) / 1000
    return [int(np.searchsorted(pts_ms, t - 1e-3, side="left")) for t in times]


def check_outputs(work: Path, cues: list[tuple[float, float]], video: Path) -> dict:
    """How many WAVs exist with the right length, and how many frames show the right time."""
    import wave

    from PIL import Image

    from bench.synthetic_video import read_frame_index

    expected = frame_numbers_expected(video, [(s + e) / 2 for s, e in cues])
    frames_right = off_by_one = wavs_right = 0
    for number, ((start, end), want) in enumerate(zip(cues, expected, strict=True), start=1):
        got = read_frame_index(np.asarray(Image.open(work / f"{number:04d}.jpg").convert("L")))
        frames_right += got == want
        off_by_one += abs(got - want) == 1
        with wave.open(str(work / f"{number:04d}.wav")) as wav:
            seconds = wav.getnframes() / wav.getframerate()
        wavs_right += abs(seconds - (end - start + 2 * PAD_MS / 1000)) < 0.05
    return {
        "frames_exact": int(frames_right),
        "frames_off_by_one": int(off_by_one),
        "wavs_right_length": int(wavs_right),
        "lines": len(cues),
    }


def measure(approach: str, video: Path, srt: Path, ffmpeg: str, subset: list[int] | None) -> dict:
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="work-") as work:
        command = [sys.executable, "-m", "bench.bench_import", "--child", approach]
        command += ["--video", str(video), "--srt", str(srt), "--workdir", work, "--ffmpeg", ffmpeg]
        if subset is not None:
            command += ["--subset", json.dumps(subset)]
        root = Path(__file__).resolve().parent.parent
        done = subprocess.run(command, capture_output=True, text=True, cwd=root, check=False)
        if done.returncode:
            raise SystemExit(f"{approach} failed:\n{done.stderr}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        cues = read_cues(srt)
        if subset is not None:
            cues = [cues[i] for i in subset]
        result.update(check_outputs(Path(work), cues, video))
    return result


def summarise(runs: list[dict], scale: float, duration_s: float) -> dict:
    wall = statistics.median(run["wall_s"] for run in runs) * scale
    return {
        "wall_s": round(wall, 2),
        "x_real_time": round(duration_s / wall, 1),
        "cpu_s": round(statistics.median(run["cpu_s"] for run in runs) * scale, 2),
        "peak_rss_mb": round(statistics.median(run["peak_rss_mb"] for run in runs), 1),
        "frames_exact": f"{runs[-1]['frames_exact']}/{runs[-1]['lines']}",
        "runs": len(runs),
    }


def markdown(summary: dict, cues: int, minutes: float, extrapolated: bool) -> str:
    ours = summary["ours"]["wall_s"]
    header = (
        "approach | wall s (median) | × real time | vs naive | CPU s | peak RSS MB | frames exact"
    )
    rows = [f"| {header} | runs |", "|---|---|---|---|---|---|---|---|"]
    naive = summary["naive"]["wall_s"]
    for name, row in summary.items():
        label = f"{name} (extrapolated)" if name == "naive" and extrapolated else name
        rows.append(
            f"| {label} | {row['wall_s']:.1f} | {row['x_real_time']:.0f}× | "
            f"{naive / row['wall_s']:.1f}× | {row['cpu_s']:.1f} | {row['peak_rss_mb']:.0f} | "
            f"{row['frames_exact']} | {row['runs']} |"
        )
    title = f"{minutes:g}-minute 720p H.264 episode, {cues} lines (clip + midpoint frame each)"
    return f"{title}; ours is {naive / ours:.1f}× faster than naive.\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=24)
    parser.add_argument("--cues", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--naive-subset",
        type=int,
        default=0,
        help="time the naive approach on this many random lines and scale up (0: all lines)",
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

    video, srt, made = episode_files(args.minutes, args.cues)
    ffmpeg, ffmpeg_version = ffmpeg_binary()
    duration_s = args.minutes * 60
    subset = None
    scale = 1.0
    if args.naive_subset and args.naive_subset < args.cues:
        rng = np.random.default_rng(SEED)
        subset = sorted(rng.choice(args.cues, size=args.naive_subset, replace=False).tolist())
        scale = args.cues / args.naive_subset
    runs: dict[str, list[dict]] = {name: [] for name in APPROACHES}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for name in APPROACHES:  # interleaved, so background load hits every approach alike
            result = measure(name, video, srt, ffmpeg, subset if name == "naive" else None)
            runs[name].append(result)
            print(f"run {repeat + 1} {name}: {json.dumps(result)}", file=sys.stderr)
    summary = {
        name: summarise(runs[name], scale if name == "naive" else 1.0, duration_s)
        for name in APPROACHES
    }
    table = markdown(summary, args.cues, args.minutes, subset is not None)
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
        "pad_ms": PAD_MS,
        "naive_subset": subset,
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
    out = args.out / "import_speed.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
