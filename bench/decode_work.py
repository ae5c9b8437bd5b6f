"""How many frames must be decoded to serve each line's midpoint frame, naive against ours?

Any exact decoder of H.264 starts at a keyframe and decodes every frame up to the one asked for.
One ffmpeg process per frame (naive) does that once per line, from the keyframe before it. Our
frame walk (`importers.media`) does it once per keyframe interval, up to the last line in it.
The ratio of the two totals bounds how much faster than naive any exact frame pass can be,
whatever the implementation, before process starts and skipped B-frames. It reads only the
demuxer's keyframe index (`importers.media.keyframe_index`, the one the frame walk plans with),
so it runs in seconds on a file of any length.

Usage: ``python -m bench.decode_work VIDEO SUBTITLES [--frames-per-line 3]`` (the subtitles are
read as ``import`` reads them; frames at the importer's positions in each line).
"""

from __future__ import annotations

import argparse
import bisect
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class DecodeWork:
    """Frames decoded to serve every request, by the two strategies."""

    requests: int
    keyframes: int
    intervals_with_requests: int
    frames_naive: int
    frames_walk: int

    @property
    def ratio(self) -> float:
        return self.frames_naive / self.frames_walk if self.frames_walk else float("nan")


def decode_work(keyframes: Sequence[float], rate: float, times: Sequence[float]) -> DecodeWork:
    """Frames decoded for frames at ``times`` (s), given sorted ``keyframes`` (s) and the rate."""
    if not keyframes:
        raise ValueError("the video has no keyframe")
    naive = 0
    last_in_interval: dict[float, float] = {}
    for t in times:
        key = keyframes[max(bisect.bisect_right(keyframes, t) - 1, 0)]
        naive += max(0, round((t - key) * rate)) + 1
        last_in_interval[key] = max(last_in_interval.get(key, key), t)
    walk = sum(max(0, round((t - key) * rate)) + 1 for key, t in last_in_interval.items())
    return DecodeWork(len(times), len(keyframes), len(last_in_interval), naive, walk)


def main(argv: Sequence[str] | None = None) -> int:
    from importers.media import keyframe_index
    from importers.pipeline import FRAME_POSITIONS
    from importers.subtitles import parse_subtitles

    parser = argparse.ArgumentParser(
        prog="python -m bench.decode_work", description=__doc__.split("\n")[0]
    )
    parser.add_argument("video", type=Path)
    parser.add_argument("subtitles", type=Path, help="SRT, ASS/SSA or WebVTT, read as import does")
    parser.add_argument("--frames-per-line", type=int, choices=sorted(FRAME_POSITIONS), default=1)
    args = parser.parse_args(argv)
    keyframes, rate = keyframe_index(args.video)
    lines = parse_subtitles(args.subtitles).lines
    times = sorted(
        line.start + fraction * (line.end - line.start)
        for line in lines
        for fraction in FRAME_POSITIONS[args.frames_per_line]
    )
    work = decode_work(keyframes, rate, times)
    print(json.dumps({**asdict(work), "ratio": round(work.ratio, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
