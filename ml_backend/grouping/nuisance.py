"""Nuisance attribute projection: take the directions a recording condition moves a voice out.

A speaker embedding moves when the line is read under a music bed, noise, reverb or a shout,
and it moves the same way for every speaker under that condition. On the real-voice episodes
(`bench/real_voices`) that shift was the largest error of the cold start: the hero's lines
under a music bed and his clean lines formed two clusters, each tighter than either is to the
other, so every clustering split him in two (bench/README.md, "Nuisance projection").

Nuisance attribute projection (NAP; Solomonoff, Campbell and Boardman, "Advances in channel
compensation for SVM speaker recognition", ICASSP 2005) learns those directions from labelled
training lines: for every (speaker, condition) group, the deviation of the group's mean
vector from the speaker's mean, weighted by the square root of the group's size; the top
``rank`` right singular vectors of the stacked deviations span the nuisance. At run time every
voice vector loses its component in that span and is re-normalised: a fixed linear map, which
needs no label and no condition of the episode it is applied to.

The directions belong to an embedder (like every threshold, docs/architecture.md §4), and are
learned by ``bench/train_priors.py`` from generated and real-voice training episodes together,
so that neither source's conditions alone define the nuisance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ml_backend.grouping.lines import EpisodeLines

MIN_GROUP = 3
"""Lines a (speaker, condition) group needs to contribute a deviation: a mean of one or two
lines is mostly the lines' own content, not the condition."""
DEFAULT_RANK = 20
"""Directions removed. Chosen on the training episodes only, with each episode's projection
learned without it: 5, 10, 15, 20 and 30 were tried (bench/README.md)."""


class NuisanceProjection:
    """Remove learned condition directions from voice vectors.

        nap = NuisanceProjection(rank=20).fit(vectors, speakers, conditions)
        lines = nap.apply(lines)          # EpisodeLines with projected, unit voice rows

    Fitted attribute: directions_ (rank, d) float64, orthonormal rows.
    """

    def __init__(self, *, rank: int = DEFAULT_RANK) -> None:
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        self.rank = rank

    def fit(
        self,
        vectors: Sequence[np.ndarray],
        speakers: Sequence[Sequence[str]],
        conditions: Sequence[Sequence[str]],
    ) -> NuisanceProjection:
        """Learn the directions from labelled episodes.

        vectors : per episode, (n, d) voice rows (zero rows, lines without a vector, skipped).
        speakers, conditions : per episode, (n,) the speaker and the recording condition of
            every line. Groups are formed within an episode: one speaker's clean lines in two
            episodes may be recorded differently.
        """
        deviations: list[np.ndarray] = []
        dim = 0
        for block, who, how in zip(vectors, speakers, conditions, strict=True):
            block = np.asarray(block, dtype=np.float64)
            dim = block.shape[1] if block.ndim == 2 else dim
            present = np.abs(block).sum(axis=1) > 0
            who_arr = np.asarray(who, dtype=object)
            how_arr = np.asarray(how, dtype=object)
            if len(who_arr) != len(block) or len(how_arr) != len(block):
                raise ValueError("vectors, speakers and conditions differ in length")
            for speaker in np.unique(who_arr[present]).tolist():
                mine = present & (who_arr == speaker)
                mean = block[mine].mean(axis=0)
                for condition in np.unique(how_arr[mine]).tolist():
                    group = mine & (how_arr == condition)
                    size = int(group.sum())
                    if size >= MIN_GROUP and size < int(mine.sum()):
                        deviations.append(np.sqrt(size) * (block[group].mean(axis=0) - mean))
        if not deviations or self.rank == 0:
            self.directions_ = np.zeros((0, dim))
            return self
        _, _, right = np.linalg.svd(np.stack(deviations), full_matrices=False)
        self.directions_ = right[: self.rank]
        return self

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """(n, d) float32 unit rows with the nuisance span removed; zero rows stay zero."""
        vectors = np.asarray(vectors, dtype=np.float64)
        directions = self.directions_
        if not len(directions) or not len(vectors):
            return vectors.astype(np.float32)
        if vectors.shape[1] != directions.shape[1]:
            raise ValueError(
                f"voice vectors have {vectors.shape[1]} dimensions, the nuisance projection "
                f"{directions.shape[1]}: it belongs to another voice model"
            )
        projected = vectors - (vectors @ directions.T) @ directions
        norms = np.linalg.norm(projected, axis=1, keepdims=True)
        present = (np.abs(vectors).sum(axis=1) > 0)[:, None] & (norms > 0)
        return np.where(present, projected / np.where(norms > 0, norms, 1.0), 0.0).astype(
            np.float32
        )

    def apply(self, lines: EpisodeLines) -> EpisodeLines:
        """``lines`` with projected voice rows (a new object; the argument is not changed)."""
        if not len(self.directions_):
            return lines
        return dataclasses.replace(lines, voice=self.transform(lines.voice))

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "nap",
            "rank": self.rank,
            "directions": np.round(self.directions_, 7).tolist(),
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> NuisanceProjection:
        if values.get("method") != "nap":
            raise ValueError(f"unknown nuisance projection {values.get('method')!r}")
        model = cls(rank=int(values["rank"]))
        directions = np.asarray(values["directions"], dtype=np.float64)
        model.directions_ = (
            directions.reshape(len(directions), -1) if directions.size else (np.zeros((0, 0)))
        )
        return model
