"""What every grouping step needs to know about the lines, computed once per call.

The kNN lists of both modalities, the label-free neighbourhood statistics that the confidence
model reads, and the candidate edges of the clustering all come from the same two blockwise
kNN passes, so a 20,000-line season pays for them once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ml_backend.grouping.knn_graph import ABSENT, edges_from_knn, knn, unique_pairs
from ml_backend.grouping.lines import EpisodeLines

NEIGHBOURS = 10
"""k of the kNN lists: the neighbourhood statistics and the clustering's candidate edges."""
IMAGE_EDGES = 5
"""How many of each line's image neighbours also become candidate edges."""
VOICE_KEPT = 20
"""Voice neighbours per line in the community graph (`GrouperParams.community_neighbours`,
`self_calibration.edge_weights`), chosen on the real-voice and generated training episodes
(15-20 were best, 10 fragments and 30 lumps; bench/README.md). The context searches this deep
once and keeps the list beyond ``k``: one neighbour search instead of two, which at 20,000
lines saves about 8 s of a cold propose (the top-k selection costs the same for 10 or 20)."""


@dataclass(frozen=True)
class Neighbourhood:
    """One modality's kNN lists and the statistics derived from them.

    indices, sims : (n, k) most similar other lines first (`ABSENT` / -inf in empty slots).
    stats : name -> (n,) float64 label-free statistics (NaN where the line has no vector).
    kept : (n, max(k, keep)) int64, the same list searched ``keep`` deep (`neighbourhood`).
    """

    present: np.ndarray
    indices: np.ndarray
    sims: np.ndarray
    stats: dict[str, np.ndarray]
    kept: np.ndarray


def neighbourhood(vectors: np.ndarray, k: int = NEIGHBOURS, *, keep: int = 0) -> Neighbourhood:
    """kNN lists of unit rows and their statistics; ``keep`` > k searches that deep and keeps
    the longer list in ``kept`` (the statistics use the first k).

    s1, s3, s10: similarity to the nearest, and mean over the nearest 3 and k; the same minus the
    median over the lines (the episode's own level, since each embedder and episode differs);
    peak = s1 - s10; reciprocal = share of the k neighbours that list the line among theirs;
    lof = s10 against the neighbours' own s10 (a line in a sparser spot than its neighbours is an
    outlier of their cluster).
    """
    present = np.abs(vectors).sum(axis=1) > 0
    kept, kept_sims = knn(vectors, max(k, keep))
    indices, sims = kept[:, :k], kept_sims[:, :k]
    n = len(vectors)
    valid = indices != ABSENT
    filled = np.where(valid, sims, np.nan).astype(np.float64)
    with _quiet():
        s1 = filled[:, 0] if k else np.full(n, np.nan)
        s3 = np.nanmean(filled[:, :3], axis=1)
        s10 = np.nanmean(filled, axis=1)
    stats = {"s1": s1, "s3": s3, "s10": s10}
    for name in ("s1", "s3", "s10"):
        column = stats[name]
        level = np.nanmedian(column) if np.isfinite(column).any() else 0.0
        stats[f"{name}_rel"] = column - level
    stats["peak"] = s1 - s10
    # reciprocity: does j list i back?
    member = np.zeros(n, dtype=np.float64)
    if n and k:
        safe = np.where(valid, indices, 0)
        back = (indices[safe] == np.arange(n)[:, None, None]).any(axis=2) & valid
        member = back.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
        with _quiet():
            neighbour_s10 = np.nanmean(np.where(valid, s10[safe], np.nan), axis=1)
        stats["lof"] = s10 - neighbour_s10
    else:
        stats["lof"] = np.full(n, np.nan)
    stats["reciprocal"] = member
    for name, column in stats.items():
        stats[name] = np.where(present, column, np.nan)
    for name in ("peak", "reciprocal", "lof"):
        column = stats[name]
        level = np.nanmedian(column) if np.isfinite(column).any() else 0.0
        stats[f"{name}_rel"] = column - level
    return Neighbourhood(present=present, indices=indices, sims=sims, stats=stats, kept=kept)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's "mean of empty slice" for rows without neighbours (they become NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@dataclass(frozen=True)
class LineContext:
    """Lines plus their neighbourhoods and the clustering's candidate edges.

    edges : (m, 2) int64 pairs i < j: each line's voice kNN plus its nearest image neighbours.
    position : (n,) int64 cue position inside its episode (0-based), for adjacency.
    episode : (n,) int64 episode code.
    """

    lines: EpisodeLines
    voice: Neighbourhood
    image: Neighbourhood | None
    edges: np.ndarray
    position: np.ndarray
    episode: np.ndarray

    def adjacent_pairs(self) -> np.ndarray:
        """(m, 2) int64 pairs of lines that follow each other in the same episode."""
        order = np.lexsort((self.position, self.episode))
        first, second = order[:-1], order[1:]
        same = self.episode[first] == self.episode[second]
        return np.stack([first[same], second[same]], axis=1).astype(np.int64)

    def cue_neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """(n,) previous and next line of each line in its episode, -1 at the ends."""
        previous = np.full(len(self.position), -1, dtype=np.int64)
        following = np.full(len(self.position), -1, dtype=np.int64)
        pairs = self.adjacent_pairs()
        following[pairs[:, 0]] = pairs[:, 1]
        previous[pairs[:, 1]] = pairs[:, 0]
        return previous, following


def build_context(
    lines: EpisodeLines,
    *,
    k: int = NEIGHBOURS,
    image_edges: int = IMAGE_EDGES,
    voice_kept: int = VOICE_KEPT,
) -> LineContext:
    """kNN lists and statistics of both spaces; the voice list is searched ``voice_kept`` deep
    (the community graph's depth) and kept in ``voice.kept``."""
    voice = neighbourhood(lines.voice, k, keep=voice_kept)
    image = neighbourhood(lines.image, k) if lines.image is not None else None
    lists = [voice.indices]
    if image is not None and image_edges:
        lists.append(image.indices[:, :image_edges])
    edges = unique_pairs(np.concatenate([edges_from_knn(part) for part in lists]), len(lines))
    episode = np.unique(np.asarray(lines.episodes), return_inverse=True)[1].reshape(-1)
    position = np.zeros(len(lines), dtype=np.int64)
    for code in np.unique(episode):
        members = np.flatnonzero(episode == code)
        position[members[np.argsort(lines.starts[members], kind="stable")]] = np.arange(
            len(members)
        )
    return LineContext(
        lines=lines,
        voice=voice,
        image=image,
        edges=edges.reshape(-1, 2).astype(np.int64),
        position=position,
        episode=episode.astype(np.int64),
    )
