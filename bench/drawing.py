"""Frames for the benchmark episodes: drawn anime-style characters over drawn backgrounds.

The episode composer decides who is on screen in each shot (the speaker most of the time, but
also a listener, two characters, or nobody) and how the camera frames them; this module only
renders what it is asked. Renders are deterministic, and the expensive parts (backgrounds and
character sprites) are cached, because an episode shows the same few characters against the
same few backgrounds hundreds of times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from bench.drawing_characters import (
    ACCESSORIES,
    FACE_SHAPES,
    FACINGS,
    HAIR_STYLES,
    OUTFIT_STYLES,
    Look,
    character_sprite,
    figure_geometry,
    random_looks,
)
from bench.drawing_scenes import (
    BACKGROUND_KINDS,
    Background,
    background_image,
    render_title_card,
)

__all__ = [
    "ACCESSORIES",
    "BACKGROUND_KINDS",
    "FACE_SHAPES",
    "FACINGS",
    "HAIR_STYLES",
    "OUTFIT_STYLES",
    "Background",
    "Look",
    "Placement",
    "face_box",
    "figure_geometry",
    "random_looks",
    "render_frame",
    "render_title_card",
]


@dataclass(frozen=True)
class Placement:
    """One character in one shot.

    x : horizontal centre of the character as a fraction of the frame width.
    scale : camera framing; 1.0 is a medium shot (head and torso), 1.8 a close-up, 0.6 a
        wide shot showing the whole figure.
    """

    look: Look
    x: float
    scale: float
    mouth_open: bool = False
    facing: str = "front"

    def __post_init__(self) -> None:
        if not isinstance(self.look, Look):
            raise TypeError(f"Placement.look must be a Look, got {type(self.look).__name__}")
        if not math.isfinite(self.x):
            raise ValueError(f"Placement.x must be finite, got {self.x!r}")
        if not (math.isfinite(self.scale) and 0.2 <= self.scale <= 4.0):
            raise ValueError(f"Placement.scale must be in 0.2..4.0, got {self.scale!r}")
        if self.facing not in FACINGS:
            raise ValueError(
                f"Placement.facing must be one of {', '.join(FACINGS)}; got {self.facing!r}"
            )


def _background_zoom(placements: Sequence[Placement]) -> float:
    """Close-ups crop into the backdrop, as a camera moving in would; quantised for the cache."""
    if not placements:
        return 1.0
    largest = max(p.scale for p in placements)
    return round(min(1.4, max(1.0, 1.0 + 0.5 * (largest - 1.0))), 1)


def render_frame(
    width: int, height: int, background: Background, placements: Sequence[Placement]
) -> Image.Image:
    """An RGB frame of `background` with each placement drawn on it, later ones in front.

    Empty `placements` gives the bare background: a shot with nobody on screen.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if not isinstance(background, Background):
        raise TypeError(f"background must be a Background, got {type(background).__name__}")
    frame = background_image(background, width, height, _background_zoom(placements)).copy()
    for placement in placements:
        sprite, centre = character_sprite(
            placement.look,
            height,
            # Rounded so that float noise in the composer's maths still hits the sprite cache.
            round(placement.scale, 3),
            placement.mouth_open,
            placement.facing,
        )
        left = round(placement.x * width) - centre
        frame.paste(sprite, (left, 0), sprite)
    return frame


def face_box(width: int, height: int, placement: Placement) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of the placement's face, forehead to chin.

    Ground truth for checking a face detector or an image embedder's crop; the box may reach
    past the frame edges when the character stands partly off screen.
    """
    unit, centre_y = figure_geometry(height, round(placement.scale, 3))
    centre_x = placement.x * width
    return (
        round(centre_x - 0.5 * unit),
        round(centre_y - 0.5 * unit),
        round(centre_x + 0.5 * unit),
        round(centre_y + 0.68 * unit),
    )
