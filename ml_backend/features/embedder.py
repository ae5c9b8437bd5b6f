"""The registry of voice and image embedders: builds one by name.

The interface every embedder implements, its error and helpers are in
`ml_backend.features.base` (re-exported here for callers of the registry); the embedders import
that module, never this one. Embedders are built lazily by name because two of them (ECAPA,
CLIP) need a heavy stack that the default install does not have: asking for one must cost
nothing until it is chosen, and fail in one line saying how to get it when it cannot load.

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
from typing import Any

from ml_backend.features.base import Embedder, ModelUnavailableError, check_batch, normalise_rows

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_VOICE",
    "IMAGE_ENV",
    "VOICE_ENV",
    "Embedder",
    "ModelUnavailableError",
    "check_batch",
    "image_embedder",
    "normalise_rows",
    "voice_embedder",
]

VOICE_ENV = "SG_VOICE_MODEL"
IMAGE_ENV = "SG_IMAGE_MODEL"
DEFAULT_VOICE = "resemblyzer"
DEFAULT_IMAGE = "anime-colour"


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
