"""The proposal score and the annotation loop's behaviour: issue 16 items 3-4, issue 15 item 3.

    python -m bench.bench_score cold [--episodes ...] [--real-voices SPLIT]
    python -m bench.bench_score loop --config NAME=OPTIONS ... [--wrong-answers 0.05] [--seed 1]

``cold``: at cold start (no label), does sorting by the score put wrong proposals first? For
each episode and each review mode (`ml_backend.grouping.scoring.REVIEW_MODES`), the share of
wrong proposals among the lowest 10 % of scores (a proposal is wrong when the line is not with
the speaker most of its cluster has, or is unassigned: the operation count's rule), next to the
share of wrong proposals overall (what a random order would give).

``loop``: `bench.bench_loop.simulate_direct` under named configurations (grouper options as
JSON, plus ``order`` for the annotator's side), with the loop metrics of `bench.loop_metrics`
(calibration, churn, new speakers, blast radius), optionally with a share of wrong answers.
Episodes are the generated ones that are built (``--episodes``) and the real-voice ones
(``--real-voices training|evaluation|all``, built on first use). Results go to JSON
(``--out``); a summary table is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_loop import LoopEpisode, cached_episodes, real_voice_episodes, simulate_direct
from bench.loop_metrics import lowest_share_precision
from foundation.atomic import atomic_write_json
from foundation.layout import line_index

RESULTS = Path(__file__).resolve().parent / "results"


def episodes_from(args: argparse.Namespace) -> list[LoopEpisode]:
    chosen: list[LoopEpisode] = []
    if args.episodes:
        chosen += cached_episodes(args.episodes)
    if args.real_voices:
        chosen += real_voice_episodes(args.real_voices)
    if not chosen:
        raise SystemExit("error: no episode chosen (--episodes and/or --real-voices)")
    return chosen


# ---------------------------------------------------------------------------- cold start


def cold_wrong(proposals: Sequence[Any], truth: Sequence[str]) -> np.ndarray:
    """(n,) bool: the proposal is wrong (see the module docstring)."""
    clusters = np.array([p.cluster for p in proposals])
    truth_a = np.asarray(truth, dtype=object)
    majority = {
        int(c): Counter(truth_a[clusters == c].tolist()).most_common(1)[0][0]
        for c in np.unique(clusters[clusters >= 0])
    }
    return np.array(
        [
            p.speaker is None or majority[p.cluster] != truth[i]
            if p.speaker is None or p.speaker.startswith("Speaker ")
            else p.speaker != truth[i]
            for i, p in enumerate(proposals)
        ]
    )


def cold(episodes: Sequence[LoopEpisode], modes: Sequence[str]) -> dict[str, Any]:
    from ml_backend.episode_lines import load_lines
    from ml_backend.grouping import SpeakerGrouper
    from ml_backend.grouping.params import params_for_priors
    from ml_backend.grouping.priors import load_priors
    from ml_backend.grouping.scoring import REVIEW_MODES

    priors = load_priors()

    rows = []
    for episode in episodes:
        lines = load_lines([episode.imported])
        truth = [episode.truth[line_index(k)] for k in lines.line_ids]
        row: dict[str, Any] = {"episode": episode.name, "preset": episode.preset}
        for mode in modes:
            params = params_for_priors(priors).replace(review=REVIEW_MODES.index(mode))
            proposals = SpeakerGrouper(params, priors=priors).propose(lines).proposals
            wrong = cold_wrong(proposals, truth)
            scores = np.array([p.score for p in proposals])
            row[mode] = {
                "lowest_10_precision": round(lowest_share_precision(scores, wrong, 0.1), 3),
                "wrong_share": round(float(wrong.mean()), 3),
                "score_median": round(float(np.median(scores)), 4),
            }
        row["lines"] = len(truth)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows, "means": _cold_means(rows, modes)}


def _cold_means(rows: Sequence[dict[str, Any]], modes: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for preset in dict.fromkeys(r["preset"] for r in rows):
        chosen = [r for r in rows if r["preset"] == preset]
        out[preset] = {
            mode: {
                key: round(statistics.fmean(r[mode][key] for r in chosen), 3)
                for key in ("lowest_10_precision", "wrong_share")
            }
            for mode in modes
        }
    return out


# ---------------------------------------------------------------------------- loop


def loop(
    episodes: Sequence[LoopEpisode],
    configs: dict[str, dict[str, Any]],
    *,
    wrong_answers: Sequence[float],
    seeds: Sequence[int],
) -> dict[str, Any]:
    rows = []
    for episode in episodes:
        for name, config in configs.items():
            options = dict(config)
            order = str(options.pop("order", "score"))
            for share in wrong_answers:
                for seed in seeds if share > 0 else seeds[:1]:
                    began = time.perf_counter()
                    result = simulate_direct(
                        episode,
                        grouper_options=options,
                        order=order,
                        wrong_answers=share,
                        seed=seed,
                        track=True,
                    )
                    row = {
                        "episode": episode.name,
                        "preset": episode.preset,
                        "config": name,
                        "wrong_answers": share,
                        "seed": seed,
                        **result.to_json(),
                    }
                    rows.append(row)
                    m = result.metrics or {}
                    print(
                        f"{episode.name} {name} wrong={share} seed={seed}: "
                        f"{result.corrections} corr / {result.reviews} rev of {result.lines}, "
                        f"mistakes {result.mistakes}, churn "
                        f"{m['churn']['right_to_wrong_per_100']}, wrong>=0.9 "
                        f"{m['calibration']['wrong_high_share']}, new-speaker placeholder "
                        f"{m['new_speakers']['first_line_placeholder_share']}, blast "
                        f"{m['blast']['wrong_answer_changed']} "
                        f"({time.perf_counter() - began:.0f} s)",
                        flush=True,
                    )
    return {"rows": rows, "summary": summarise(rows)}


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (preset group, config, wrong share): pooled and mean figures."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["preset"], row["config"], row["wrong_answers"]), []).append(row)
    out = []
    for (preset, config, share), chosen in groups.items():
        lines = sum(r["lines"] for r in chosen)
        wrong = sum(r["metrics"]["calibration"]["wrong"] for r in chosen)
        high = sum(r["metrics"]["calibration"]["wrong_scored_high"] for r in chosen)
        speakers = sum(r["metrics"]["new_speakers"]["speakers"] for r in chosen)
        first_new = sum(
            r["metrics"]["new_speakers"]["first_line"].get("placeholder", 0) for r in chosen
        )
        changed = [c for r in chosen for c in r["metrics"]["blast"]["wrong_answer_changed"]]
        broke = [c for r in chosen for c in r["metrics"]["blast"]["wrong_answer_broke"]]
        mistakes = sum(r["mistakes"] for r in chosen)
        out.append(
            {
                "preset": preset,
                "config": config,
                "wrong_answers": share,
                "runs": len(chosen),
                "lines": lines,
                "corrections_per_100": round(
                    100 * sum(r["corrections"] for r in chosen) / lines, 2
                ),
                "reviews_per_100": round(100 * sum(r["reviews"] for r in chosen) / lines, 2),
                "mistakes": mistakes,
                "wrong_labels_left": sum(r["wrong_labels"] for r in chosen),
                "final_wrong": sum(r["final_wrong"] or 0 for r in chosen),
                "churn_per_100": round(
                    100 * sum(r["metrics"]["churn"]["right_to_wrong"] for r in chosen) / lines, 2
                ),
                "wrong_high_share": round(high / max(1, wrong), 3),
                "new_speaker_placeholder_share": round(first_new / max(1, speakers), 3),
                "wrong_answer_changed_median": (
                    float(statistics.median(changed)) if changed else None
                ),
                "wrong_answer_changed_max": max(changed, default=None),
                "wrong_answer_broke_total": sum(broke),
            }
        )
    return out


def markdown(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as a bench/README.md table."""
    out = [
        "| episodes | config | wrong answers | corr/100 | rev/100 | mistakes | churn /100 "
        "| wrong scored ≥ 0.9 | new speaker first line as placeholder | lines changed per "
        "wrong answer (median, max) | right→wrong by wrong answers |",
        "|" + "---|" * 11,
    ]
    for row in summary:
        changed = row["wrong_answer_changed_median"]
        spread = "-" if changed is None else f"{changed:g}, {row['wrong_answer_changed_max']}"
        out.append(
            f"| {row['preset']} ({row['runs']}) | {row['config']} | {row['wrong_answers']:.0%} "
            f"| {row['corrections_per_100']:.2f} | {row['reviews_per_100']:.2f} "
            f"| {row['mistakes']} | {row['churn_per_100']:.1f} | {row['wrong_high_share']:.3f} "
            f"| {row['new_speaker_placeholder_share']:.3f} "
            f"| {spread} "
            f"| {row['wrong_answer_broke_total'] if row['mistakes'] else '-'} |"
        )
    return "\n".join(out)


def _config(text: str) -> tuple[str, dict[str, Any]]:
    name, _, options = text.partition("=")
    return name, json.loads(options or "{}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_score", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("cold", "loop"):
        sub = commands.add_parser(command)
        sub.add_argument("--episodes", nargs="*", default=[], metavar="NAME")
        sub.add_argument("--real-voices", choices=("training", "evaluation", "all"))
        sub.add_argument("--out", type=Path, default=RESULTS / f"score_{command}.json")
    cold_parser = commands.choices["cold"]
    cold_parser.add_argument("--modes", nargs="+", default=["legacy", "doubt", "representative"])
    loop_parser = commands.choices["loop"]
    loop_parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar='NAME={"option": value}',
        help="grouper options (and 'order') as JSON; repeatable (default: the shipped options)",
    )
    loop_parser.add_argument("--wrong-answers", type=float, nargs="+", default=[0.0])
    loop_parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    episodes = episodes_from(args)
    if args.command == "cold":
        document = cold(episodes, args.modes)
        print(json.dumps(document["means"], indent=1))
    else:
        configs = dict(_config(c) for c in args.config) or {"shipped": {}}
        document = loop(episodes, configs, wrong_answers=args.wrong_answers, seeds=args.seeds)
        print(markdown(document["summary"]))
    atomic_write_json(args.out, document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
