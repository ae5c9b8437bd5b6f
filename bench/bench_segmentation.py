"""Lines from speech detection against the benchmark episodes' true speech times.

An episode without subtitles is cut into lines by `importers.speech_segments`. This measures
how well those lines match the lines really spoken, whose voice start and end the generator
records in ``spec.json`` (``lines_detail[].speech_start/speech_end``):

- **boundary error**: median and 90th percentile of |start error| and |end error| in seconds,
  over matched pairs (one segment to one true line, greedily by overlap);
- **missed speech**: true speech time that no segment covers (seconds and % of true speech);
- **false speech**: segment time outside all true speech (seconds and % of segment time);
- **split**: true lines that two or more segments cover, per 100 true lines;
- **merged**: segments that cover two or more true lines, per 100 true lines;
- **lost**: true lines that no segment covers, per 100 true lines;
- **errors**: split + 2 × merged + lost + spurious (segments over no true speech at all), per
  100 true lines: the tuning objective (`errors_per_100`).

"Covers" means an overlap of at least ``min(0.2 s, half the true line)``, so a segment's padding
that reaches into a neighbour's first syllable does not count as a merge.

Segmenters, all on the same decoded audio and (for the VAD ones) the same silero
probabilities, in the same run:

- ``ours``: `importers.speech_segments` with its default options;
- ``silero-raw``: silero-vad's own ``get_speech_timestamps`` rules with its defaults
  (threshold 0.5, 100 ms minimum silence, 250 ms minimum speech, 30 ms padding, no cap);
- ``energy``: frames 12 dB above the episode's 10th-percentile frame energy, pauses of 0.3 s
  end a line, runs under 0.2 s dropped: what one would write without a VAD.

``--tune`` searches the options of ``ours`` on the training episodes (``standard`` seeds 101
and 102, ``hard`` seed 101) and prints the best; `SpeechSegmentOptions`' defaults came from it.

Episodes are generated on first use under ``.cache/episodes/<preset>-seed<N>/`` (the same
folders `bench.episode_cache` uses; only the generator's files are needed, not an import).

``--timing EPISODE`` instead times what lines from speech add to an import (the VAD and the
segmentation) against the audio decode every import does, interleaved, medians of rounds.

Usage: ``python -m bench.bench_segmentation [--episodes standard-seed1 hard-seed1 ...]
[--tune | --timing standard-seed1 [--repeats 5]] [--out FILE.json]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.episode_cache import CACHE
from foundation.atomic import atomic_write_json
from importers.media import decode_audio
from importers.speech_segments import (
    FRAME_S,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    SpeechSegmentOptions,
    merge_close_runs,
    segments_from_probabilities,
    speech_probabilities,
)

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
EVALUATION_EPISODES = (
    "standard-seed1",
    "standard-seed2",
    "standard-seed3",
    "hard-seed1",
    "hard-seed2",
    "hard-seed3",
)
TRAINING_EPISODES = ("standard-seed101", "standard-seed102", "hard-seed101")
COVER_S = 0.2
"""A segment covers a true line when they overlap by min(COVER_S, half the line) or more."""
ENERGY_ABOVE_FLOOR_DB = 12.0
ENERGY_MIN_PAUSE_S = 0.3
ENERGY_MIN_SPEECH_S = 0.2

Spans = np.ndarray
"""(num_spans, 2) float64 [start, end) seconds, sorted by start."""


@dataclass(frozen=True)
class EpisodeAudio:
    """What every segmenter sees for one episode, and the truth it is scored against."""

    name: str
    duration: float
    audio: np.ndarray  # (num_samples,) float32 at 16 kHz
    probabilities: np.ndarray  # (num_frames,) float32 silero-vad
    truth: Spans  # true speech of each line


def load_episode(name: str, *, cache: Path = CACHE) -> EpisodeAudio:
    """Decode ``<cache>/<name>/episode.mp4`` (generating it first if needed) and run the VAD."""
    folder = cache / name
    if not (folder / "spec.json").is_file():
        from bench.make_episode import make_episode

        preset, seed = name.rsplit("-seed", 1)
        logger.info("generating %s (minutes)", name)
        make_episode(preset, seed=int(seed), out_dir=folder)
    return episode_in(folder, name=name)


def episode_in(folder: Path, *, name: str | None = None) -> EpisodeAudio:
    """The generated episode in ``folder`` (``episode.mp4`` and ``spec.json``), decoded."""
    spec = json.loads((folder / "spec.json").read_text())
    truth = np.array(
        [(line["speech_start"], line["speech_end"]) for line in spec["lines_detail"]],
        dtype=np.float64,
    )
    audio = decode_audio(folder / "episode.mp4", sample_rate=SAMPLE_RATE)
    return EpisodeAudio(
        name=name or folder.name,
        duration=len(audio) / SAMPLE_RATE,
        audio=audio,
        probabilities=speech_probabilities(audio),
        truth=truth[np.argsort(truth[:, 0], kind="stable")],
    )


# ---------------------------------------------------------------------------------------------
# Segmenters: episode -> spans


def ours(episode: EpisodeAudio, options: SpeechSegmentOptions | None = None) -> Spans:
    segments = segments_from_probabilities(
        episode.probabilities, duration=episode.duration, options=options
    )
    return np.array([(s.start, s.end) for s in segments], dtype=np.float64).reshape(-1, 2)


def silero_raw(episode: EpisodeAudio) -> Spans:
    from silero_vad import get_speech_timestamps_from_probs

    stamps = get_speech_timestamps_from_probs(
        episode.probabilities.tolist(),
        sampling_rate=SAMPLE_RATE,
        audio_length_samples=len(episode.audio),
    )
    return np.array(
        [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps], dtype=np.float64
    ).reshape(-1, 2)


def energy(episode: EpisodeAudio) -> Spans:
    frames = -(-len(episode.audio) // FRAME_SAMPLES)
    padded = np.zeros(frames * FRAME_SAMPLES, dtype=np.float64)
    padded[: len(episode.audio)] = episode.audio
    power_db = 10 * np.log10(np.maximum((padded.reshape(frames, -1) ** 2).mean(axis=1), 1e-12))
    # Digital silence (the title card, scene gaps without a bed) would make the floor -120 dB.
    floor = np.percentile(power_db[power_db > -100], 10)
    loud = power_db >= floor + ENERGY_ABOVE_FLOOR_DB
    edges = np.flatnonzero(np.diff(np.concatenate(([0], loud.astype(np.int8), [0]))))
    runs = edges.reshape(-1, 2).astype(np.int64)
    runs = merge_close_runs(runs, min_pause_frames=round(ENERGY_MIN_PAUSE_S / FRAME_S))
    runs = runs[(runs[:, 1] - runs[:, 0]) * FRAME_S >= ENERGY_MIN_SPEECH_S]
    return np.minimum(runs * FRAME_S, episode.duration).astype(np.float64)


SEGMENTERS: dict[str, Callable[[EpisodeAudio], Spans]] = {
    "ours": ours,
    "silero-raw": silero_raw,
    "energy": energy,
}


# ---------------------------------------------------------------------------------------------
# Scores


def _overlaps(a: Spans, b: Spans) -> np.ndarray:
    """(len(a), len(b)) seconds of overlap between every pair of spans."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    start = np.maximum(a[:, None, 0], b[None, :, 0])
    end = np.minimum(a[:, None, 1], b[None, :, 1])
    return np.maximum(end - start, 0.0)


def _union_length(spans: Spans) -> float:
    total, reach = 0.0, -np.inf
    for start, end in spans[np.argsort(spans[:, 0], kind="stable")] if len(spans) else []:
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return float(total)


def _union(spans: Spans) -> Spans:
    merged: list[list[float]] = []
    for start, end in spans[np.argsort(spans[:, 0], kind="stable")] if len(spans) else []:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([float(start), float(end)])
    return np.array(merged, dtype=np.float64).reshape(-1, 2)


def score(truth: Spans, found: Spans) -> dict[str, float]:
    """Every measure of the module doc for one episode; ``truth`` and ``found`` in seconds."""
    overlap = _overlaps(truth, found)  # (true lines, segments)
    needed = np.minimum(COVER_S, 0.5 * (truth[:, 1] - truth[:, 0]))[:, None]
    covers = overlap >= needed
    segments_per_line = covers.sum(axis=1)
    lines_per_segment = covers.sum(axis=0)
    # One-to-one matching, largest overlap first.
    pairs = sorted(zip(*np.nonzero(covers), strict=True), key=lambda ij: -overlap[ij])
    used_lines: set[int] = set()
    used_segments: set[int] = set()
    start_errors, end_errors = [], []
    for line, segment in pairs:
        if line in used_lines or segment in used_segments:
            continue
        used_lines.add(line)
        used_segments.add(segment)
        start_errors.append(abs(found[segment, 0] - truth[line, 0]))
        end_errors.append(abs(found[segment, 1] - truth[line, 1]))
    true_union, found_union = _union(truth), _union(found)
    true_s, found_s = _union_length(true_union), _union_length(found_union)
    both_s = float(_overlaps(true_union, found_union).sum())
    per_100 = 100.0 / len(truth)
    return {
        "true_lines": len(truth),
        "segments": len(found),
        "matched": len(used_lines),
        "start_error_median_s": _percentile(start_errors, 50),
        "start_error_p90_s": _percentile(start_errors, 90),
        "end_error_median_s": _percentile(end_errors, 50),
        "end_error_p90_s": _percentile(end_errors, 90),
        "true_speech_s": round(true_s, 2),
        "missed_speech_s": round(true_s - both_s, 2),
        "missed_speech_pct": round(100 * (true_s - both_s) / true_s, 2) if true_s else 0.0,
        "false_speech_s": round(found_s - both_s, 2),
        "false_speech_pct": round(100 * (found_s - both_s) / found_s, 2) if found_s else 0.0,
        "split_per_100": round(per_100 * int((segments_per_line >= 2).sum()), 2),
        "merged_per_100": round(per_100 * int((lines_per_segment >= 2).sum()), 2),
        "lost_per_100": round(per_100 * int((segments_per_line == 0).sum()), 2),
        "spurious_segments_per_100": round(
            per_100 * int((overlap.sum(axis=0) == 0).sum()) if len(found) else 0.0, 2
        ),
    }


def _percentile(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def errors_per_100(scores: dict[str, float]) -> float:
    """The tuning objective: line-level mistakes, per 100 true lines.

    A merge counts twice: a task holding two speakers has no right answer and blurs its voice
    vector, while a split line only costs one more task whose speaker is the same.
    """
    return (
        scores["split_per_100"]
        + 2 * scores["merged_per_100"]
        + scores["lost_per_100"]
        + scores["spurious_segments_per_100"]
    )


# ---------------------------------------------------------------------------------------------
# Tuning

TUNING_GRID: dict[str, Sequence[Any]] = {
    "thresholds": ((0.5, 0.35), (0.4, 0.25), (0.6, 0.45)),
    "min_pause_s": (0.3, 0.4, 0.5, 0.6, 0.8),
    "min_speech_s": (0.2, 0.3),
    "pad_s": (0.05, 0.1),
    "max_line_s": (4.0, 5.0, 6.0, 8.0),
    "min_line_s": (0.5, 1.0, 1.5),
}
"""A first, wider grid (pauses 0.1–0.4 s, caps 6–10 s, pads 0–0.15 s, thresholds down to 0.3)
put every one of the best settings at its longest pause and shortest cap, so this one goes on
from there."""


def tune(episodes: Sequence[EpisodeAudio]) -> list[dict[str, Any]]:
    """Every grid point's mean objective over ``episodes``, best first (ties: boundary p90)."""
    rows = []
    keys = list(TUNING_GRID)
    for values in itertools.product(*(TUNING_GRID[key] for key in keys)):
        chosen = dict(zip(keys, values, strict=True))
        threshold, neg_threshold = chosen.pop("thresholds")
        options = SpeechSegmentOptions(threshold=threshold, neg_threshold=neg_threshold, **chosen)
        scores = [score(episode.truth, ours(episode, options)) for episode in episodes]
        boundary = statistics.mean(
            max(s["start_error_p90_s"], s["end_error_p90_s"]) for s in scores
        )
        rows.append(
            {
                "options": asdict(options),
                "errors_per_100": round(statistics.mean(errors_per_100(s) for s in scores), 2),
                "boundary_p90_s": round(boundary, 3),
                "missed_speech_pct": round(
                    statistics.mean(s["missed_speech_pct"] for s in scores), 2
                ),
                "false_speech_pct": round(
                    statistics.mean(s["false_speech_pct"] for s in scores), 2
                ),
            }
        )
    rows.sort(key=lambda row: (row["errors_per_100"], row["boundary_p90_s"]))
    return rows


# ---------------------------------------------------------------------------------------------
# Timing


def timing(name: str, *, repeats: int = 5) -> dict[str, Any]:
    """What lines from speech add to an import: the VAD and the segmentation, against the audio
    decode that every import does anyway (the baseline, timed in the same rounds).

    Steps run in turn in every round, so load on the machine falls on all of them alike;
    medians over ``repeats`` rounds.
    """
    folder = CACHE / name
    load_episode(name)  # generated, if it was not
    video = folder / "episode.mp4"
    audio = decode_audio(video, sample_rate=SAMPLE_RATE)
    probabilities = speech_probabilities(audio)  # loads the model outside the timed rounds
    duration = len(audio) / SAMPLE_RATE
    steps: dict[str, Callable[[], object]] = {
        "decode (baseline)": lambda: decode_audio(video, sample_rate=SAMPLE_RATE),
        "vad": lambda: speech_probabilities(audio),
        "segment (ours)": lambda: segments_from_probabilities(probabilities, duration=duration),
    }
    seconds: dict[str, list[float]] = {step: [] for step in steps}
    for _ in range(repeats):
        for step, work in steps.items():
            began = time.perf_counter()
            work()
            seconds[step].append(time.perf_counter() - began)
    decode = statistics.median(seconds["decode (baseline)"])
    return {
        "episode": name,
        "duration_s": round(duration, 1),
        "repeats": repeats,
        "seconds": {step: [round(x, 3) for x in values] for step, values in seconds.items()},
        "median_s": {step: round(statistics.median(v), 3) for step, v in seconds.items()},
        "median_over_decode": {
            step: round(statistics.median(v) / decode, 3) for step, v in seconds.items()
        },
    }


# ---------------------------------------------------------------------------------------------
# Command line


def run(names: Sequence[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"options": asdict(SpeechSegmentOptions()), "episodes": {}}
    for name in names:
        began = time.monotonic()
        episode = load_episode(name)
        loaded_s = time.monotonic() - began
        results["episodes"][name] = {"duration_s": round(episode.duration, 1)}
        for method, segmenter in SEGMENTERS.items():
            scores = score(episode.truth, segmenter(episode))
            scores["errors_per_100"] = round(errors_per_100(scores), 2)
            results["episodes"][name][method] = scores
        logger.info("%s: decoded and VAD in %.1f s", name, loaded_s)
    results["mean"] = {
        preset: {
            method: {
                key: round(
                    statistics.mean(
                        results["episodes"][name][method][key]
                        for name in names
                        if name.startswith(preset + "-")
                    ),
                    3,
                )
                for key in results["episodes"][names[0]][method]
            }
            for method in SEGMENTERS
        }
        for preset in sorted({name.rsplit("-seed", 1)[0] for name in names})
    }
    return results


def table(results: dict[str, Any]) -> str:
    """The Markdown table of bench/README.md: one row per episode (and mean) and segmenter."""
    header = (
        "| episode | segmenter | lines → segments | start err med / p90 s | end err med / p90 s "
        "| missed speech s (%) | false speech s (%) | split /100 | merged /100 | lost /100 "
        "| errors /100 |"
    )
    rows = [header, "|" + "---|" * 11]
    entries = list(results["episodes"].items()) + [
        (f"**mean {preset}**", methods) for preset, methods in results["mean"].items()
    ]
    for name, methods in entries:
        for method in SEGMENTERS:
            s = methods[method]
            rows.append(
                f"| {name} | {method} | {s['true_lines']:.0f} → {s['segments']:.0f} "
                f"| {s['start_error_median_s']:.2f} / {s['start_error_p90_s']:.2f} "
                f"| {s['end_error_median_s']:.2f} / {s['end_error_p90_s']:.2f} "
                f"| {s['missed_speech_s']:.1f} ({s['missed_speech_pct']:.1f}) "
                f"| {s['false_speech_s']:.1f} ({s['false_speech_pct']:.1f}) "
                f"| {s['split_per_100']:.1f} | {s['merged_per_100']:.1f} "
                f"| {s['lost_per_100']:.1f} | {s['errors_per_100']:.1f} |"
            )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_segmentation", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--episodes",
        nargs="+",
        help="episode names (default: the evaluation episodes; with --tune, the training ones)",
    )
    parser.add_argument(
        "--tune", action="store_true", help="grid-search the options on the training episodes"
    )
    parser.add_argument(
        "--timing",
        metavar="EPISODE",
        help="instead: time decode, VAD and segmentation on this episode (medians)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="rounds for --timing")
    parser.add_argument(
        "--out", type=Path, help="JSON results (default: bench/results/segmentation.json)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.timing:
        measured = timing(args.timing, repeats=args.repeats)
        out = args.out or RESULTS / "segmentation_timing.json"
        atomic_write_json(out, measured)
        print(json.dumps(measured, indent=1))
        return 0
    if args.tune:
        names = args.episodes or list(TRAINING_EPISODES)
        rows = tune([load_episode(name) for name in names])
        out = args.out or RESULTS / "segmentation_tuning.json"
        default = next((r for r in rows if r["options"] == asdict(SpeechSegmentOptions())), None)
        rank = rows.index(default) + 1 if default is not None else None
        atomic_write_json(
            out,
            {
                "episodes": names,
                "grid": TUNING_GRID,
                "top": rows[:20],
                "defaults": default,
                "defaults_rank": rank,
                "points": len(rows),
            },
        )
        for row in rows[:10]:
            print(json.dumps(row))
        if default is not None:
            print("defaults:", json.dumps(default), f"(rank {rank}/{len(rows)})")
        return 0
    names = args.episodes or list(EVALUATION_EPISODES)
    results = run(names)
    out = args.out or RESULTS / "segmentation.json"
    atomic_write_json(out, results)
    print(table(results))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
