"""A cold start that calibrates itself per episode: communities of the merge-probability graph.

The gated clustering (`clustering.gated_clustering`) merges two clusters when the merge
classifier's P(same speaker) clears a threshold learned on the training episodes. On voices
unlike the training ones that threshold is out of its depth: on the real-voice episodes of
`bench/real_voices` the same priors split one cast into 14 clusters and lump another into 3
(bench/README.md, "Self-calibrating cold start"). A fixed cut on a probability assumes the
probability means the same in every episode; it does not when the embedder's similarity levels
move with the recording.

Modularity does not need that assumption. Each line's voice kNN edges are weighted by the merge
classifier's P(same speaker) for the two lines, and the graph is cut into communities by
Louvain modularity maximisation (igraph's compiled `community_multilevel`): an edge counts as
evidence for a community only against what the two lines' own total edge weight would predict
by chance. The cut therefore moves with the episode's own weight distribution, which is the
per-episode calibration; the merge classifier still decides which edges carry weight (voice,
face, confidence, adjacency).

Human labels are constraints here too: lines with one name form one node of the graph, and a
community that ends up holding two names is split, each unlabelled member going to the name
whose lines it is most strongly tied to.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping

import numpy as np

from ml_backend.grouping.clusters import UNLABELLED
from ml_backend.grouping.context import VOICE_KEPT, LineContext
from ml_backend.grouping.knn_graph import edges_from_knn, knn
from ml_backend.grouping.merge import (
    MergeClassifier,
    line_pair_features,
    singleton_cluster_features,
)

logger = logging.getLogger(__name__)

_IGRAPH_RANDOM = threading.Lock()
"""igraph draws Louvain's visiting order from one process-wide random generator; the lock
keeps a seeded run from sharing it with another thread's."""

RESOLUTION = 1.0
"""Louvain resolution: above 1 favours smaller communities, below 1 bigger ones."""


def edge_weights(
    context: LineContext,
    confidence: Mapping[str, np.ndarray],
    merge: MergeClassifier,
    *,
    neighbours: int = VOICE_KEPT,
) -> tuple[np.ndarray, np.ndarray]:
    """The community graph: (pairs (m, 2) int64 with i < j, weights (m,) float64 in (0, 1)).

    Pairs are every line's ``neighbours`` nearest voice neighbours, made symmetric; each weight
    is the merge classifier's P(same speaker) for the two lines as lone lines, the probability
    the gated clustering orders its edges by. Image neighbours are left out of the graph: where
    the picture shows the scene rather than the speaker they tie a dialogue's two speakers
    together (on the real-voice training episodes adding them cost 0.018 mean edge F1).
    """
    kept = context.voice.kept
    if kept.shape[1] >= neighbours:
        indices = kept[:, :neighbours]  # the context's own search, kept deep enough
    else:
        indices, _ = knn(context.lines.voice, neighbours)
    pairs = edges_from_knn(indices)
    if not len(pairs):
        return pairs, np.zeros(0)
    line_x = line_pair_features(context, confidence, pairs)
    weights = merge.predict_proba(
        np.hstack([line_x, singleton_cluster_features(context, line_x, pairs)])
    )
    return pairs, np.asarray(weights, dtype=np.float64)


def community_clustering(
    context: LineContext,
    confidence: Mapping[str, np.ndarray],
    merge: MergeClassifier,
    *,
    labels: np.ndarray | None = None,
    neighbours: int = VOICE_KEPT,
    resolution: float = RESOLUTION,
    seed: int = 0,
) -> np.ndarray:
    """(n,) int64 cluster of every line (0-based, in order of first member), as
    `gated_clustering` returns it; a line without any edge is a cluster of its own.

    labels : (n,) int name codes, -1 where unlabelled. Lines of one name are one node, and
        two names never share a cluster.
    neighbours, resolution : the graph and Louvain's resolution (see the module constants).
    seed : Louvain visits nodes in a random order; a fixed seed makes the result repeatable.
    """
    pairs, weights = edge_weights(context, confidence, merge, neighbours=neighbours)
    return community_partition(
        pairs, weights, len(context.lines), labels=labels, resolution=resolution, seed=seed
    )


def community_partition(
    pairs: np.ndarray,
    weights: np.ndarray,
    n: int,
    *,
    labels: np.ndarray | None = None,
    resolution: float = RESOLUTION,
    seed: int = 0,
) -> np.ndarray:
    """`community_clustering` on a graph already built by `edge_weights` (n lines).

    Louvain runs in igraph's C code: networkx's pure-Python one took about 18 s of a
    20,000-line season's cold propose. The two visit nodes in different random orders; at the
    shipped settings every benchmark episode scored the same with either (bench/README.md,
    "Speed of the grouping").
    """
    import igraph

    if n == 0:
        return np.zeros(0, np.int64)
    labels = np.full(n, UNLABELLED, np.int64) if labels is None else np.asarray(labels, np.int64)
    # one node per name, one per unlabelled line
    node = np.arange(n, dtype=np.int64)
    for code in np.unique(labels[labels != UNLABELLED]).tolist():
        members = np.flatnonzero(labels == code)
        node[members] = members[0]
    nodes, node_of = np.unique(node, return_inverse=True)
    node_of = node_of.reshape(-1)
    # one edge per node pair, its lines' weights summed
    ends = node_of[pairs] if len(pairs) else np.zeros((0, 2), np.int64)
    keep = (ends[:, 0] != ends[:, 1]) & (weights > 0.0)
    ends, kept = ends[keep], weights[keep]
    low, high = np.minimum(ends[:, 0], ends[:, 1]), np.maximum(ends[:, 0], ends[:, 1])
    keys, inverse = np.unique(low * len(nodes) + high, return_inverse=True)
    summed = np.bincount(inverse.reshape(-1), weights=kept, minlength=len(keys))
    graph = igraph.Graph(
        n=len(nodes), edges=np.stack([keys // len(nodes), keys % len(nodes)], axis=1).tolist()
    )
    with _IGRAPH_RANDOM:
        igraph.set_random_number_generator(random.Random(seed))
        try:
            found = graph.community_multilevel(weights=summed.tolist(), resolution=resolution)
        finally:
            igraph.set_random_number_generator(random)
    community_of = np.asarray(found.membership, np.int64)[node_of]
    community_of = _split_named(community_of, labels, pairs, weights)
    return _first_member_order(community_of)


def _split_named(
    community: np.ndarray, labels: np.ndarray, pairs: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Split each community holding two or more names: every unlabelled member joins the name
    it has the most edge weight to (the biggest name's group when it has none)."""
    out = community.copy()
    next_id = int(community.max()) + 1 if len(community) else 0
    for number in np.unique(community).tolist():
        members = np.flatnonzero(community == number)
        names = np.unique(labels[members][labels[members] != UNLABELLED])
        if len(names) < 2:
            continue
        inside = np.isin(pairs[:, 0], members) & np.isin(pairs[:, 1], members)
        tie = np.zeros((len(community), len(names)))
        for (i, j), weight in zip(pairs[inside].tolist(), weights[inside].tolist(), strict=True):
            for a, b in ((i, j), (j, i)):
                if labels[b] != UNLABELLED:
                    tie[a, int(np.searchsorted(names, labels[b]))] += weight
        sizes = np.array([(labels[members] == name).sum() for name in names.tolist()])
        ids = [number, *range(next_id, next_id + len(names) - 1)]
        next_id += len(names) - 1
        for i in members.tolist():
            if labels[i] != UNLABELLED:
                out[i] = ids[int(np.searchsorted(names, labels[i]))]
            else:
                best = int(np.argmax(tie[i])) if tie[i].any() else int(np.argmax(sizes))
                out[i] = ids[best]
    return out


def _first_member_order(clusters: np.ndarray) -> np.ndarray:
    """Renumber clusters 0.. in order of their first line."""
    _, first, inverse = np.unique(clusters, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return rank[inverse.reshape(-1)].astype(np.int64)


def join_within_communities(
    clusters: np.ndarray,
    communities: np.ndarray,
    pairs: np.ndarray,
    weights: np.ndarray,
    *,
    join: float,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Join the gated clusters that one community holds and the merge graph ties together.

    clusters : (n,) int gated clusters; communities : (n,) int `community_partition`;
    pairs (m, 2), weights (m,) : the community graph (`edge_weights`).
    join : two clusters whose members mostly sit in the same community are joined when the
        graph's edges between them carry at least this much P(same speaker) per line of the
        smaller one (a few stray edges do not join a minor character to a lead).
    labels : (n,) int name codes, -1 unlabelled; two clusters holding different names are
        never joined.
    Returns (n,) int64, renumbered in order of first member.

    Why both: the gated clustering is precise but splits one voice recorded two ways (a
    character under a music bed and in the clear) when the learned threshold is out of its
    depth; the communities keep such a voice together but fold a minor character with few
    lines into a lead (modularity's resolution limit). A join needs both to agree.
    """
    clusters = np.asarray(clusters, np.int64)
    n_clusters = int(clusters.max()) + 1 if len(clusters) else 0
    if n_clusters < 2 or not len(pairs):
        return _first_member_order(clusters) if len(clusters) else clusters
    from scipy.cluster.hierarchy import DisjointSet

    # each cluster's community: where most of its lines are (ties: the lowest number)
    counts = np.zeros((n_clusters, int(communities.max()) + 1), np.int64)
    np.add.at(counts, (clusters, communities), 1)
    home = counts.argmax(axis=1)
    sizes = np.bincount(clusters, minlength=n_clusters)
    # the graph's P(same speaker) between each pair of clusters, summed (sparse: edges only)
    a, b = clusters[pairs[:, 0]], clusters[pairs[:, 1]]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    between = (lo != hi) & (home[lo] == home[hi])
    keys, inverse = np.unique(lo[between] * n_clusters + hi[between], return_inverse=True)
    tie = np.bincount(inverse.reshape(-1), weights=weights[between], minlength=len(keys))
    first, second = keys // n_clusters, keys % n_clusters
    strength = tie / np.minimum(sizes[first], sizes[second])
    codes = np.full(len(clusters), UNLABELLED, np.int64) if labels is None else labels
    names: list[set[int]] = [set() for _ in range(n_clusters)]
    for i in np.flatnonzero(codes != UNLABELLED).tolist():
        names[int(clusters[i])].add(int(codes[i]))
    joined = DisjointSet(range(n_clusters))
    candidates = zip(strength.tolist(), first.tolist(), second.tolist(), strict=True)
    for tied, i, j in sorted(candidates, reverse=True):  # strongest first
        if tied < join:
            break
        ri, rj = joined[i], joined[j]
        if ri == rj or (names[ri] and names[rj] and names[ri] != names[rj]):
            continue
        joined.merge(ri, rj)
        names[joined[ri]] = names[ri] | names[rj]
    roots = np.array([joined[c] for c in range(n_clusters)], np.int64)
    return _first_member_order(roots[clusters])


def partition_log_likelihood(pairs: np.ndarray, weights: np.ndarray, clusters: np.ndarray) -> float:
    """Mean per line of the merge classifier's log-likelihood of a partition on the graph's edges.

    pairs (m, 2), weights (m,) P(same speaker) from `edge_weights`; clusters (n,) int. Each edge
    adds log P when the partition puts its two lines together and log(1 - P) when it keeps them
    apart: of two partitions of one episode, the classifier prefers the higher.
    """
    if not len(pairs):
        return 0.0
    p = np.clip(weights, 1e-4, 1.0 - 1e-4)
    together = clusters[pairs[:, 0]] == clusters[pairs[:, 1]]
    return float(np.where(together, np.log(p), np.log1p(-p)).sum() / max(len(clusters), 1))


def choose_partition(
    pairs: np.ndarray, weights: np.ndarray, candidates: Mapping[str, np.ndarray]
) -> str:
    """The name of the candidate partition the classifier finds likeliest (first on ties)."""
    scores = {name: partition_log_likelihood(pairs, weights, c) for name, c in candidates.items()}
    logger.debug("partition log-likelihoods %s", scores)
    return max(scores, key=lambda name: (scores[name], -list(scores).index(name)))


class SelfCalibratingClustering:
    """The grouping's clustering with its skeleton chosen per episode (``community`` 0, 1, 2).

        clustering = SelfCalibratingClustering.from_params(params).fit(
            context, confidence=confidence, merge=merge, labels=codes
        )
        clustering.labels_      # (n,) int64 cluster of every line, lone lines included
        clustering.skeleton_    # "gated" or "community": which one was used

    ``community`` 0 is exactly `clustering.GatedClustering`. 1 takes the modularity
    communities of the merge graph (`community_clustering`), then ``community_reassign_rounds``
    of `clustering.reassign_lines`. 2 computes both and keeps the one whose partition the merge
    classifier finds likelier on the graph's edges (`choose_partition`): where the learned
    threshold suits the episode it wins, where it is out of its depth the communities do. 3
    keeps the gated clusters and joins those that one community holds and the graph ties
    together (`join_within_communities`, ``community_join``).
    """

    def __init__(self, params: object) -> None:
        self.params = params

    @classmethod
    def from_params(cls, params: object) -> SelfCalibratingClustering:
        return cls(params)

    def fit(
        self,
        context: LineContext,
        *,
        confidence: Mapping[str, np.ndarray],
        merge: MergeClassifier,
        labels: np.ndarray | None = None,
    ) -> SelfCalibratingClustering:
        """Cluster the lines of ``context``; labels (n,) int64 name codes, -1 unlabelled."""
        from ml_backend.grouping.clustering import GatedClustering, reassign_lines

        params = self.params
        mode = int(params.community)  # type: ignore[attr-defined]
        n = len(context.lines)
        codes = np.full(n, UNLABELLED, np.int64) if labels is None else np.asarray(labels)

        def gated() -> np.ndarray:
            return (
                GatedClustering.from_params(params)  # type: ignore[arg-type]
                .fit(context, confidence=confidence, merge=merge, labels=codes)
                .labels_
            )

        self.skeleton_ = "gated"
        if mode == 0 or n == 0:
            self.labels_ = gated()
        else:
            pairs, weights = edge_weights(
                context,
                confidence,
                merge,
                neighbours=int(params.community_neighbours),  # type: ignore[attr-defined]
            )
            communities = community_partition(
                pairs,
                weights,
                n,
                labels=codes,
                resolution=float(params.community_resolution),  # type: ignore[attr-defined]
            )
            rounds = int(params.community_reassign_rounds)  # type: ignore[attr-defined]

            def reassigned(clusters: np.ndarray) -> np.ndarray:
                if not rounds:
                    return clusters
                return reassign_lines(
                    context,
                    confidence,
                    merge,
                    clusters,
                    codes,
                    rounds=rounds,
                    move_margin=params.move_margin,  # type: ignore[attr-defined]
                    detach=params.detach,  # type: ignore[attr-defined]
                )

            if mode == 3:
                self.skeleton_ = "joined"
                self.labels_ = reassigned(
                    join_within_communities(
                        gated(),
                        communities,
                        pairs,
                        weights,
                        join=float(params.community_join),  # type: ignore[attr-defined]
                        labels=codes,
                    )
                )
            else:
                communities = reassigned(communities)
                candidates = {"community": communities}
                if mode == 2:
                    candidates["gated"] = gated()
                self.skeleton_ = choose_partition(pairs, weights, candidates)
                self.labels_ = candidates[self.skeleton_]
        self.n_clusters_ = int(self.labels_.max() + 1) if n else 0
        return self
