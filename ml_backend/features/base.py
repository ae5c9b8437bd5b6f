"""What every embedder shares: the `Embedder` protocol, its error and two row helpers.

The concrete embedders (`voice`, `voice_speechbrain`, `image`, `image_clip`) import this module
and `ml_backend.features.embedder`, the registry that builds them by name, imports them lazily:
the registry sits above them, this module below, and no import goes round in a circle.

Grouping compares vectors only within one embedder's space, so every vector travels with the
`ModelInfo` (name, version, dim) of what made it; the store refuses to mix columns whose info
differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ml_backend.features.store import ModelInfo


class ModelUnavailableError(RuntimeError):
    """An embedder cannot be built here; the message is one line naming the model and the fix."""


@runtime_checkable
class Embedder(Protocol):
    """Maps a batch of clips or frames to unit-length rows.

    Voice items are (num_samples,) float32 mono clips at 16 kHz; image items are (h, w, 3) uint8
    RGB frames. ``embed`` returns (len(batch), info.dim) float32 with every row L2-normalised,
    and the same item always gives the same row (no randomness, no dependence on batch mates
    beyond float rounding).
    """

    info: ModelInfo

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray: ...


def normalise_rows(rows: np.ndarray) -> np.ndarray:
    """(n, d) float32 with unit-length rows; an all-zero row stays zero rather than NaN."""
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def check_batch(batch: Sequence[np.ndarray], *, kind: str) -> None:
    """Raise one line naming the first item that an embedder of ``kind`` cannot take."""
    for number, item in enumerate(batch):
        array = np.asarray(item)
        if kind == "voice":
            if array.ndim != 1 or array.size == 0:
                raise ValueError(
                    f"voice item {number}: expected a non-empty (num_samples,) mono clip, "
                    f"got shape {array.shape}"
                )
        elif array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or not array.size:
            raise ValueError(
                f"image item {number}: expected an (h, w, 3) uint8 RGB frame, "
                f"got shape {array.shape} {array.dtype}"
            )
