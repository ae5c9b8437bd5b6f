"""One small interface for every voice and image embedder, and a registry that builds them by name.

Grouping compares vectors only within one embedder's space, so every vector travels with the
`ModelInfo` (name, version, dim) of what made it; the store refuses to mix columns whose info
differs. Embedders are built lazily by name because two of them (ECAPA, CLIP) need a heavy stack
that the default install does not have: asking for one must cost nothing until it is chosen, and
fail in one line saying how to get it when it cannot load.

Names (also accepted from ``SG_VOICE_MODEL`` / ``SG_IMAGE_MODEL``):

- voice: ``resemblyzer`` (default, weights in the wheel), ``ecapa`` (hub id
  ``speechbrain/spkrec-ecapa-voxceleb``), ``ecapa:<hub id or local folder>``, ``anime-ecapa``
  (the anime-domain ECAPA of `anime_speaker_embedding`, plain torch, ``char`` variant),
  ``anime-ecapa:va``, ``anime-ecapa:<hub id, folder or weights file>``.
- image: ``anime-colour`` (default, detector weights in the wheel), ``clip`` (ViT-B-32 with the
  ``laion2b_s34b_b79k`` weights), ``clip:<arch>/<pretrained tag>``, ``clip:<checkpoint file>``,
  ``clip:<arch>:<checkpoint file>``, ``clip:hf-hub:<org>/<repo>``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ml_backend.features.store import ModelInfo

VOICE_ENV = "SG_VOICE_MODEL"
IMAGE_ENV = "SG_IMAGE_MODEL"
DEFAULT_VOICE = "resemblyzer"
DEFAULT_IMAGE = "anime-colour"


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


def voice_embedder(name: str | None = None, **options: Any) -> Embedder:
    """The voice embedder called ``name`` (default: ``$SG_VOICE_MODEL``, else resemblyzer)."""
    name = name or os.environ.get(VOICE_ENV) or DEFAULT_VOICE
    kind, _, argument = name.partition(":")
    if kind == "resemblyzer" and not argument:
        from ml_backend.features.voice import ResemblyzerEmbedder

        return ResemblyzerEmbedder(**options)
    if kind == "ecapa":
        from ml_backend.features.voice_speechbrain import SpeechBrainEmbedder

        return SpeechBrainEmbedder(argument or None, **options)
    if kind == "anime-ecapa":
        from ml_backend.features.voice_anime import AnimeEcapaEmbedder

        return AnimeEcapaEmbedder(argument or None, **options)
    raise ValueError(
        f"unknown voice model {name!r}: use resemblyzer, ecapa, ecapa:<hub id or folder>, "
        "anime-ecapa, anime-ecapa:va or anime-ecapa:<hub id, folder or file>"
    )


def image_embedder(name: str | None = None, **options: Any) -> Embedder:
    """The image embedder called ``name`` (default: ``$SG_IMAGE_MODEL``, else anime-colour)."""
    name = name or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
    kind, _, argument = name.partition(":")
    if kind in ("anime-colour", "anime-color") and not argument:
        from ml_backend.features.image import AnimeColourEmbedder

        return AnimeColourEmbedder(**options)
    if kind == "clip":
        from ml_backend.features.image_clip import OpenClipEmbedder

        return OpenClipEmbedder.from_spec(argument, **options)
    raise ValueError(
        f"unknown image model {name!r}: use anime-colour, clip, clip:<arch>/<tag>, "
        "or clip:<checkpoint file>"
    )


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
