"""Union-find over lines that also keeps what the merge classifier asks about two clusters.

Each cluster keeps the sum of its members' unit vectors (voice and image), its size and its
human name. From the sums alone, the mean similarity between two clusters is
``S_a·S_b / (n_a n_b)`` and the mean similarity within one is ``(|S_a|² - n_a) / (n_a (n_a-1))``,
so average-linkage quantities cost O(dim) per edge and never a pairwise matrix. A lone line's
"within" is its neighbourhood level (mean similarity to its nearest lines): the best guess of
what its speaker's cluster would look like.
"""

from __future__ import annotations

import math

import numpy as np

UNLABELLED = -1

CLUSTER_FEATURES = (
    "voice_between",
    "voice_gap",
    "image_between",
    "image_gap",
    "voice_gap_x_conf",
    "image_gap_x_conf",
    "gap_agreement",
    "adjacent_share",
    "log_size_min",
    "log_size_max",
)


class ClusterSet:
    """Clusters of lines: sizes, centroid sums, names, and the merge inputs of two clusters.

    voice, image : (n, d) unit rows (zero where missing). voice_level, image_level : (n,) each
    line's neighbourhood similarity level. names : (n,) int codes, -1 where unlabelled.
    """

    def __init__(
        self,
        voice: np.ndarray,
        image: np.ndarray | None,
        *,
        voice_level: np.ndarray,
        image_level: np.ndarray | None,
        names: np.ndarray | None = None,
        adjacent: np.ndarray | None = None,
    ) -> None:
        n = len(voice)
        # cue-order neighbours between clusters: dialogue alternates, so two clusters whose
        # lines follow each other are, most likely, two people talking to each other
        self.links: list[dict[int, int]] = [{} for _ in range(n)]
        if adjacent is not None:
            for i, j in adjacent.tolist():
                self.links[i][j] = self.links[i].get(j, 0) + 1
                self.links[j][i] = self.links[j].get(i, 0) + 1
        self.parent = list(range(n))
        self.size = [1] * n
        self.name = [UNLABELLED] * n if names is None else [int(c) for c in names]
        self.voice = voice.astype(np.float64)
        self.image = image.astype(np.float64) if image is not None else None
        self.voice_self = np.einsum("ij,ij->i", self.voice, self.voice).tolist()
        self.image_self = (
            np.einsum("ij,ij->i", self.image, self.image).tolist()
            if self.image is not None
            else None
        )
        self.voice_level = np.nan_to_num(voice_level, nan=0.0).tolist()
        self.image_level = (
            np.nan_to_num(image_level, nan=0.0).tolist() if image_level is not None else None
        )

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def can_merge(self, a: int, b: int) -> bool:
        name_a, name_b = self.name[a], self.name[b]
        return name_a in (UNLABELLED, name_b) or name_b == UNLABELLED

    def _within(self, squared: list[float], level: list[float], a: int) -> float:
        size = self.size[a]
        if size == 1:
            return level[a]
        return (squared[a] - size) / (size * (size - 1))

    def features(self, a: int, b: int, voice_conf: float, image_conf: float) -> tuple[float, ...]:
        """The `CLUSTER_FEATURES` of merging clusters ``a`` and ``b`` (roots).

        voice_conf, image_conf : the smaller confidence of the edge's two lines.
        """
        size_a, size_b = self.size[a], self.size[b]
        voice_between = float(self.voice[a] @ self.voice[b]) / (size_a * size_b)
        voice_gap = voice_between - 0.5 * (
            self._within(self.voice_self, self.voice_level, a)
            + self._within(self.voice_self, self.voice_level, b)
        )
        image_between = image_gap = 0.0
        if self.image is not None:
            image_between = float(self.image[a] @ self.image[b]) / (size_a * size_b)
            image_gap = image_between - 0.5 * (
                self._within(self.image_self, self.image_level, a)
                + self._within(self.image_self, self.image_level, b)
            )
        small, large = (size_a, size_b) if size_a <= size_b else (size_b, size_a)
        adjacent_share = self.links[a].get(b, 0) / small
        return (
            voice_between,
            voice_gap,
            image_between,
            image_gap,
            voice_gap * voice_conf,
            image_gap * image_conf,
            min(voice_gap, image_gap) if self.image is not None else voice_gap,
            adjacent_share,
            math.log(small),
            math.log(large),
        )

    def union(self, a: int, b: int) -> int:
        """Merge roots ``a`` and ``b``; returns the new root."""
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]
        self.voice[a] += self.voice[b]
        self.voice_self[a] = float(self.voice[a] @ self.voice[a])
        if self.image is not None:
            self.image[a] += self.image[b]
            self.image_self[a] = float(self.image[a] @ self.image[a])
        if self.name[a] == UNLABELLED:
            self.name[a] = self.name[b]
        links_a = self.links[a]
        for other, count in self.links[b].items():
            other_links = self.links[other]
            del other_links[b]
            if other == a:
                continue
            links_a[other] = links_a.get(other, 0) + count
            other_links[a] = other_links.get(a, 0) + count
        links_a.pop(b, None)
        self.links[b] = {}
        return a

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)

    def labels(self) -> np.ndarray:
        """(n,) int64 cluster of every line, numbered 0.. in order of first member."""
        roots = self.roots()
        _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))
        return rank[inverse.reshape(-1)].astype(np.int64)


def for_context(context: object, names: np.ndarray | None = None) -> ClusterSet:
    """A ClusterSet of lone lines for a `LineContext`."""
    lines = context.lines  # type: ignore[attr-defined]
    image = context.image  # type: ignore[attr-defined]
    return ClusterSet(
        lines.voice,
        lines.image,
        voice_level=context.voice.stats["s10"],  # type: ignore[attr-defined]
        image_level=image.stats["s10"] if image is not None else None,
        names=names,
        adjacent=context.adjacent_pairs(),  # type: ignore[attr-defined]
    )
