"""Drawn anime-style characters for the benchmark episodes.

The image embedder has to tell characters apart the way a viewer does: by hair colour and
shape, eye colour, face shape and outfit. So every one of those is a field of `Look`, and
`random_looks` spreads them far apart so that a cast is separable in principle and any failure
is the embedder's, not the drawing's.

A character is drawn in "face units" (1.0 = face width) around the face centre, at twice the
output size, and then halved: Pillow's polygon fill has no anti-aliasing of its own. The
proportions (big low-set eyes with highlights, small pointed chin, bangs and side locks that
frame the face) follow the anime convention closely enough that the `animeface` detector,
trained on real anime art, finds nearly all of these faces (about 95-100% per shot scale,
with no false detections on backgrounds).
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

HAIR_STYLES = ("spiky", "long", "bob", "twintails", "ponytail", "short")
FACE_SHAPES = ("round", "oval", "sharp")
OUTFIT_STYLES = ("uniform", "hoodie", "suit", "dress", "armor")
ACCESSORIES = ("glasses", "ribbon", "hat")
FACINGS = ("front", "left", "right")

RGB = tuple[int, int, int]
Point = tuple[float, float]

# Skin tones of anime palettes, from pale to tanned; a character keeps one for all frames.
SKIN_TONES: tuple[RGB, ...] = (
    (255, 232, 214),
    (252, 221, 196),
    (246, 208, 178),
    (236, 190, 155),
    (212, 160, 120),
    (180, 126, 92),
)

# Most anime casts are drawn pale; darker tones are rarer but present.
_SKIN_TONE_WEIGHTS = (0.3, 0.25, 0.2, 0.12, 0.08, 0.05)

# Where the head sits and how big it is, as a function of the shot scale: a wide shot (0.6)
# shows the whole figure, a medium shot (1.0) head and torso, a close-up (1.8) the face.
_FACE_WIDTH_PER_FRAME_HEIGHT = 0.24
_SCALE_KNOTS = (0.6, 1.0, 1.8)
_FACE_CENTRE_Y_KNOTS = (0.16, 0.36, 0.47)
# Horizontal extent of a sprite in face units either side of the centre line: the widest
# part, a twin tail, reaches about 1.1.
_SPRITE_HALF_WIDTH = 1.3
_SUPERSAMPLE = 2


def _check_rgb(name: str, value: Iterable[int]) -> RGB:
    rgb = tuple(int(c) for c in value)
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"{name} must be three integers in 0..255, got {value!r}")
    return rgb  # type: ignore[return-value]


def _check_choice(name: str, value: str | None, choices: Sequence[str | None]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


@dataclass(frozen=True)
class Look:
    """What makes one character recognisable on screen; hashable so renders can be cached."""

    hair_rgb: RGB
    hair_style: str
    eye_rgb: RGB
    skin_rgb: RGB
    face_shape: str
    outfit_rgb: RGB
    outfit_style: str
    accessory: str | None = None

    def __post_init__(self) -> None:
        # Lists would make the Look unhashable and break the render cache, so normalise.
        for name in ("hair_rgb", "eye_rgb", "skin_rgb", "outfit_rgb"):
            object.__setattr__(self, name, _check_rgb(name, getattr(self, name)))
        _check_choice("hair_style", self.hair_style, HAIR_STYLES)
        _check_choice("face_shape", self.face_shape, FACE_SHAPES)
        _check_choice("outfit_style", self.outfit_style, OUTFIT_STYLES)
        _check_choice("accessory", self.accessory, (*ACCESSORIES, None))


def hsv_rgb(hue: float, saturation: float, value: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return (round(r * 255), round(g * 255), round(b * 255))


def _spread_hues(count: int, rng: np.random.Generator) -> list[float]:
    """Evenly spaced hues from a random start, jittered by at most a fifth of the spacing."""
    start = rng.random()
    jitter = rng.uniform(-0.2, 0.2, size=count)
    hues = [(start + (i + jitter[i]) / count) % 1.0 for i in range(count)]
    return [hues[i] for i in rng.permutation(count)]


def _deal_styles(count: int, style_order: np.ndarray) -> list[int]:
    """Styles for `count` slots round a circle: every style before any repeats, and each
    repeat in the slot farthest (round the circle) from that style's earlier slots."""
    members: dict[int, list[int]] = {int(style): [] for style in style_order}
    dealt = []
    for slot in range(count):

        def preference(style: int, slot: int = slot) -> tuple[int, int]:
            gaps = [min(abs(slot - m), count - abs(slot - m)) for m in members[style]]
            return (len(members[style]), -min(gaps, default=count))

        style = min(members, key=preference)  # ties go to the earlier style in style_order
        members[style].append(slot)
        dealt.append(style)
    return dealt


def random_looks(count: int, rng: np.random.Generator) -> list[Look]:
    """A cast of `count` mutually distinct looks.

    Hair hues are evenly spread (no two hair colours alike), and hair styles are dealt along
    the hue circle so that two characters with the same style are also far apart in hue. Eye
    and outfit hues are spread the same way, independently.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count == 0:
        return []
    hair_hues = _spread_hues(count, rng)
    eye_hues = _spread_hues(count, rng)
    outfit_hues = _spread_hues(count, rng)
    style_order = np.roll(np.arange(len(HAIR_STYLES)), -int(rng.integers(len(HAIR_STYLES))))
    hair_styles = [""] * count
    for index, style in zip(np.argsort(hair_hues), _deal_styles(count, style_order), strict=True):
        hair_styles[int(index)] = HAIR_STYLES[style]
    outfit_offset = int(rng.integers(len(OUTFIT_STYLES)))
    looks = []
    for i in range(count):
        accessory = None
        if rng.random() < 0.4:
            accessory = ACCESSORIES[int(rng.integers(len(ACCESSORIES)))]
        looks.append(
            Look(
                hair_rgb=hsv_rgb(hair_hues[i], rng.uniform(0.45, 0.85), rng.uniform(0.55, 0.95)),
                hair_style=hair_styles[i],
                eye_rgb=hsv_rgb(eye_hues[i], rng.uniform(0.55, 0.9), rng.uniform(0.55, 0.9)),
                skin_rgb=SKIN_TONES[int(rng.choice(len(SKIN_TONES), p=_SKIN_TONE_WEIGHTS))],
                face_shape=FACE_SHAPES[int(rng.integers(len(FACE_SHAPES)))],
                outfit_rgb=hsv_rgb(outfit_hues[i], rng.uniform(0.35, 0.8), rng.uniform(0.35, 0.9)),
                outfit_style=OUTFIT_STYLES[(i + outfit_offset) % len(OUTFIT_STYLES)],
                accessory=accessory,
            )
        )
    return looks


# ---------------------------------------------------------------------------------------------
# Colour and geometry helpers


def mix_rgb(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def shade_rgb(rgb: RGB, factor: float) -> RGB:
    return mix_rgb(rgb, (0, 0, 0), 1.0 - factor)


def tint_rgb(rgb: RGB, t: float) -> RGB:
    return mix_rgb(rgb, (255, 255, 255), t)


def _complement(rgb: RGB) -> RGB:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    return hsv_rgb(h + 0.5, max(s, 0.6), max(v, 0.75))


def _bezier(p0: Point, p1: Point, p2: Point, p3: Point, steps: int = 10) -> list[Point]:
    points = []
    for i in range(steps + 1):
        t = i / steps
        u = 1.0 - t
        points.append(
            (
                u**3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t**3 * p3[0],
                u**3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t**3 * p3[1],
            )
        )
    return points


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int) -> list[Point]:
    """Points on an ellipse from angle a0 to a1 (degrees, y down, 0 = right, 90 = down)."""
    return [
        (
            cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n)),
            cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n)),
        )
        for i in range(n + 1)
    ]


def _mirrored(points: Sequence[Point]) -> list[Point]:
    """The left-right mirror of a half outline, reversed so that half + mirror is a loop."""
    return [(-x, y) for x, y in reversed(points)]


def _symmetric(half: Sequence[Point]) -> list[Point]:
    """A closed outline from its right half, given top to bottom."""
    return [*half, *_mirrored(half)]


def _flip(points: Sequence[Point], side: int) -> list[Point]:
    return [(x * side, y) for x, y in points]


class _Pen:
    """Draws in face units: (0, 0) is the face centre, 1.0 is the face width."""

    def __init__(self, draw: ImageDraw.ImageDraw, origin: Point, unit: float) -> None:
        self.draw = draw
        self.ox, self.oy = origin
        self.unit = unit

    def _px(self, points: Iterable[Point]) -> list[Point]:
        return [(self.ox + x * self.unit, self.oy + y * self.unit) for x, y in points]

    def _width(self, width: float) -> int:
        return max(1, round(width * self.unit))

    def poly(
        self,
        points: Sequence[Point],
        fill: RGB | None,
        outline: RGB | None = None,
        width: float = 0,
    ) -> None:
        if outline is None:
            self.draw.polygon(self._px(points), fill=fill)
        else:
            self.draw.polygon(
                self._px(points), fill=fill, outline=outline, width=self._width(width)
            )

    def ellipse(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        fill: RGB | None,
        outline: RGB | None = None,
        width: float = 0,
    ) -> None:
        (x0, y0), (x1, y1) = self._px([(cx - rx, cy - ry), (cx + rx, cy + ry)])
        line_width = self._width(width) if outline is not None else 0
        self.draw.ellipse((x0, y0, x1, y1), fill=fill, outline=outline, width=line_width)

    def line(self, points: Sequence[Point], fill: RGB, width: float) -> None:
        self.draw.line(self._px(points), fill=fill, width=self._width(width), joint="curve")


# ---------------------------------------------------------------------------------------------
# The parts of a character, back to front

_LINE = 0.014  # outline width in face units


@dataclass(frozen=True)
class _Palette:
    hair: RGB
    hair_dark: RGB
    hair_light: RGB
    hair_line: RGB
    skin: RGB
    skin_shadow: RGB
    skin_line: RGB
    eye: RGB
    eye_dark: RGB
    eye_light: RGB
    outfit: RGB
    outfit_dark: RGB
    outfit_light: RGB
    outfit_line: RGB
    accent: RGB


def _palette(look: Look) -> _Palette:
    return _Palette(
        hair=look.hair_rgb,
        hair_dark=shade_rgb(look.hair_rgb, 0.72),
        hair_light=tint_rgb(look.hair_rgb, 0.45),
        hair_line=shade_rgb(look.hair_rgb, 0.4),
        skin=look.skin_rgb,
        skin_shadow=mix_rgb(look.skin_rgb, (200, 110, 110), 0.25),
        skin_line=shade_rgb(look.skin_rgb, 0.55),
        eye=look.eye_rgb,
        eye_dark=shade_rgb(look.eye_rgb, 0.45),
        eye_light=tint_rgb(look.eye_rgb, 0.4),
        outfit=look.outfit_rgb,
        outfit_dark=shade_rgb(look.outfit_rgb, 0.7),
        outfit_light=tint_rgb(look.outfit_rgb, 0.35),
        outfit_line=shade_rgb(look.outfit_rgb, 0.4),
        accent=_complement(look.hair_rgb),
    )


def _face_outline(shape: str) -> list[Point]:
    """Face outline with the crown hidden under hair; the chin shape is what `face_shape` sets."""
    jaw = {
        "round": ((0.5, 0.34), (0.3, 0.56), 0.57),
        "oval": ((0.49, 0.32), (0.2, 0.6), 0.62),
        "sharp": ((0.47, 0.2), (0.1, 0.56), 0.67),
    }[shape]
    (c1, c2, chin) = jaw
    right = (
        _arc(0.0, -0.05, 0.5, 0.62, 270, 360, 8) + _bezier((0.5, -0.05), c1, c2, (0.0, chin))[1:]
    )
    return _symmetric(right)


def _draw_back_hair(pen: _Pen, look: Look, pal: _Palette) -> None:
    style = look.hair_style
    pen.ellipse(0.0, -0.14, 0.64, 0.74, pal.hair_dark, pal.hair_line, _LINE)
    if style == "long":
        half = [(0.0, -0.5), (0.64, -0.2), (0.78, 0.6), (0.86, 1.6), (0.82, 2.2)]
        bottom = [(0.6, 2.1), (0.4, 2.25), (0.15, 2.12), (0.0, 2.2)]
        right = half + bottom
        pen.poly(_symmetric(right), pal.hair_dark, pal.hair_line, _LINE)
    elif style == "bob":
        right = [(0.0, -0.4), (0.68, -0.15), (0.72, 0.42), (0.6, 0.62), (0.0, 0.62)]
        pen.poly(_symmetric(right), pal.hair_dark, pal.hair_line, _LINE)
    elif style == "twintails":
        for side in (-1, 1):
            outer = _bezier((0.5, -0.55), (1.05, -0.45), (1.25, 0.6), (1.0, 1.6), 12)
            tip = [(0.82, 2.3)]
            inner = _bezier((0.85, 1.5), (0.95, 0.7), (0.8, 0.0), (0.45, -0.3), 10)
            pen.poly(_flip(outer + tip + inner, side), pal.hair, pal.hair_line, _LINE)
            streak = _bezier((0.62, -0.35), (0.98, -0.2), (1.02, 0.7), (0.88, 1.6), 10)
            pen.line(_flip(streak, side), pal.hair_dark, 0.025)
    elif style == "ponytail":
        outer = _bezier((0.2, -0.8), (0.85, -0.85), (1.05, 0.2), (0.82, 1.3), 12)
        inner = _bezier((0.62, 1.2), (0.72, 0.4), (0.65, -0.2), (0.3, -0.5), 10)
        pen.poly([*outer, (0.58, 1.9), *inner], pal.hair, pal.hair_line, _LINE)
    else:  # short, spiky: just the nape
        right = [(0.0, -0.4), (0.62, -0.1), (0.58, 0.3), (0.0, 0.36)]
        pen.poly(_symmetric(right), pal.hair_dark, pal.hair_line, _LINE)


def _draw_lower_body(pen: _Pen, look: Look, pal: _Palette) -> None:
    """Legs and skirt or trousers: only seen in wide shots, the sprite clips them otherwise."""
    skirt = look.outfit_style in ("uniform", "dress")
    leg = pal.skin if skirt else pal.outfit_dark
    if look.outfit_style == "uniform":
        leg = (40, 40, 52)  # dark stockings
    for side in (-1, 1):
        pen.poly(
            _flip([(0.04, 3.3), (0.4, 3.3), (0.3, 5.45), (0.1, 5.45)], side),
            leg,
            shade_rgb(leg, 0.55),
            _LINE,
        )
        pen.ellipse(side * 0.21, 5.5, 0.17, 0.08, (60, 45, 40), (30, 20, 20), _LINE)
    if skirt:
        colour = pal.outfit_dark if look.outfit_style == "uniform" else pal.outfit
        hem = [(-0.82, 4.05), (-0.4, 4.12), (0.0, 4.08), (0.4, 4.12), (0.82, 4.05)]
        pen.poly([(-0.5, 2.9), (0.5, 2.9), *hem[::-1]], colour, pal.outfit_line, _LINE)
        for x in (-0.3, -0.1, 0.1, 0.3):
            pen.line([(x, 2.95), (x * 2.2, 4.05)], shade_rgb(colour, 0.75), 0.012)
    else:
        pen.poly(
            [(-0.5, 2.9), (0.5, 2.9), (0.48, 3.55), (-0.48, 3.55)],
            pal.outfit_dark,
            pal.outfit_line,
            _LINE,
        )


def _draw_arms(pen: _Pen, look: Look, pal: _Palette) -> None:
    """Sleeves hanging beside the torso, with hands; drawn first so the torso overlaps them."""
    sleeve = pal.outfit_light if look.outfit_style == "armor" else pal.outfit
    if look.outfit_style == "suit":
        sleeve = pal.outfit_dark
    arm = [(0.5, 1.0), (0.72, 1.12), (0.82, 1.5), (0.86, 2.3), (0.84, 2.95)]
    arm += [(0.66, 2.95), (0.66, 2.3), (0.6, 1.6)]
    for side in (-1, 1):
        pen.poly(_flip(arm, side), sleeve, pal.outfit_line, _LINE)
        pen.line(_flip([(0.7, 2.85), (0.84, 2.85)], side), shade_rgb(sleeve, 0.7), 0.02)
        pen.ellipse(side * 0.76, 3.08, 0.09, 0.13, pal.skin, pal.skin_line, _LINE)


def _draw_torso(pen: _Pen, look: Look, pal: _Palette) -> None:
    style = look.outfit_style
    if style == "hoodie":  # the hood lies behind the neck, so it goes first
        pen.ellipse(0.0, 0.95, 0.58, 0.28, pal.outfit_dark, pal.outfit_line, _LINE)
    # neck, shaded under the chin
    pen.poly([(-0.13, 0.3), (0.13, 0.3), (0.14, 1.0), (-0.14, 1.0)], pal.skin, pal.skin_line, _LINE)
    pen.poly([(-0.13, 0.3), (0.13, 0.3), (0.13, 0.62), (0.0, 0.7), (-0.13, 0.62)], pal.skin_shadow)
    _draw_arms(pen, look, pal)
    half = [
        (0.14, 0.9),
        (0.5, 0.98),
        (0.68, 1.1),
        (0.64, 1.6),
        (0.5, 2.35),
        (0.54, 3.0),
        (0.0, 3.0),
    ]
    pen.poly(_symmetric(half), pal.outfit, pal.outfit_line, _LINE)
    if style == "uniform":
        collar = [(0.0, 1.62), (0.16, 0.9), (0.5, 1.0), (0.66, 1.1), (0.5, 1.45), (0.0, 1.85)]
        pen.poly(_symmetric(collar), pal.outfit_dark, pal.outfit_line, _LINE)
        stripe = [(0.2, 0.98), (0.54, 1.08), (0.42, 1.4), (0.05, 1.72)]
        for side in (-1, 1):
            pen.line(_flip(stripe, side), (245, 245, 245), 0.02)
        pen.poly([(-0.16, 0.9), (0.16, 0.9), (0.0, 1.6)], pal.skin)
        knot = (225, 50, 60)
        pen.poly([(0.0, 1.62), (-0.24, 1.58), (-0.12, 1.98)], knot, shade_rgb(knot, 0.5), _LINE)
        pen.poly([(0.0, 1.62), (0.24, 1.58), (0.12, 1.98)], knot, shade_rgb(knot, 0.5), _LINE)
        pen.ellipse(0.0, 1.64, 0.07, 0.06, knot, shade_rgb(knot, 0.5), _LINE)
    elif style == "suit":
        pen.poly([(-0.2, 0.92), (0.2, 0.92), (0.0, 2.0)], (246, 246, 246), (150, 150, 160), _LINE)
        tie = pal.accent
        pen.poly([(-0.05, 1.02), (0.05, 1.02), (0.09, 1.75), (0.0, 1.88), (-0.09, 1.75)], tie)
        pen.poly([(-0.06, 0.92), (0.06, 0.92), (0.05, 1.04), (-0.05, 1.04)], shade_rgb(tie, 0.7))
        lapel = [(0.2, 0.92), (0.34, 0.96), (0.3, 1.3), (0.4, 1.42), (0.0, 2.05)]
        for side in (-1, 1):
            pen.poly(_flip(lapel, side), pal.outfit_dark, pal.outfit_line, _LINE)
        pen.ellipse(0.0, 2.3, 0.04, 0.04, pal.outfit_line)
        pen.ellipse(0.0, 2.65, 0.04, 0.04, pal.outfit_line)
    elif style == "hoodie":
        pen.poly([(-0.2, 0.9), (0.2, 0.9), (0.0, 1.15)], pal.outfit_dark, pal.outfit_line, _LINE)
        for side in (-1, 1):
            pen.line([(side * 0.1, 1.05), (side * 0.12, 1.7)], (240, 240, 240), 0.018)
            pen.ellipse(side * 0.12, 1.72, 0.025, 0.035, (240, 240, 240))
        pocket = [(-0.36, 2.3), (0.36, 2.3), (0.46, 2.85), (-0.46, 2.85)]
        pen.poly(pocket, pal.outfit_dark, pal.outfit_line, _LINE)
    elif style == "dress":
        for side in (-1, 1):
            pen.ellipse(side * 0.66, 1.18, 0.2, 0.18, pal.outfit_light, pal.outfit_line, _LINE)
            pen.poly(
                _flip([(0.0, 0.92), (0.16, 0.88), (0.36, 1.02), (0.28, 1.18), (0.0, 1.12)], side),
                (250, 250, 250),
                (150, 150, 160),
                _LINE,
            )
        for y in (1.5, 1.85, 2.2):
            pen.ellipse(0.0, y, 0.04, 0.04, pal.outfit_light, pal.outfit_line, 0.008)
        pen.poly([(-0.5, 2.4), (0.5, 2.4), (0.51, 2.55), (-0.51, 2.55)], pal.outfit_dark)
    elif style == "armor":
        metal = (200, 205, 215)
        pen.poly(
            [(-0.3, 0.88), (0.3, 0.88), (0.36, 1.12), (-0.36, 1.12)], metal, (90, 95, 110), _LINE
        )
        chest = [(0.0, 1.1), (0.42, 1.14), (0.5, 1.8), (0.0, 2.2)]
        pen.poly(_symmetric(chest), tint_rgb(pal.outfit, 0.2), pal.outfit_line, _LINE)
        pen.line([(0.0, 1.14), (0.0, 2.15)], pal.outfit_line, 0.014)
        pen.ellipse(0.0, 1.4, 0.07, 0.07, pal.accent, shade_rgb(pal.accent, 0.5), _LINE)
        for side in (-1, 1):
            pen.ellipse(side * 0.72, 1.2, 0.26, 0.21, metal, (90, 95, 110), _LINE)
            pen.line(_arc(side * 0.72, 1.26, 0.2, 0.12, 200, 340, 8), (120, 125, 140), 0.014)


def _draw_eye(pen: _Pen, cx: float, cy: float, size: float, outer_side: int, pal: _Palette) -> None:
    """One eye: white, iris with a dark upper half, pupil, two highlights and a heavy lash line.

    `outer_side` is +1 when the eye's outer corner is to the right.
    """
    w, h = 0.125 * size, 0.15 * size
    pen.ellipse(cx, cy + 0.01, w, h * 0.9, (255, 255, 255), pal.skin_line, 0.008)
    pen.ellipse(cx, cy + 0.018, w * 0.74, h * 0.92, pal.eye, pal.eye_dark, 0.012)
    pen.ellipse(cx, cy + 0.06 * size, w * 0.55, h * 0.42, pal.eye_light)
    pen.poly(
        _arc(cx, cy + 0.018, w * 0.74, h * 0.92, 180, 360, 12),
        pal.eye_dark,
    )
    pen.ellipse(cx, cy + 0.02, w * 0.32, h * 0.44, (25, 20, 30))
    pen.ellipse(cx - outer_side * w * 0.3, cy - h * 0.3, w * 0.3, w * 0.3, (255, 255, 255))
    pen.ellipse(cx + outer_side * w * 0.28, cy + h * 0.38, w * 0.13, w * 0.13, (255, 255, 255))
    # Upper lash line, thick, flicked up at the outer corner.
    top = _arc(cx, cy + 0.02, w * 1.08, h * 1.05, 195, 345, 12)
    under = _arc(cx, cy + 0.035, w * 1.0, h * 0.95, 345, 195, 12)
    flick = [(cx + outer_side * w * 1.25, cy - h * 0.55)]
    lash = top + flick + under if outer_side > 0 else flick + top + under
    pen.poly(lash, (35, 25, 35))
    pen.line(_arc(cx, cy + 0.01, w * 0.8, h * 0.95, 55, 125, 6), pal.skin_line, 0.01)


def _draw_face(pen: _Pen, look: Look, pal: _Palette, turn: int, mouth_open: bool) -> None:
    for side in (-1, 1):  # ears, mostly hidden by side locks
        pen.ellipse(side * 0.49, 0.1, 0.07, 0.12, pal.skin, pal.skin_line, _LINE)
    outline = [(x + turn * 0.03 * max(0.0, y), y) for x, y in _face_outline(look.face_shape)]
    pen.poly(outline, pal.skin, pal.skin_line, _LINE)
    shift = turn * 0.07
    blush = mix_rgb(pal.skin, (255, 120, 130), 0.3)
    for side in (-1, 1):
        pen.ellipse(side * 0.3 + shift, 0.3, 0.09, 0.035, blush)
    for side in (-1, 1):
        # The eye on the far side of a turned head looks narrower.
        size = 1.0 if side * turn >= 0 else 0.88
        ex = side * 0.21 + shift
        pen.line(_arc(ex, -0.06, 0.12, 0.05, 200, 340, 6), pal.hair_line, 0.018)
        _draw_eye(pen, ex, 0.1, size, side, pal)
    pen.line([(0.02 + shift * 1.4, 0.3), (0.0 + shift * 1.4, 0.33)], pal.skin_line, 0.014)
    mx = shift * 1.2
    if mouth_open:
        mouth = _arc(mx, 0.42, 0.075, 0.075, 0, 180, 10)  # closed by its top chord
        pen.poly(mouth, (130, 40, 50), (80, 25, 30), 0.01)
        pen.ellipse(mx, 0.475, 0.04, 0.018, (230, 120, 120))
    else:
        pen.line(_arc(mx, 0.41, 0.06, 0.02, 30, 150, 6), (110, 50, 55), 0.014)


def _bang_edge(style: str) -> list[Point]:
    """The lower edge of the fringe, right to left: alternating roots and strand tips."""
    if style == "bob":  # blunt-cut fringe
        xs = np.linspace(0.44, -0.44, 9)
        ys = [-0.2, -0.06, -0.1, -0.06, -0.1, -0.06, -0.1, -0.06, -0.2]
        return list(zip(xs.tolist(), ys, strict=True))
    if style == "spiky":
        return [
            (0.46, -0.2), (0.38, -0.05), (0.3, -0.26), (0.2, -0.06), (0.1, -0.28),
            (0.0, 0.02), (-0.1, -0.28), (-0.2, -0.06), (-0.3, -0.26), (-0.38, -0.05),
            (-0.46, -0.2),
        ]  # fmt: skip
    if style == "short":
        return [
            (0.45, -0.22), (0.34, -0.1), (0.24, -0.26), (0.1, -0.1), (0.0, -0.26),
            (-0.12, -0.08), (-0.24, -0.26), (-0.34, -0.12), (-0.45, -0.22),
        ]  # fmt: skip
    return [
        (0.44, -0.18), (0.36, -0.04), (0.28, -0.24), (0.16, -0.05), (0.06, -0.27),
        (-0.02, 0.04), (-0.1, -0.27), (-0.2, -0.05), (-0.3, -0.24), (-0.38, -0.06),
        (-0.44, -0.18),
    ]  # fmt: skip


_SIDE_LOCK_LENGTH = {
    "spiky": 0.22,
    "long": 1.15,
    "bob": 0.55,
    "twintails": 0.42,
    "ponytail": 0.38,
    "short": 0.25,
}


def _crown(style: str) -> list[Point]:
    """The top outline of the hair, left temple to right temple."""
    if style == "spiky":
        points = []
        for i in range(13):
            angle = 180 + 180 * i / 12
            radius = 1.0 if i % 2 == 0 else 1.38
            points.append(
                (
                    0.63 * radius * math.cos(math.radians(angle)),
                    -0.12 + 0.74 * radius * math.sin(math.radians(angle)),
                )
            )
        return points
    rx = 0.68 if style == "bob" else 0.64
    return _arc(0.0, -0.12, rx, 0.74, 180, 360, 16)


def _draw_front_hair(pen: _Pen, look: Look, pal: _Palette, turn: int) -> None:
    style = look.hair_style
    lock = _SIDE_LOCK_LENGTH[style]
    shift = turn * 0.05
    bangs = [(x + shift, y) for x, y in _bang_edge(style)]
    right_lock = [(0.64, -0.1), (0.6, lock * 0.5), (0.5, lock + 0.05), (0.44, lock * 0.6)]
    right_lock += [(0.42, 0.05)]
    left_lock = [(-0.42, 0.05), (-0.44, lock * 0.6), (-0.5, lock + 0.05), (-0.6, lock * 0.5)]
    left_lock += [(-0.64, -0.1)]
    if style == "bob":
        right_lock = [(0.68, -0.1), (0.66, 0.45), (0.5, lock + 0.04), (0.4, 0.35), (0.42, 0.0)]
        left_lock = _mirrored(right_lock)
    outline = [*_crown(style), *right_lock, *bangs, *left_lock]
    pen.poly(outline, pal.hair, pal.hair_line, _LINE)
    # The "angel ring" highlight across the crown, broken into strands.
    ring = _arc(0.0, -0.12, 0.5, 0.55, 205, 335, 12)
    for a, b in zip(ring[:-1:2], ring[1::2], strict=False):
        pen.poly([a, b, (b[0], b[1] + 0.05), (a[0], a[1] + 0.07)], pal.hair_light)
    for x, y in bangs[1:-1:2]:  # strand separations above each tip
        pen.line([(x * 0.7, -0.5), (x, y - 0.05)], pal.hair_dark, 0.012)


def _draw_accessory(pen: _Pen, look: Look, pal: _Palette, turn: int) -> None:
    shift = turn * 0.07
    if look.accessory == "glasses":
        frame = (45, 40, 60)
        for side in (-1, 1):
            x = side * 0.21 + shift
            pen.ellipse(x, 0.11, 0.16, 0.15, None, frame, 0.02)
        pen.line([(shift - 0.05, 0.08), (shift + 0.05, 0.08)], frame, 0.02)
    elif look.accessory == "ribbon":
        colour = pal.accent
        line = shade_rgb(colour, 0.5)
        cx, cy = 0.42, -0.62
        pen.poly([(cx, cy), (cx - 0.22, cy - 0.14), (cx - 0.2, cy + 0.14)], colour, line, _LINE)
        pen.poly([(cx, cy), (cx + 0.22, cy - 0.14), (cx + 0.2, cy + 0.14)], colour, line, _LINE)
        pen.ellipse(cx, cy, 0.05, 0.05, shade_rgb(colour, 0.8), line, _LINE)
    elif look.accessory == "hat":
        colour = pal.accent
        line = shade_rgb(colour, 0.5)
        top = -0.98 if look.hair_style == "spiky" else -0.74
        pen.ellipse(0.05, top, 0.62, 0.2, colour, line, _LINE)
        pen.poly([(0.04, top - 0.21), (0.1, top - 0.21), (0.08, top - 0.29)], line)
        pen.line(_arc(0.05, top + 0.02, 0.55, 0.14, 20, 160, 10), shade_rgb(colour, 0.75), 0.02)


# ---------------------------------------------------------------------------------------------
# Sprites


def figure_geometry(frame_height: int, scale: float) -> tuple[float, float]:
    """(face width in pixels, face centre y in pixels) for a shot of the given scale."""
    unit = _FACE_WIDTH_PER_FRAME_HEIGHT * frame_height * scale
    centre_y = float(np.interp(scale, _SCALE_KNOTS, _FACE_CENTRE_Y_KNOTS)) * frame_height
    return unit, centre_y


def _draw_character(pen: _Pen, look: Look, mouth_open: bool, turn: int) -> None:
    pal = _palette(look)
    _draw_back_hair(pen, look, pal)
    _draw_lower_body(pen, look, pal)
    _draw_torso(pen, look, pal)
    _draw_face(pen, look, pal, turn, mouth_open)
    _draw_front_hair(pen, look, pal, turn)
    _draw_accessory(pen, look, pal, turn)


@functools.lru_cache(maxsize=64)
def character_sprite(
    look: Look, frame_height: int, scale: float, mouth_open: bool, facing: str
) -> tuple[Image.Image, int]:
    """An RGBA sprite as tall as the frame, and the x of its centre line within the sprite.

    The vertical position depends only on the frame height and the shot scale, so one sprite
    serves every horizontal position; that makes it worth caching across shots. Treat the
    returned image as read-only: it is shared.
    """
    _check_choice("facing", facing, FACINGS)
    unit, centre_y = figure_geometry(frame_height, scale)
    half_width = math.ceil(_SPRITE_HALF_WIDTH * unit)
    big_unit = unit * _SUPERSAMPLE
    # Drawn premultiplied: opaque ink is the same either way, and averaging premultiplied
    # pixels keeps the transparent black around the figure from darkening its edges.
    canvas = Image.new(
        "RGBa", (2 * half_width * _SUPERSAMPLE, frame_height * _SUPERSAMPLE), (0, 0, 0, 0)
    )
    draw = ImageDraw.Draw(canvas)
    pen = _Pen(draw, (half_width * _SUPERSAMPLE, centre_y * _SUPERSAMPLE), big_unit)
    # Drawn facing right, then mirrored for left: a turned face is the one asymmetry.
    _draw_character(pen, look, mouth_open, turn=0 if facing == "front" else 1)
    if facing == "left":
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    sprite = canvas.reduce(_SUPERSAMPLE).convert("RGBA")
    return sprite, half_width
