"""The name model's evidence: what one line says for each known name, as pure functions.

For rows of a `LineContext` against the labels so far (``codes``, (n,) int, -1 unlabelled):

- ``F`` (r, J, len(NAME_FEATURES)): evidence of each row for each of the J names: voice and
  image similarity to the name's labelled lines (best, top 3, centroid, and within the scene
  around the row), the same in a voice space whitened by the labels' own within-speaker spread,
  how often the name was labelled close by and on the lines just before and after, and how
  often it has been labelled at all;
- ``G`` (r, len(NONE_FEATURES)): evidence that the row's speaker has no label yet;
- ``valid`` (r, J) bool: False for a name whose only labelled line is the row itself.

Each labelled row is scored with itself left out. `name_model.NameModel` is the conditional
logit fitted on them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ml_backend.grouping.clusters import UNLABELLED
from ml_backend.grouping.context import LineContext

NAME_FEATURES = (
    "voice_best",
    "voice_top3",
    "voice_centroid",
    "voice_local",
    "image_best",
    "image_top3",
    "image_centroid",
    "image_local",
    "voice_white_best",
    "voice_white_top3",
    "voice_white_centroid",
    "voice_white_local",
    "near_3",
    "near_12",
    "previous",
    "following",
    "log_count",
)
"""Evidence of one line for one name. Similarities are cosines between episode-centred vectors
(`centred`); ``voice_white_*`` are the same in a voice space whitened by the labels' own
within-speaker spread (`whitened`); ``*_local`` are the best similarity to that name's
labelled lines within `LOCAL_WINDOW` cues of the line (0 where there is none)."""
_SIMILARITIES = ("best", "top3", "centroid", "local")
_AROUND = ("near_3", "near_12", "previous", "following")

NONE_FEATURES = ("bias", "voice_best_any", "image_best_any", "near_12_any", "log_names")
"""Evidence that the line's speaker has no label yet."""

LOCAL_WINDOW = 12
"""Cues either side that count as the line's scene for the local and nearby evidence."""

_TOP = 3
_BLOCK = 2048
WHITEN_SHRINK = 0.5
"""How far the labels' within-speaker covariance is shrunk towards a sphere before whitening:
a few hundred labels estimate a 256-d covariance poorly (bench/README.md, "Measurements
behind code choices")."""
WHITEN_MIN_LABELS = 30
"""Fewer labelled lines than this, or fewer than two per name: no whitening (the plain space)."""


def evidence(
    context: LineContext,
    codes: np.ndarray,
    rows: np.ndarray | None = None,
    soft: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of ``rows`` (default: every line) against the labels ``codes`` ((n,) int,
    `UNLABELLED` = -1), each labelled row with itself left out.

    soft : (n, J) P(name) of every line; where given, the unlabelled lines around a row
    count with these probabilities in the nearby features (labelled ones count fully).

    Returns (F : (r, J, len(NAME_FEATURES)), G : (r, len(NONE_FEATURES)), valid : (r, J)
    bool, False for a name whose only labelled line is the row itself).
    """
    lines = context.lines
    n = len(lines)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    labelled = np.flatnonzero(codes != UNLABELLED)
    n_names = int(codes[labelled].max()) + 1 if len(labelled) else 0
    r = len(rows)
    F = np.zeros((r, n_names, len(NAME_FEATURES)))
    G = np.zeros((r, len(NONE_FEATURES)))
    G[:, 0] = 1.0
    if not n_names or not r:
        return F, G, np.zeros((r, n_names), dtype=bool)
    label_of = codes[labelled]
    counts = np.bincount(label_of, minlength=n_names).astype(np.float64)
    own = codes[rows]  # the row's own label (-1 if none), to leave itself out
    column_of = np.full(n, -1, dtype=np.int64)  # line -> its column among the labelled
    column_of[labelled] = np.arange(len(labelled))
    self_column = column_of[rows]
    left = counts[None, :] - (own[:, None] == np.arange(n_names)[None, :])
    valid = left > 0
    spaces = [("voice", centred(lines.voice, context.episode))]
    if lines.image is not None:
        spaces.append(("image", centred(lines.image, context.episode)))
    spaces.append(("voice_white", whitened(spaces[0][1], labelled, label_of)))
    for kind, vectors in spaces:
        columns = [NAME_FEATURES.index(f"{kind}_{part}") for part in _SIMILARITIES]
        F[:, :, columns] = _similarities(
            context, vectors, rows, labelled, label_of, own, self_column, n_names
        )
    for column, kind in ((1, "voice"), (2, "image")):
        best = F[:, :, NAME_FEATURES.index(f"{kind}_best")]
        G[:, column] = np.where(valid, best, -1.0).max(axis=1)
    F[:, :, NAME_FEATURES.index("log_count")] = np.log1p(np.maximum(left, 0))
    G[:, 4] = np.log1p(valid.sum(axis=1))
    return with_context(context, codes, rows, F, G, valid, soft)


def with_context(
    context: LineContext,
    codes: np.ndarray,
    rows: np.ndarray,
    F: np.ndarray,
    G: np.ndarray,
    valid: np.ndarray,
    soft: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F, G, valid) of `evidence` with the who-speaks-around features (re)computed: from
    the labels alone, or with ``soft`` (n, J) for the unlabelled lines. The similarities
    stay, so the second stage costs no second pass over the vectors."""
    F, G = F.copy(), G.copy()
    n_names = F.shape[1]
    labelled = np.flatnonzero(codes != UNLABELLED)
    around = np.zeros((len(codes), n_names))
    around[labelled, codes[labelled]] = 1.0
    if soft is not None:
        around = np.where((codes == UNLABELLED)[:, None], soft, around)
    F[:, :, [NAME_FEATURES.index(name) for name in _AROUND]] = _around(context, around, rows)
    near = np.expm1(F[:, :, NAME_FEATURES.index("near_12")])
    G[:, 3] = np.log1p(np.where(valid, near, 0.0).sum(axis=1))
    F[~valid] = 0.0
    return F, G, valid


def _similarities(
    context: LineContext,
    vectors: np.ndarray,
    rows: np.ndarray,
    labelled: np.ndarray,
    label_of: np.ndarray,
    own: np.ndarray,
    self_column: np.ndarray,
    n_names: int,
) -> np.ndarray:
    """(r, J, 4): best, top-3 mean, centroid and local similarity of ``rows`` to each name's
    labelled lines, a labelled row never compared with itself."""
    r = len(rows)
    out = np.zeros((r, n_names, len(_SIMILARITIES)))
    bank = vectors[labelled]
    sums = np.zeros((n_names, vectors.shape[1]))
    np.add.at(sums, label_of, bank.astype(np.float64))
    order = np.argsort(label_of, kind="stable")
    bounds = np.searchsorted(label_of[order], np.arange(n_names + 1))
    for start in range(0, r, _BLOCK):
        block = slice(start, min(r, start + _BLOCK))
        idx = rows[block]
        sims = vectors[idx] @ bank.T  # (b, L)
        cols = self_column[block]
        has_self = cols >= 0
        sims[np.flatnonzero(has_self), cols[has_self]] = -np.inf
        sims = sims[:, order]
        for j in range(n_names):
            part = sims[:, bounds[j] : bounds[j + 1]]
            take = min(_TOP, part.shape[1])
            top = -np.partition(-part, take - 1, axis=1)[:, :take] if take else part
            finite = np.isfinite(top)
            best = np.where(finite, top, -np.inf).max(axis=1) if take else np.zeros(len(idx))
            count = finite.sum(axis=1)
            out[block, j, 0] = np.where(np.isfinite(best), best, 0.0)
            out[block, j, 1] = np.where(finite, top, 0.0).sum(axis=1) / np.maximum(count, 1)
        # centroid of the name's labelled lines, minus the row itself:
        # |S - v|² = |S|² - 2 S·v + |v|² and (S - v)·v = S·v - |v|²
        v = vectors[idx].astype(np.float64)
        dot = v @ sums.T  # (b, J)
        mine = (own[block][:, None] == np.arange(n_names)[None, :]).astype(np.float64)
        vv = np.einsum("bd,bd->b", v, v)[:, None]
        squared = (sums * sums).sum(axis=1)[None, :] - mine * (2 * dot - vv)
        norm = np.sqrt(np.maximum(squared, 0.0))
        out[block, :, 2] = np.where(norm > 1e-6, (dot - mine * vv) / np.maximum(norm, 1e-6), 0.0)
    # local: the best similarity to each name's labelled lines within the window, found by
    # walking the cue offsets (2·window + 1 of them) instead of comparing every pair
    codes = np.full(len(vectors), UNLABELLED, dtype=np.int64)
    codes[labelled] = label_of
    local = np.full((r, n_names), -np.inf)
    for offset, neighbour in _cue_offsets(context, rows):
        ok = (neighbour >= 0) & (offset != 0)
        ok[ok] &= codes[neighbour[ok]] != UNLABELLED
        if not ok.any():
            continue
        at, other = np.flatnonzero(ok), neighbour[ok]
        similarity = np.einsum("ij,ij->i", vectors[rows[at]], vectors[other])
        name = codes[other]
        np.maximum.at(local, (at, name), similarity)
    out[:, :, 3] = np.where(np.isfinite(local), local, 0.0)
    return out


def _cue_offsets(context: LineContext, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, (r,) the line ``offset`` cues from each row in its episode, -1 past the ends)
    for every offset within `LOCAL_WINDOW`."""
    n = len(context.position)
    order = np.lexsort((context.position, context.episode))
    where = np.empty(n, dtype=np.int64)
    where[order] = np.arange(n)
    episode_sorted = context.episode[order]
    at = where[rows]
    for offset in range(-LOCAL_WINDOW, LOCAL_WINDOW + 1):
        target = at + offset
        inside = (target >= 0) & (target < n)
        inside[inside] &= episode_sorted[target[inside]] == context.episode[rows[inside]]
        yield offset, np.where(inside, order[np.clip(target, 0, n - 1)], -1)


def whitened(vectors: np.ndarray, labelled: np.ndarray, label_of: np.ndarray) -> np.ndarray:
    """Unit rows in a space where the labelled lines' within-speaker spread is a sphere.

    What varies within one speaker's lines (noise beds, shouting, pitch) is what makes two
    speakers look alike; the annotators' labels measure it in this very episode, so scaling
    those directions down is learned from the project, not from any benchmark voice. The
    covariance is shrunk (`WHITEN_SHRINK`) since a few hundred labels are few for 256 dims.
    """
    n_names = int(label_of.max()) + 1 if len(label_of) else 0
    if len(labelled) < max(WHITEN_MIN_LABELS, 2 * n_names):
        return vectors
    bank = vectors[labelled].astype(np.float64)
    means = np.zeros((n_names, vectors.shape[1]))
    np.add.at(means, label_of, bank)
    means /= np.maximum(np.bincount(label_of, minlength=n_names), 1)[:, None]
    residual = bank - means[label_of]
    within = residual.T @ residual / len(residual)
    sphere = np.trace(within) / within.shape[0]
    if sphere <= 1e-12:
        return vectors
    shrunk = (1 - WHITEN_SHRINK) * within + WHITEN_SHRINK * sphere * np.eye(within.shape[0])
    values, basis = np.linalg.eigh(shrunk)
    out = vectors.astype(np.float64) @ (basis / np.sqrt(np.maximum(values, 1e-12)))
    return _unit_rows(out)


def _around(context: LineContext, around: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(r, J, 4): near_3, near_12, previous, following of ``rows`` from ``around`` ((n, J),
    how much each line counts for each name), the row itself left out.

    Window sums come from cumulative sums along each episode's cue order, so the cost is
    n·J, whatever the window or the season's length.
    """
    n, n_names = around.shape
    order = np.lexsort((context.position, context.episode))
    seq = around[order]
    cumulative = np.vstack([np.zeros((1, n_names)), np.cumsum(seq, axis=0)])
    where = np.empty(n, dtype=np.int64)
    where[order] = np.arange(n)
    first = np.zeros(n, dtype=np.int64)  # sequence index of each line's episode start
    episode_sorted = context.episode[order]
    starts = np.flatnonzero(np.r_[True, episode_sorted[1:] != episode_sorted[:-1]])
    ends = np.r_[starts[1:], n]
    run = np.repeat(np.arange(len(starts)), ends - starts)
    first[order] = starts[run]
    last = np.zeros(n, dtype=np.int64)
    last[order] = ends[run]
    at = where[rows]
    out = np.zeros((len(rows), n_names, 4))
    for column, window in ((0, 3), (1, LOCAL_WINDOW)):
        lo = np.maximum(at - window, first[rows])
        hi = np.minimum(at + window + 1, last[rows])
        total = cumulative[hi] - cumulative[lo] - seq[at]
        out[:, :, column] = np.log1p(np.maximum(total, 0.0))
    previous, following = context.cue_neighbours()
    for column, neighbour in ((2, previous[rows]), (3, following[rows])):
        has = neighbour >= 0
        out[has, :, column] = around[neighbour[has]]
    return out


def centred(vectors: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """Unit rows minus their episode's mean row, renormalised (missing rows stay zero).

    Every line of an episode shares its recording chain, and a speaker embedding carries some
    of it; the mean over an episode's lines is mostly that shared part, so removing it leaves
    more of what tells speakers apart (mean normalisation, as speaker verification does).
    """
    out = vectors.astype(np.float32).copy()
    present = np.abs(out).sum(axis=1) > 0
    for code in np.unique(episode):
        rows = np.flatnonzero((episode == code) & present)
        if len(rows) > 1:
            out[rows] -= out[rows].mean(axis=0)
    return _unit_rows(out)


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    """(n, d) float32 rows scaled to unit length; a (near-)zero row becomes all zeros."""
    norm = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.where(norm > 1e-9, rows / np.maximum(norm, 1e-9), 0.0).astype(np.float32)
