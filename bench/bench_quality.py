"""Quality on held-out episodes: our method against every baseline of docs/architecture.md §5.

Every method sees the same lines and the same embeddings (the default voice model; ours may also
use the image vectors). An episode is one grouping; a season (six episodes sharing a cast) is
*one* grouping across its episodes, since recurring characters must get the same speaker. The
table gives edge P/R/F1, BCubed F1, coverage and operations per 100 lines per episode and the mean
per preset; ``quality.json`` holds every number, ``quality_pr.png`` the precision–recall curves
of average linkage swept over its cut, with ours (swept over its merge threshold when it has one).

Methods (labels used are ground truth, as a perfect annotator would give them):

- ``prototype``: average linkage, cosine, cut at distance 0.7, voice only;
- ``linkage-tuned``: average linkage cut where mean edge F1 over the training episodes peaks;
- ``knn-10%``: the prototype's workflow: the first 10% of lines labelled, 1-NN for the rest;
- ``spectral``: NME-SC spectral clustering, speakers from the eigengap; ``hdbscan``;
- ``ours``: ``SpeakerGrouper().propose(lines)``: cold start, shipped priors, no labels;
- ``ours+5%``: the same after ``fit`` on the labels of a random 5% of lines, which it is also
  given as constraints.

Only episodes already built are used unless ``--build`` is given (building one costs minutes).

Usage: ``speaker-grouping bench quality [--episodes standard-seed1 season-seed1 ...] [--out DIR]``
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import baselines
from bench.episode_cache import CACHE, EVALUATION, READY, TRAINING, CachedEpisode, episodes
from foundation.atomic import atomic_write_bytes, atomic_write_json
from foundation.layout import line_index
from ml_backend.episode_lines import load_lines
from ml_backend.grouping.lines import EpisodeLines, concatenate
from ml_backend.metrics import edge_scores, score_grouping

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
LABELLED_SHARE = 0.05
"""Share of lines whose labels ``ours+5%`` is given."""
OUR_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Merge thresholds (P(same speaker)) of ours swept for the precision-recall plot."""


@dataclass(frozen=True)
class EvalSet:
    """One grouping problem: the lines of an episode (or a whole season) and their truth."""

    name: str
    preset: str
    lines: EpisodeLines
    truth: list[str]
    """(n,) true character per line, aligned with ``lines.line_ids``."""


@dataclass(frozen=True)
class MethodRun:
    labels: list[Any]
    """(n,) predicted cluster or speaker per line; unassigned per `metrics.is_unassigned`."""
    seconds: float
    labels_used: int = 0
    """Ground-truth labels the method was given."""
    note: str = ""


Method = Callable[[EvalSet], MethodRun]


@dataclass
class Report:
    sets: list[dict[str, Any]] = field(default_factory=list)
    means: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    tuned_threshold: float | None = None
    tuned_training_f1: float | None = None
    training: list[str] = field(default_factory=list)
    curves: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def set_name(preset: str, seed: int) -> str:
    return f"{preset}-seed{seed}"


def built(
    preset: str, seed: int, *, cache: Path = CACHE, build: bool = False
) -> list[CachedEpisode] | None:
    """The cached episodes of (preset, seed), or None when not built yet (and not ``build``)."""
    if not build and not (cache / set_name(preset, seed) / READY).is_file():
        return None
    return episodes(preset, seed, cache=cache)


def load_set(name: str, preset: str, cached: Sequence[CachedEpisode]) -> EvalSet:
    """Lines and truth of cached episodes, concatenated in order as one grouping."""
    from bench.voice_accuracy import read_truth

    parts, truth = [], []
    for episode in cached:
        lines = load_lines([episode.imported])
        characters = {row.index: row.character for row in read_truth(episode.truth)}
        for line_id in lines.line_ids:
            index = line_index(line_id)
            if index not in characters:
                raise ValueError(f"{episode.truth}: no truth for line {line_id}")
            truth.append(characters[index])
        parts.append(lines)
    return EvalSet(name=name, preset=preset, lines=concatenate(parts), truth=truth)


def parse_set_name(name: str) -> tuple[str, int]:
    preset, _, seed = name.rpartition("-seed")
    if not preset or not seed.isdigit():
        raise ValueError(f"bad episode set {name!r}: want <preset>-seed<N>, e.g. hard-seed2")
    return preset, int(seed)


# --------------------------------------------------------------------------- methods


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    result = run()
    return result, time.perf_counter() - began


def baseline_methods(threshold: float | None, *, seed: int = 0) -> dict[str, Method]:
    """The §5 baselines; ``threshold`` is the tuned linkage cut (None: that row is left out)."""

    def prototype(data: EvalSet) -> MethodRun:
        labels, seconds = _timed(lambda: baselines.average_linkage(data.lines.voice))
        return MethodRun(list(labels), seconds)

    def tuned(data: EvalSet) -> MethodRun:
        labels, seconds = _timed(
            lambda: baselines.average_linkage(data.lines.voice, threshold=threshold)
        )
        return MethodRun(list(labels), seconds, note=f"cut {threshold:.2f}")

    def knn(data: EvalSet) -> MethodRun:
        hand = baselines.first_lines(data.truth)
        labels, seconds = _timed(lambda: baselines.knn_propagation(data.lines.voice, hand))
        return MethodRun(labels, seconds, labels_used=len(hand))

    def spectral(data: EvalSet) -> MethodRun:
        result, seconds = _timed(lambda: baselines.spectral_clustering(data.lines.voice, seed=seed))
        note = f"k={result.speakers} p={result.neighbours}"
        return MethodRun(list(result.labels), seconds, note=note)

    def hdbscan(data: EvalSet) -> MethodRun:
        labels, seconds = _timed(lambda: baselines.hdbscan(data.lines.voice))
        return MethodRun(list(labels), seconds)

    methods: dict[str, Method] = {"prototype": prototype}
    if threshold is not None:
        methods["linkage-tuned"] = tuned
    methods.update({"knn-10%": knn, "spectral": spectral, "hdbscan": hdbscan})
    return methods


def our_grouper(*, seed: int = 0, changes: Mapping[str, Any] | None = None) -> Any | None:
    """A `SpeakerGrouper` with its shipped priors and ``changes`` to their parameters, or None
    (logged) while unavailable."""
    try:
        from ml_backend.grouping import SpeakerGrouper
        from ml_backend.grouping.params import params_for_priors
        from ml_backend.grouping.priors import load_priors

        priors = load_priors()
        params = params_for_priors(priors).replace(**dict(changes or {}))
        grouper = SpeakerGrouper(params, priors=priors, seed=seed)
    except (ImportError, ValueError, FileNotFoundError) as error:
        logger.warning("our method is not available (%s); baselines only", error)
        return None
    return grouper


def our_methods(*, seed: int = 0, labelled_share: float = LABELLED_SHARE) -> dict[str, Method]:
    """Ours cold and with a few labels; empty (with a warning) while the grouper is missing."""
    if our_grouper(seed=seed) is None:
        return {}

    def cold(data: EvalSet) -> MethodRun:
        grouper = our_grouper(seed=seed)
        grouping, seconds = _timed(lambda: grouper.propose(data.lines))
        return MethodRun([proposal.speaker for proposal in grouping.proposals], seconds)

    def labelled(data: EvalSet) -> MethodRun:
        labels = random_labels(data, labelled_share, seed=seed)
        grouper = our_grouper(seed=seed)
        # what the backend does after annotations arrive: refit from them, then re-propose
        grouping, seconds = _timed(
            lambda: grouper.fit(data.lines, labels).propose(data.lines, labels)
        )
        proposals = grouping.proposals
        speakers = [proposal.speaker for proposal in proposals]
        return MethodRun(speakers, seconds, labels_used=len(labels))

    return {"ours": cold, f"ours+{round(100 * labelled_share)}%": labelled}


def random_labels(data: EvalSet, share: float, *, seed: int = 0) -> dict[str, str]:
    """Ground-truth labels of a random ``share`` of the lines (at least one): line id -> name."""
    rng = np.random.default_rng(seed)
    count = max(1, math.ceil(share * len(data.truth)))
    chosen = sorted(rng.choice(len(data.truth), size=count, replace=False).tolist())
    return {data.lines.line_ids[i]: data.truth[i] for i in chosen}


# --------------------------------------------------------------------------- running


def evaluate(sets: Sequence[EvalSet], methods: dict[str, Method]) -> list[dict[str, Any]]:
    """Per set, per method: every metric, the time taken and the labels used."""
    rows = []
    for data in sets:
        entry: dict[str, Any] = {
            "name": data.name,
            "preset": data.preset,
            "lines": len(data.truth),
            "speakers": len(set(data.truth)),
            "episodes": len(dict.fromkeys(data.lines.episodes)),
            "methods": {},
        }
        for method_name, method in methods.items():
            run = method(data)
            scores = score_grouping(data.truth, run.labels)
            entry["methods"][method_name] = {
                **scores.to_dict(),
                "seconds": round(run.seconds, 3),
                "labels_used": run.labels_used,
                "note": run.note,
            }
            logger.info("%s %s: edge F1 %s", data.name, method_name, scores.edge.f1)
        rows.append(entry)
    return rows


_SUMMARY = {
    "edge_precision": ("edge", "precision"),
    "edge_recall": ("edge", "recall"),
    "edge_f1": ("edge", "f1"),
    "bcubed_f1": ("bcubed", "f1"),
    "coverage": ("coverage",),
    "ops_per_100": ("operations", "per_100_lines"),
}


def _pick(scores: dict[str, Any], path: tuple[str, ...]) -> float | None:
    for key in path:
        scores = scores[key]
    return scores  # type: ignore[return-value]


def preset_means(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean of each summary metric per preset and method (undefined values left out)."""
    means: dict[str, dict[str, dict[str, Any]]] = {}
    for preset in dict.fromkeys(row["preset"] for row in rows):
        chosen = [row for row in rows if row["preset"] == preset]
        means[preset] = {}
        for method in chosen[0]["methods"]:
            summary: dict[str, Any] = {"sets": len(chosen)}
            for key, path in _SUMMARY.items():
                values = [_pick(row["methods"][method], path) for row in chosen]
                values = [v for v in values if v is not None]
                summary[key] = float(np.mean(values)) if values else None
            means[preset][method] = summary
    return means


def linkage_curves(
    sets: Sequence[EvalSet], thresholds: Sequence[float]
) -> dict[str, dict[str, list[float | None]]]:
    """Per preset: pooled edge precision and recall of average linkage at each cut.

    Pairs are summed over the preset's sets before dividing, so big sets weigh more.
    """
    pooled: dict[str, np.ndarray] = {}
    for data in sets:
        counts = pooled.setdefault(data.preset, np.zeros((len(thresholds), 3), np.int64))
        present = np.abs(data.lines.voice).sum(axis=1) > 0
        tree = baselines.linkage_tree(data.lines.voice[present])
        for position, threshold in enumerate(thresholds):
            labels = np.full(len(present), -1, np.int64)
            labels[present] = baselines.cut_tree(tree, threshold)
            scores = edge_scores(data.truth, labels)
            counts[position] += (
                scores.correct_pairs,
                scores.predicted_pairs,
                scores.true_pairs,
            )
    return _pooled_curves(pooled, thresholds)


def our_curves(
    sets: Sequence[EvalSet], thresholds: Sequence[float], *, seed: int = 0
) -> dict[str, dict[str, list[float | None]]]:
    """Per preset: pooled edge precision and recall of ours (cold) at each merge threshold."""
    pooled: dict[str, np.ndarray] = {}
    for data in sets:
        counts = pooled.setdefault(data.preset, np.zeros((len(thresholds), 3), np.int64))
        for position, threshold in enumerate(thresholds):
            grouper = our_grouper(seed=seed, changes={"threshold": threshold})
            speakers = [proposal.speaker for proposal in grouper.propose(data.lines).proposals]
            scores = edge_scores(data.truth, speakers)
            counts[position] += (
                scores.correct_pairs,
                scores.predicted_pairs,
                scores.true_pairs,
            )
    return _pooled_curves(pooled, thresholds)


def _pooled_curves(
    pooled: dict[str, np.ndarray], thresholds: Sequence[float]
) -> dict[str, dict[str, list[float | None]]]:
    curves = {}
    for preset, counts in pooled.items():
        precision = [c / p if p else None for c, p, _ in counts.tolist()]
        recall = [c / t if t else None for c, _, t in counts.tolist()]
        curves[preset] = {"threshold": list(thresholds), "precision": precision, "recall": recall}
    return curves


def pooled_points(rows: Sequence[dict[str, Any]], method: str) -> dict[str, tuple[float, float]]:
    """Per preset: (recall, precision) of a method with pairs pooled over the preset's sets."""
    points = {}
    for preset in dict.fromkeys(row["preset"] for row in rows):
        chosen = [row["methods"][method]["edge"] for row in rows if row["preset"] == preset]
        correct = sum(e["correct_pairs"] for e in chosen)
        predicted = sum(e["predicted_pairs"] for e in chosen)
        true = sum(e["true_pairs"] for e in chosen)
        if predicted and true:
            points[preset] = (correct / true, correct / predicted)
    return points


# --------------------------------------------------------------------------- output


def format_table(rows: Sequence[dict[str, Any]], means: dict[str, dict[str, dict]]) -> str:
    """One plain-text table: every set and method, then the per-preset means."""

    def number(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    header = (
        f"{'set':<18}{'method':<15}{'lines':>6}{'spk':>4}{'clu':>5}"
        f"{'edgeP':>7}{'edgeR':>7}{'edgeF1':>7}{'B3F1':>7}{'cover':>7}{'ops%':>7}{'s':>7}  note"
    )
    out = [header, "-" * len(header)]
    for row in rows:
        for method, scores in row["methods"].items():
            out.append(
                f"{row['name']:<18}{method:<15}{row['lines']:>6}{row['speakers']:>4}"
                f"{scores['clusters']:>5}"
                f"{number(scores['edge']['precision']):>7}{number(scores['edge']['recall']):>7}"
                f"{number(scores['edge']['f1']):>7}{number(scores['bcubed']['f1']):>7}"
                f"{number(scores['coverage'], 2):>7}"
                f"{number(scores['operations']['per_100_lines'], 1):>7}"
                f"{scores['seconds']:>7.2f}  {scores['note']}"
                + (f" labels {scores['labels_used']}" if scores["labels_used"] else "")
            )
        out.append("")
    out.append("mean per preset")
    out.append(
        f"{'preset':<18}{'method':<15}{'sets':>6}{'':>9}"
        f"{'edgeP':>7}{'edgeR':>7}{'edgeF1':>7}{'B3F1':>7}{'cover':>7}{'ops%':>7}"
    )
    for preset, methods in means.items():
        for method, summary in methods.items():
            out.append(
                f"{preset:<18}{method:<15}{summary['sets']:>6}{'':>9}"
                f"{number(summary['edge_precision']):>7}{number(summary['edge_recall']):>7}"
                f"{number(summary['edge_f1']):>7}{number(summary['bcubed_f1']):>7}"
                f"{number(summary['coverage'], 2):>7}{number(summary['ops_per_100'], 1):>7}"
            )
    return "\n".join(out)


def plot_precision_recall(
    curves: dict[str, dict[str, dict[str, list]]],
    points: dict[str, dict[str, tuple[float, float]]],
    path: Path,
) -> None:
    """PNG of edge precision against recall.

    curves : family ("average linkage", "ours") -> preset -> swept precision and recall; one
        colour per preset, one line style per family.
    points : method -> preset -> (recall, precision) of its default setting.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 6), dpi=120)
    presets = list(dict.fromkeys(p for family in curves.values() for p in family))
    presets += [p for method in points.values() for p in method if p not in presets]
    colours = {preset: f"C{position}" for position, preset in enumerate(presets)}
    styles = ["-", "--", ":", "-."]
    for position, (family, per_preset) in enumerate(curves.items()):
        for preset, curve in per_preset.items():
            pairs = [
                (r, p)
                for r, p in zip(curve["recall"], curve["precision"], strict=True)
                if r is not None and p is not None
            ]
            if pairs:
                axes.plot(
                    *zip(*pairs, strict=True),
                    styles[position % len(styles)],
                    color=colours[preset],
                    marker="." if family != "average linkage" else None,
                    label=f"{family} sweep ({preset})",
                )
    markers = "o^sDvP*X"
    for position, (method, per_preset) in enumerate(points.items()):
        for preset, (recall, precision) in per_preset.items():
            axes.scatter(
                recall,
                precision,
                marker=markers[position % len(markers)],
                color=colours[preset],
                edgecolors="black",
                zorder=3,
                label=f"{method} ({preset})",
            )
    axes.set_xlabel("edge recall")
    axes.set_ylabel("edge precision")
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title("Pairwise precision–recall (pairs pooled per preset)")
    axes.legend(fontsize=6, loc="lower left", ncol=2)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------- command


def _sets(names: Sequence[tuple[str, int]], *, build: bool, cache: Path) -> list[EvalSet]:
    sets = []
    for preset, seed in names:
        cached = built(preset, seed, build=build, cache=cache)
        if cached is None:
            logger.warning(
                "%s is not built yet; skipped (--build builds it)", set_name(preset, seed)
            )
            continue
        sets.append(load_set(set_name(preset, seed), preset, cached))
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="speaker-grouping bench quality", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--episodes",
        nargs="+",
        metavar="SET",
        help="episode sets as <preset>-seed<N> (default: the evaluation split: "
        + " ".join(set_name(p, s) for p, s in EVALUATION)
        + ")",
    )
    parser.add_argument(
        "--train",
        nargs="*",
        metavar="SET",
        help="sets to tune the linkage cut on (default: the training split)",
    )
    parser.add_argument(
        "--real-voices",
        action="store_true",
        help="score the real-voice evaluation episodes instead, with the linkage cut tuned on "
        "the real-voice training episodes (bench.real_voices; built on first use); results go "
        "to <out>/real_voices/",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument("--build", action="store_true", help="build episodes not yet built")
    parser.add_argument("--cache", type=Path, default=CACHE, help=argparse.SUPPRESS)
    parser.add_argument("--no-ours", action="store_true", help="baselines only")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument(
        "--no-sweep", action="store_true", help="plot ours as points only (no threshold sweep)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Matrices here are a few thousand lines wide at most: extra BLAS threads gain nothing and,
    # on a busy machine, made one eigendecomposition 100x slower through contention. threadpoolctl
    # limits only the BLAS libraries already loaded, so load scipy's and scikit-learn's first.
    import scipy.linalg  # noqa: F401
    import sklearn.cluster  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _run(args)


def _real_voice_sets(split: str) -> list[EvalSet]:
    from bench.real_voices.episodes import built_episodes

    return [load_set(one.name, "real", [one]) for one in built_episodes(split)]


def _run(args: argparse.Namespace) -> int:
    if args.real_voices:
        sets, train_sets = _real_voice_sets("evaluation"), _real_voice_sets("training")
        args.out = args.out / "real_voices"
    else:
        chosen = [parse_set_name(n) for n in args.episodes] if args.episodes else list(EVALUATION)
        training = (
            [parse_set_name(n) for n in args.train]
            if args.train is not None
            else [(preset, seed) for preset, seed in TRAINING if preset != "season"]
        )  # the linkage cut as before the training season existed (one episode at a time)
        sets = _sets(chosen, build=args.build, cache=args.cache)
        if not sets:
            print("no episode set is built yet; nothing to evaluate (see --build)", file=sys.stderr)
            return 1
        train_sets = _sets(training, build=args.build, cache=args.cache)
    report = Report(training=[data.name for data in train_sets])
    if train_sets:
        sweep = baselines.tune_linkage_threshold(
            [(data.lines.voice, data.truth) for data in train_sets]
        )
        report.tuned_threshold = sweep.best
        report.tuned_training_f1 = max(sweep.mean_f1)
    else:
        logger.warning("no training episode built: the tuned linkage row is left out")

    methods = baseline_methods(report.tuned_threshold, seed=args.seed)
    if not args.no_ours:
        methods.update(our_methods(seed=args.seed))
    report.sets = evaluate(sets, methods)
    report.means = preset_means(report.sets)
    report.curves = {"average linkage": linkage_curves(sets, baselines.LINKAGE_THRESHOLDS[::5])}
    if any(name.startswith("ours") for name in methods) and not args.no_sweep:
        report.curves["ours"] = our_curves(sets, OUR_THRESHOLDS, seed=args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        args.out / "quality.json",
        {
            "sets": report.sets,
            "means": report.means,
            "tuned_threshold": report.tuned_threshold,
            "tuned_training_f1": report.tuned_training_f1,
            "training": report.training,
            "curves": report.curves,
            "voice_model": sets[0].lines.voice_model,
            "image_model": sets[0].lines.image_model,
        },
    )
    print(format_table(report.sets, report.means))
    if report.tuned_threshold is not None:
        print(
            f"\nlinkage cut tuned on {', '.join(report.training)}: {report.tuned_threshold:.2f} "
            f"(mean training edge F1 {report.tuned_training_f1:.3f})"
        )
    print(f"results: {args.out / 'quality.json'}")
    if not args.no_plot:
        points = {
            method: pooled_points(report.sets, method)
            for method in methods
            if method != "linkage-tuned"
        }
        plot_precision_recall(report.curves, points, args.out / "quality_pr.png")
        print(f"plot:    {args.out / 'quality_pr.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
