"""How many frames must be decoded to serve each line's midpoint frame, naive against ours?

Any exact decoder of H.264 starts at a keyframe and decodes every frame up to the one asked for.
One ffmpeg process per frame (naive) does that once per line, from the keyframe before it. Our
frame walk (`importers.media`) does it once per keyframe interval, up to the last line in it.
The ratio of the two totals bounds how much faster than naive any exact frame pass can be,
whatever the implementation, before process starts and skipped B-frames. It needs only the
demuxer (keyframe times), so it runs in seconds on a file of any length.

Usage: ``python -m bench.decode_work VIDEO SUBTITLES`` (SRT; the frame at each cue's middle).
"""

from __future__ import annotations

import argparse
import bisect
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import av


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


def keyframe_times(video: Path) -> tuple[list[float], float]:
    """Sorted keyframe times (s) of the first video stream, and its frame rate."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate)
        times = sorted(
            float(packet.pts * stream.time_base)
            for packet in container.demux(stream)
            if packet.size and packet.is_keyframe and packet.pts is not None
        )
    return times, rate


def decode_work(keyframes: Sequence[float], rate: float, times: Sequence[float]) -> DecodeWork:
    """Frames decoded for frames at ``times`` (s), given sorted ``keyframes`` (s) and the rate."""
    if not keyframes:
        raise ValueError("the video has no keyframe")
    naive = 0
    last_in_interval: dict[float, float] = {}
    for t in times:
        key = keyframes[max(bisect.bisect_right(keyframes, t) - 1, 0)]
        naive += round((t - key) * rate) + 1
        last_in_interval[key] = max(last_in_interval.get(key, key), t)
    walk = sum(round((t - key) * rate) + 1 for key, t in last_in_interval.items())
    return DecodeWork(len(times), len(keyframes), len(last_in_interval), naive, walk)


def main(argv: Sequence[str] | None = None) -> int:
    import pysrt

    parser = argparse.ArgumentParser(
        prog="python -m bench.decode_work", description=__doc__.split("\n")[0]
    )
    parser.add_argument("video", type=Path)
    parser.add_argument("subtitles", type=Path)
    args = parser.parse_args(argv)
    keyframes, rate = keyframe_times(args.video)
    middles = [
        (cue.start.ordinal + cue.end.ordinal) / 2000.0 for cue in pysrt.open(str(args.subtitles))
    ]
    work = decode_work(keyframes, rate, middles)
    print(json.dumps({**asdict(work), "ratio": round(work.ratio, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
