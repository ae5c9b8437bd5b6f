"""Speed and memory of the grouping on synthetic vectors (no media needed).

    python -m bench.bench_grouping_speed [--season-lines 20000] [--repeats 3]

Prints the median of ``--repeats`` runs of: `SpeakerGrouper.fit` on a 450-line episode with a
third of it labelled (target < 0.3 s), `propose` on that episode (target <= 1 s), and `propose`
on a season of ``--season-lines`` lines over 12 episodes (target <= 30 s and <= 2 GB; also with
the gated clustering alone, the skeleton before the joined one, as the same-run baseline), then
``fit`` and ``propose`` on that season with 5 % of it labelled (the name model's cost at season
scale), each with labels also with the name model switched off as the same-run baseline, plus
the process's peak resident memory. Shipped priors are used; the synthetic vectors
come from another "model", so the grouper's warning about that is silenced.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

from ml_backend.grouping import GrouperParams, SpeakerGrouper
from ml_backend.grouping.synthetic import synthetic_lines


def _median_time(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _interleaved(runs: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each run, the runs taking turns within every repeat, so that a change
    in the machine's load during the benchmark falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


BASELINES = (
    ("", {}),
    (" with the gated clustering alone", {"community": 0}),
    (" without the name model's second look", {"name_sure": 1.0}),
    (" without the name model", {"name_min_labels": 10**9}),
)
"""Measured in the same run: the default grouper (the joined skeleton), then the skeleton before
it (the gated clustering alone, which the joined skeleton runs first), then parts of the name
model off."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_grouping_speed")
    parser.add_argument("--season-lines", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    priors = SpeakerGrouper().priors
    episode, truth = synthetic_lines(
        450, speakers=10, seed=1, voice_model=priors.voice_model, image_model=priors.image_model
    )
    labels = {episode.line_ids[i]: str(truth[i]) for i in range(0, len(truth), 3)}
    groupers = {what: SpeakerGrouper(GrouperParams(**changes)) for what, changes in BASELINES}
    fit_s = _interleaved(
        {what: (lambda g=g: g.fit(episode, labels)) for what, g in groupers.items()}, args.repeats
    )
    propose_s = _interleaved(
        {what: (lambda g=g: g.propose(episode, labels)) for what, g in groupers.items()},
        args.repeats,
    )
    for what in groupers:
        print(
            f"fit, 450 lines ({len(labels)} labelled){what}: {fit_s[what]:.3f} s (target < 0.3 s)"
        )
        print(f"propose, 450 lines{what}: {propose_s[what]:.3f} s (target <= 1 s)")

    season, season_truth = synthetic_lines(
        args.season_lines,
        speakers=40,
        episodes=12,
        seed=2,
        voice_model=priors.voice_model,
        image_model=priors.image_model,
    )
    cold = {what: SpeakerGrouper(GrouperParams(**changes)) for what, changes in BASELINES[:2]}
    season_s = _interleaved(
        {what: (lambda g=g: g.propose(season)) for what, g in cold.items()}, args.repeats
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for what in cold:
        print(
            f"propose, {args.season_lines} lines over 12 episodes{what}: {season_s[what]:.2f} s "
            "(target <= 30 s)"
        )
    print(f"peak RSS of this process {peak_mb:.0f} MB (target <= 2048 MB)")
    # with labels the name model runs too: 5 % of the season labelled, fit then propose
    step = 20
    season_labels = {
        season.line_ids[i]: str(season_truth[i]) for i in range(0, len(season_truth), step)
    }
    labelled = {what: SpeakerGrouper(GrouperParams(**changes)) for what, changes in BASELINES}
    fit_s = _interleaved(
        {what: (lambda g=g: g.fit(season, season_labels)) for what, g in labelled.items()},
        args.repeats,
    )
    propose_s = _interleaved(
        {what: (lambda g=g: g.propose(season, season_labels)) for what, g in labelled.items()},
        args.repeats,
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for what in labelled:
        print(
            f"fit + propose, {args.season_lines} lines with {len(season_labels)} labelled"
            f"{what}: {fit_s[what]:.2f} s + {propose_s[what]:.2f} s (target <= 30 s)"
        )
    print(f"peak RSS of this process {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
