"""The confidence target of a labelled line (docs/architecture.md §4), computed exactly.

For a labelled line i, order the other labelled lines by similarity to i (most similar first,
at most ``length`` of them). Keep each independently with probability ``q``, as N-fold
cross-validation would when it hides the rest. The target is the probability that the majority
label of the first ``k`` kept neighbours is ``y_i``.

"Majority" is decided from the count of kept neighbours that carry ``y_i``: more than half wins,
exactly half (two kept, one right) counts one half, as a fair tie break would. When fewer than
``k`` are kept the majority is over those kept; when none is kept the line has no evidence,
which counts as *not* right (the prototype's version gave every line a floor from that case).
A line with no other labelled line at all gets NaN.

The dynamic programme walks the ordered list once with the state (kept so far < k, of which
right), so a line costs O(length · k²) and all lines run as one vectorised pass.
"""

from __future__ import annotations

import numpy as np

K = 3
Q = 1.0 / 10
LENGTH = 64


def _win(right: np.ndarray | int, kept: int) -> np.ndarray | float:
    """Probability that the majority of ``kept`` neighbours, ``right`` of them right, is right."""
    twice = 2 * np.asarray(right)
    return np.where(twice > kept, 1.0, np.where(twice == kept, 0.5, 0.0))


def _shift(values: np.ndarray, *, axis: int) -> np.ndarray:
    """One more right neighbour: move every probability from j to j + 1 along ``axis``."""
    out = np.zeros_like(values)
    source = [slice(None)] * values.ndim
    target = [slice(None)] * values.ndim
    source[axis], target[axis] = slice(None, -1), slice(1, None)
    out[tuple(target)] = values[tuple(source)]
    return out


def confidence_from_lists(
    correct: np.ndarray, valid: np.ndarray | None = None, *, k: int = K, q: float = Q
) -> np.ndarray:
    """Exact targets for ordered neighbour lists.

    correct : (n, L) bool, whether each neighbour (most similar first) carries the line's label.
    valid : (n, L) bool, which entries exist (rows shorter than L are padded); default all.
    Returns (n,) float64; NaN for rows without any valid entry.
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=bool))
    n, length = correct.shape
    valid = np.ones_like(correct) if valid is None else np.atleast_2d(np.asarray(valid, bool))
    if k < 1 or not 0 < q <= 1:
        raise ValueError(f"need k >= 1 and 0 < q <= 1, got k={k}, q={q}")
    # state[:, m, j]: probability of having kept m (< k) neighbours so far, j of them right
    state = np.zeros((n, k, k + 1))
    state[:, 0, 0] = 1.0
    result = np.zeros(n)
    final = np.array([_win(j, k) for j in range(k + 1)], dtype=float)
    for t in range(length):
        keep = np.where(valid[:, t], q, 0.0)[:, None, None]
        right = correct[:, t]
        kept = state * keep
        state = state - kept
        # the k-th kept neighbour completes the vote: absorb it into the result
        last = kept[:, k - 1, :]  # (n, k + 1), j right among the first k - 1
        shifted_last = np.where(right[:, None], _shift(last, axis=1), last)
        result += shifted_last @ final
        # the others move to (m + 1, j + right)
        moved = np.zeros_like(state)
        moved[:, 1:, :] = kept[:, :-1, :]
        moved = np.where(right[:, None, None], _shift(moved, axis=2), moved)
        state = state + moved
    for m in range(1, k):
        result += state[:, m, :] @ np.array([_win(j, m) for j in range(k + 1)], dtype=float)
    result[~valid.any(axis=1)] = np.nan
    return result


def confidence_targets(
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = K,
    q: float = Q,
    length: int = LENGTH,
    block: int = 1024,
) -> np.ndarray:
    """Targets of labelled lines from their vectors.

    vectors : (n, d) float32, L2-normalised rows; a zero row means "no vector".
    labels : (n,) labels of the same lines (any hashable values).
    Returns (n,) float64: NaN for lines without a vector or without any other labelled line with
    a vector.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    codes = np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)
    n = len(vectors)
    present = np.abs(vectors).sum(axis=1) > 0
    out = np.full(n, np.nan)
    rows = np.flatnonzero(present)
    if len(rows) < 2:
        return out
    base = vectors[rows]
    take = min(length, len(rows) - 1)
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        sims = vectors[part] @ base.T
        sims[np.arange(len(part)), np.arange(start, start + len(part))] = -np.inf
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1, kind="stable")[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        correct = codes[rows[top]] == codes[part][:, None]
        out[part] = confidence_from_lists(correct, k=k, q=q)
    return out
