"""Cold start across domains: our grouping under several priors and skeletons, beside the baselines.

    python -m bench.bench_cold_start [--priors NAME=FILE ...] [--skeletons 0 1 2]
        [--generated hard-seed1 ...] [--out bench/results/real_voices/cold_start.json]

Issue 15 item 2. Scores, in one run and on the same resemblyzer vectors:

- the baselines of docs/architecture.md §5 (spectral clustering with eigengap k, HDBSCAN,
  average linkage with its cut tuned on the training episodes of the same domain);
- ours, cold (no label), once per priors file (default: the shipped ones) and per skeleton
  (``community`` 0 the gated clustering at the learned threshold, 1 the modularity communities
  of the merge graph, 2 the per-episode choice; ``prior`` = what the priors file says);

on the real-voice evaluation episodes (``bench.real_voices``), and on the generated evaluation
episodes named with ``--generated`` that are already built (never built here: each costs
minutes). With ``--split training`` it scores the real-voice training episodes instead (to
choose a design there, not on evaluation). Prints one table per domain and checks the issue's
targets on the real-voice episodes.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foundation.atomic import atomic_write_json

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results" / "real_voices"
BASELINES = ("spectral", "hdbscan", "linkage-tuned")
MARGIN = 0.05
"""Issue 15: mean edge F1 at least the best baseline's + this, no episode more than this below
the best baseline on it, and operations per 100 lines at most `OPS_RATIO` x the best's."""
OPS_RATIO = 0.7


def our_method(priors: Path | None, skeleton: str) -> Any:
    """A bench_quality `Method`: ``SpeakerGrouper(priors=...)`` cold, skeleton forced or not."""
    from bench.bench_quality import MethodRun, _timed
    from ml_backend.grouping import SpeakerGrouper
    from ml_backend.grouping.params import params_for_priors
    from ml_backend.grouping.priors import load_priors

    loaded = load_priors(priors)
    params = params_for_priors(loaded)
    if skeleton != "prior":
        params = params.replace(community=int(skeleton))

    def run(data: Any) -> Any:
        grouper = SpeakerGrouper(params, priors=loaded)
        grouping, seconds = _timed(lambda: grouper.propose(data.lines))
        labels = [p.speaker for p in grouping.proposals]
        return MethodRun(labels, seconds, note=grouping.skeleton)

    return run


def generated_sets(names: Sequence[str]) -> list[Any]:
    """The named generated episodes that are built (others skipped with a warning)."""
    from bench.bench_quality import built, load_set, parse_set_name

    sets = []
    for name in names:
        preset, seed = parse_set_name(name)
        cached = built(preset, seed)
        if cached is None:
            logger.warning("%s is not built; left out (python -m bench.episode_cache)", name)
            continue
        sets.append(load_set(name, preset, cached))
    return sets


def tuned_cut(sets: Sequence[Any]) -> float | None:
    from bench import baselines

    if not sets:
        return None
    return baselines.tune_linkage_threshold([(s.lines.voice, s.truth) for s in sets]).best


def summarise(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Per method: per-episode edge F1 and ops/100, their means, and the targets' verdicts."""
    table: dict[str, Any] = {}
    for method in methods:
        f1 = [r["methods"][method]["edge"]["f1"] or 0.0 for r in rows]
        ops = [r["methods"][method]["operations"]["per_100_lines"] for r in rows]
        table[method] = {
            "f1": f1,
            "ops": ops,
            "mean_f1": float(np.mean(f1)),
            "mean_ops": float(np.mean(ops)),
            "notes": [r["methods"][method]["note"] for r in rows],
        }
    present = [b for b in BASELINES if b in table]
    if present:
        best = max(present, key=lambda b: table[b]["mean_f1"])
        best_each = np.max([table[b]["f1"] for b in present], axis=0)
        best_ops = min(table[b]["mean_ops"] for b in present)
        for method in methods:
            if method in BASELINES:
                continue
            entry = table[method]
            entry["targets"] = {
                "mean_f1": entry["mean_f1"] >= table[best]["mean_f1"] + MARGIN,
                "every_episode": bool(np.all(np.array(entry["f1"]) >= best_each - MARGIN)),
                "ops": entry["mean_ops"] <= OPS_RATIO * best_ops,
            }
        table["_best_baseline"] = {"method": best, "best_ops": best_ops}
    return table


def format_table(name: str, rows: Sequence[dict[str, Any]], table: dict[str, Any]) -> str:
    episodes = [r["name"] for r in rows]
    out = [f"\n{name}", "| method | " + " | ".join(episodes) + " | mean edge F1 | mean ops/100 |"]
    out.append("|---" * (len(episodes) + 3) + "|")
    for method, entry in table.items():
        if method.startswith("_"):
            continue
        cells = [
            f"{f:.3f} / {o:.1f}" + (f" ({n})" if n else "")
            for f, o, n in zip(entry["f1"], entry["ops"], entry["notes"], strict=True)
        ]
        verdict = ""
        if "targets" in entry:
            verdict = "  targets: " + ", ".join(
                f"{k} {'met' if v else 'missed'}" for k, v in entry["targets"].items()
            )
        out.append(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {entry['mean_f1']:.3f} | {entry['mean_ops']:.1f} |{verdict}"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_cold_start", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--priors",
        nargs="*",
        default=[],
        metavar="NAME=FILE",
        help="priors files to compare (default: the shipped ones, as 'shipped')",
    )
    parser.add_argument(
        "--skeletons",
        nargs="*",
        default=["prior"],
        choices=("prior", "0", "1", "2"),
        help="community option to force (default: what each priors file says)",
    )
    parser.add_argument("--split", choices=("evaluation", "training"), default="evaluation")
    parser.add_argument(
        "--generated", nargs="*", default=[], help="generated episode sets, e.g. hard-seed1"
    )
    parser.add_argument(
        "--generated-cut",
        type=float,
        help="linkage cut for the generated episodes when their training split is not built "
        "(the quality benchmark's tuned cut)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "cold_start.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from bench.bench_quality import _real_voice_sets, baseline_methods, evaluate

    priors = dict(item.split("=", 1) for item in args.priors) or {"shipped": ""}
    ours = {
        f"ours[{name}{'' if skeleton == 'prior' else f', community {skeleton}'}]": our_method(
            Path(path) if path else None, skeleton
        )
        for name, path in priors.items()
        for skeleton in args.skeletons
    }
    report: dict[str, Any] = {}
    domains = [("real", _real_voice_sets(args.split), _real_voice_sets("training"))]
    if args.generated:
        from bench.episode_cache import TRAINING

        training = generated_sets([f"{p}-seed{s}" for p, s in TRAINING if p != "season"])
        domains.append(("generated", generated_sets(args.generated), training))
    for domain, sets, training in domains:
        if not sets:
            continue
        cut = tuned_cut(training)
        if cut is None and domain == "generated":
            cut = args.generated_cut
        methods = {k: v for k, v in baseline_methods(cut).items() if k in BASELINES} | ours
        rows = evaluate(sets, methods)
        table = summarise(rows, list(methods))
        report[domain] = {"tuned_cut": cut, "rows": rows, "table": table}
        print(format_table(f"{domain} ({args.split}; linkage cut {cut})", rows, table))
    atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
