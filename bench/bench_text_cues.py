"""Do the subtitle texts say who speaks? Text cues learned from the labels, against voice alone.

    python -m bench.bench_text_cues [--split training] [--shares 0.05 0.1 0.3] [--draws 3]

Issue 15 item 4: game and anime scripts give characters their own words, so a text model
fitted on the labelled lines might help name the rest. Measured before wiring anything into
the name model: on each real-voice episode (and the generated training episodes that are
built), a random share of lines is labelled; every other line whose speaker is among the
labelled names is named by

- **voice**: softmax over the known names of 20 x the mean of the line's 3 best cosine
  similarities to that name's labelled lines (the name model's strongest evidence);
- **text**: a character 2-4-gram TF-IDF logistic regression (scikit-learn) fitted on the
  labelled lines' subtitles (word unigrams and complement naive Bayes did no better);
- **voice + lambda x text**: the sum of the two log-probabilities.

The figure is the share named right. Results go to
``bench/results/real_voices/text_cues.json``.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foundation.atomic import atomic_write_json

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results" / "real_voices"
LAMBDAS = (0.0, 0.3, 1.0)
VOICE_TEMPERATURE = 20.0
TOP = 3


def voice_log_proba(
    voice: np.ndarray,
    labelled: np.ndarray,
    rest: np.ndarray,
    truth: np.ndarray,
    names: Sequence[str],
) -> np.ndarray:
    """(len(rest), len(names)) log P(name) from the top-3 similarity to each name's lines."""
    similarity = voice[rest] @ voice[labelled].T
    scores = np.full((len(rest), len(names)), -1.0)
    for j, name in enumerate(names):
        columns = np.flatnonzero(truth[labelled] == name)
        scores[:, j] = np.sort(similarity[:, columns], axis=1)[:, -TOP:].mean(axis=1)
    logits = VOICE_TEMPERATURE * scores
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def text_log_proba(
    texts: Sequence[str],
    labelled: np.ndarray,
    rest: np.ndarray,
    truth: np.ndarray,
    names: Sequence[str],
) -> np.ndarray:
    """(len(rest), len(names)) log P(name) of a character n-gram model of the labelled lines."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if len(names) < 2:
        return np.zeros((len(rest), len(names)))
    vectoriser = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
    train = vectoriser.fit_transform([texts[i] for i in labelled])
    model = LogisticRegression(C=3.0, max_iter=300).fit(train, truth[labelled])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        log_p = model.predict_log_proba(vectoriser.transform([texts[i] for i in rest]))
    order = [list(model.classes_).index(name) for name in names]
    return log_p[:, order]


def score_episode(
    voice: np.ndarray,
    texts: Sequence[str],
    truth: Sequence[str],
    shares: Sequence[float],
    draws: int,
) -> dict[str, Any]:
    """Per share and lambda: the mean share of unlabelled lines (with a known name) named right."""
    truth = np.asarray(truth)
    voice = np.asarray(voice, np.float64)
    n = len(truth)
    out: dict[str, Any] = {}
    for share in shares:
        right: dict[str, list[float]] = {}
        for draw in range(draws):
            rng = np.random.default_rng(draw)
            labelled = rng.choice(n, size=max(2, round(share * n)), replace=False)
            rest = np.setdiff1d(np.arange(n), labelled)
            names = sorted(set(truth[labelled].tolist()))
            rest = rest[np.isin(truth[rest], names)]
            v = voice_log_proba(voice, labelled, rest, truth, names)
            t = text_log_proba(texts, labelled, rest, truth, names)
            for lam in LAMBDAS:
                named = np.asarray(names)[np.argmax(v + lam * t, axis=1)]
                right.setdefault(f"voice+{lam:g}text", []).append(
                    float((named == truth[rest]).mean())
                )
            named = np.asarray(names)[np.argmax(t, axis=1)]
            right.setdefault("text", []).append(float((named == truth[rest]).mean()))
        out[f"{share:g}"] = {key: float(np.mean(values)) for key, values in right.items()}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_text_cues", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--split", choices=("training", "evaluation", "all"), default="training")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.05, 0.1, 0.3])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "text_cues.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from bench.bench_quality import load_set
    from bench.episode_cache import CACHE, READY, TRAINING, CachedEpisode
    from bench.real_voices.episodes import built_episodes

    cached = list(built_episodes(args.split))
    if args.split != "evaluation":  # generated training episodes already built, for contrast
        for preset, seed in TRAINING:
            folder = CACHE / f"{preset}-seed{seed}"
            if preset != "season" and (folder / READY).is_file():
                cached.append(CachedEpisode(name=f"{preset}-seed{seed}", folder=folder))
    report: dict[str, Any] = {}
    for episode in cached:
        data = load_set(episode.name, "x", [episode])
        report[episode.name] = score_episode(
            data.lines.voice, data.lines.texts, data.truth, args.shares, args.draws
        )
        logger.info("%s: %s", episode.name, report[episode.name])
    atomic_write_json(args.out, report)
    for share in (f"{s:g}" for s in args.shares):
        for domain, test in (
            ("real", lambda name: name.startswith("queen-")),
            ("generated", lambda name: not name.startswith("queen-")),
        ):
            rows = [r[share] for name, r in report.items() if test(name)]
            if rows:
                means = {key: np.mean([row[key] for row in rows]) for key in rows[0]}
                print(f"{domain} {share}: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
