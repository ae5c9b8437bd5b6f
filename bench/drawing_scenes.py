"""Drawn backgrounds and title cards for the benchmark episodes.

Backgrounds vary by kind and seed so that scene cuts change what is behind the characters, as
they do in a real episode; an image embedder that keys on the background instead of the
character then shows up as an error in the benchmark. They are softly blurred, like the
painted, slightly out-of-focus backgrounds of anime, which also keeps them from competing with
the characters for the face detector.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bench.drawing_characters import RGB, hsv_rgb, mix_rgb, shade_rgb, tint_rgb

BACKGROUND_KINDS = ("room", "sky", "street", "classroom", "night", "plain")
_SUPERSAMPLE = 2


@dataclass(frozen=True)
class Background:
    """A scene's backdrop: the same kind and seed always draw the same picture."""

    kind: str
    seed: int

    def __post_init__(self) -> None:
        if self.kind not in BACKGROUND_KINDS:
            raise ValueError(
                f"Background kind must be one of {', '.join(BACKGROUND_KINDS)}; got {self.kind!r}"
            )


def _vertical_gradient(width: int, height: int, top: RGB, bottom: RGB) -> Image.Image:
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    column = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    strip = Image.fromarray(column.round().astype(np.uint8)[:, None, :])
    return strip.resize((width, height), Image.Resampling.NEAREST)


def _rect(draw: ImageDraw.ImageDraw, w: int, h: int, box: tuple[float, ...], fill: RGB) -> None:
    """A rectangle given in fractions of the canvas."""
    x0, y0, x1, y1 = box
    draw.rectangle((x0 * w, y0 * h, x1 * w, y1 * h), fill=fill)


def _clouds(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator, n: int) -> None:
    for _ in range(n):
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(0.05, 0.5) * h
        size = rng.uniform(0.04, 0.1) * w
        for _ in range(6):
            dx, dy = rng.uniform(-1.6, 1.6) * size, rng.uniform(-0.4, 0.3) * size
            r = size * rng.uniform(0.5, 0.9)
            draw.ellipse(
                (cx + dx - r, cy + dy - r * 0.7, cx + dx + r, cy + dy + r * 0.7), (255,) * 3
            )


def _window(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], sky: RGB) -> None:
    x0, y0, x1, y1 = box
    frame = (235, 235, 230)
    draw.rectangle(box, fill=frame)
    pad = (x1 - x0) * 0.06
    draw.rectangle((x0 + pad, y0 + pad, x1 - pad, y1 - pad), fill=sky)
    draw.rectangle(((x0 + x1) / 2 - pad / 2, y0, (x0 + x1) / 2 + pad / 2, y1), fill=frame)
    draw.rectangle((x0, (y0 + y1) / 2 - pad / 2, x1, (y0 + y1) / 2 + pad / 2), fill=frame)


def _draw_room(img: Image.Image, rng: np.random.Generator) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    wall = hsv_rgb(rng.random(), rng.uniform(0.1, 0.3), rng.uniform(0.8, 0.95))
    floor = hsv_rgb(rng.uniform(0.05, 0.12), rng.uniform(0.35, 0.55), rng.uniform(0.45, 0.7))
    _rect(draw, w, h, (0, 0, 1, 0.72), wall)
    _rect(draw, w, h, (0, 0.62, 1, 0.72), shade_rgb(wall, 0.85))
    _rect(draw, w, h, (0, 0.72, 1, 1), floor)
    for i in range(12):
        y = 0.72 + 0.28 * (i / 12) ** 1.5
        _rect(draw, w, h, (0, y, 1, y + 0.003), shade_rgb(floor, 0.8))
    wx = rng.uniform(0.05, 0.55)
    _window(draw, (wx * w, 0.12 * h, (wx + 0.3) * w, 0.52 * h), (150, 200, 245))
    # A picture frame or a shelf on the other side.
    px = (wx + 0.45) % 0.8 + 0.05
    frame = shade_rgb(floor, 0.7)
    _rect(draw, w, h, (px, 0.16, px + 0.14, 0.36), frame)
    _rect(draw, w, h, (px + 0.01, 0.18, px + 0.13, 0.34), hsv_rgb(rng.random(), 0.4, 0.8))
    sx = rng.uniform(0.0, 0.8)
    _rect(draw, w, h, (sx, 0.44, sx + 0.2, 0.47), frame)
    for i in range(6):
        colour = hsv_rgb(rng.random(), 0.5, 0.7)
        _rect(draw, w, h, (sx + 0.01 + i * 0.025, 0.37, sx + 0.03 + i * 0.025, 0.44), colour)


def _draw_sky(img: Image.Image, rng: np.random.Generator) -> None:
    w, h = img.size
    hue = rng.uniform(0.55, 0.62)
    img.paste(_vertical_gradient(w, h, hsv_rgb(hue, 0.7, 0.85), hsv_rgb(hue - 0.03, 0.25, 1.0)))
    draw = ImageDraw.Draw(img)
    _clouds(draw, w, h, rng, int(rng.integers(4, 8)))
    hill = hsv_rgb(rng.uniform(0.22, 0.35), 0.5, 0.6)
    xs = np.linspace(0, w, 24)
    ys = h * (0.8 + 0.05 * np.sin(xs / w * rng.uniform(3, 7) + rng.uniform(0, 6)))
    draw.polygon([(0, h), *zip(xs.tolist(), ys.tolist(), strict=True), (w, h)], fill=hill)


def _draw_street(img: Image.Image, rng: np.random.Generator) -> None:
    w, h = img.size
    img.paste(_vertical_gradient(w, h, (120, 180, 235), (215, 230, 245)))
    draw = ImageDraw.Draw(img)
    _clouds(draw, w, h, rng, 3)
    x = -rng.uniform(0, 0.1)
    while x < 1.0:
        bw = rng.uniform(0.12, 0.25)
        top = rng.uniform(0.1, 0.45)
        colour = hsv_rgb(rng.random(), rng.uniform(0.1, 0.35), rng.uniform(0.6, 0.9))
        _rect(draw, w, h, (x, top, x + bw, 0.75), colour)
        glass = mix_rgb(colour, (90, 130, 170), 0.6)
        for row in np.arange(top + 0.04, 0.68, 0.09):
            for col in np.arange(x + 0.02, x + bw - 0.04, 0.05):
                _rect(draw, w, h, (col, row, col + 0.03, row + 0.05), glass)
        x += bw + rng.uniform(0.0, 0.03)
    _rect(draw, w, h, (0, 0.75, 1, 0.8), (190, 185, 175))
    _rect(draw, w, h, (0, 0.8, 1, 1), (95, 95, 105))
    for i in range(8):
        _rect(draw, w, h, (i / 8 + 0.02, 0.9, i / 8 + 0.08, 0.91), (235, 235, 235))
    pole = rng.uniform(0.1, 0.9)
    _rect(draw, w, h, (pole, 0.05, pole + 0.012, 0.78), (110, 105, 100))
    for dy in (0.1, 0.13, 0.16):
        draw.line([(0, (dy + 0.05) * h), (pole * w, dy * h), (w, (dy + 0.08) * h)], (50, 50, 55))


def _draw_classroom(img: Image.Image, rng: np.random.Generator) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    wall = hsv_rgb(rng.uniform(0.08, 0.15), 0.15, 0.92)
    _rect(draw, w, h, (0, 0, 1, 0.7), wall)
    _rect(draw, w, h, (0, 0.7, 1, 1), (170, 130, 95))
    board_x = rng.uniform(0.05, 0.35)
    _rect(draw, w, h, (board_x - 0.01, 0.13, board_x + 0.51, 0.52), (120, 90, 60))
    _rect(draw, w, h, (board_x, 0.15, board_x + 0.5, 0.5), (40, 85, 65))
    for i in range(int(rng.integers(2, 5))):
        y = 0.2 + i * 0.07
        length = rng.uniform(0.1, 0.35)
        _rect(draw, w, h, (board_x + 0.04, y, board_x + 0.04 + length, y + 0.008), (225,) * 3)
    for i in range(3):
        x = 0.02 + (board_x + 0.55 + i * 0.16) % 0.98
        _window(draw, (x * w, 0.1 * h, (x + 0.13) * w, 0.55 * h), (160, 205, 245))
    desk = (200, 165, 120)
    for row, (y, size) in enumerate(((0.74, 0.1), (0.82, 0.13), (0.92, 0.17))):
        for i in range(-1, 6):
            x = i * 0.25 + (row % 2) * 0.12
            _rect(draw, w, h, (x, y, x + size * 1.3, y + size * 0.25), desk)
            _rect(draw, w, h, (x + 0.01, y + size * 0.25, x + 0.02, y + size), shade_rgb(desk, 0.5))


def _draw_night(img: Image.Image, rng: np.random.Generator) -> None:
    w, h = img.size
    img.paste(_vertical_gradient(w, h, (10, 14, 40), (45, 50, 95)))
    draw = ImageDraw.Draw(img)
    for _ in range(80):
        x, y, r = rng.uniform(0, w), rng.uniform(0, 0.6 * h), rng.uniform(0.5, 1.5) * w / 1000
        draw.ellipse((x - r, y - r, x + r, y + r), (255, 250, 220))
    mx, my, mr = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.25) * h, 0.045 * w
    draw.ellipse((mx - mr, my - mr, mx + mr, my + mr), (250, 245, 215))
    x = 0.0
    while x < 1.0:
        bw = rng.uniform(0.08, 0.2)
        top = rng.uniform(0.4, 0.7)
        _rect(draw, w, h, (x, top, x + bw, 1.0), (20, 22, 38))
        for row in np.arange(top + 0.03, 0.95, 0.06):
            for col in np.arange(x + 0.015, x + bw - 0.03, 0.04):
                if rng.random() < 0.35:
                    _rect(draw, w, h, (col, row, col + 0.02, row + 0.03), (250, 215, 120))
        x += bw


def _draw_plain(img: Image.Image, rng: np.random.Generator) -> None:
    w, h = img.size
    hue = rng.random()
    img.paste(_vertical_gradient(w, h, hsv_rgb(hue, 0.25, 0.95), hsv_rgb(hue + 0.08, 0.45, 0.8)))
    draw = ImageDraw.Draw(img)
    dot = hsv_rgb(hue, 0.2, 1.0)
    step = w / 24
    for row in range(int(h / step) + 1):
        for col in range(25):
            x, y = (col + 0.5 * (row % 2)) * step, row * step
            r = step * 0.12
            draw.ellipse((x - r, y - r, x + r, y + r), dot)


_PAINTERS: dict[str, Callable[[Image.Image, np.random.Generator], None]] = {
    "room": _draw_room,
    "sky": _draw_sky,
    "street": _draw_street,
    "classroom": _draw_classroom,
    "night": _draw_night,
    "plain": _draw_plain,
}


@functools.lru_cache(maxsize=32)
def background_image(
    background: Background, width: int, height: int, zoom: float = 1.0
) -> Image.Image:
    """The backdrop at the frame size; `zoom` > 1 crops in towards the centre for close-ups.

    Shared between frames through the cache, so callers must copy before drawing on it.
    """
    if zoom != 1.0:
        base = background_image(background, width, height)
        crop_w, crop_h = width / zoom, height / zoom
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
        zoomed = base.resize((width, height), Image.Resampling.BILINEAR, box=box)
        return zoomed.filter(ImageFilter.BoxBlur(max(1, round(width / 640))))
    big = Image.new("RGB", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), (128, 128, 128))
    rng = np.random.default_rng([background.seed, BACKGROUND_KINDS.index(background.kind)])
    _PAINTERS[background.kind](big, rng)
    image = big.reduce(_SUPERSAMPLE)
    return image.filter(ImageFilter.GaussianBlur(width / 900))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font: the same glyphs on every machine, so title cards are reproducible.
    return ImageFont.load_default(size=size)


def render_title_card(width: int, height: int, text: str, seed: int) -> Image.Image:
    """An episode title or sign shot: large outlined text over a coloured backdrop, no one on it."""
    if width <= 0 or height <= 0:
        raise ValueError(f"title card size must be positive, got {width}x{height}")
    rng = np.random.default_rng([seed, 7])
    hue = rng.random()
    top, bottom = hsv_rgb(hue, 0.55, 0.5), hsv_rgb(hue + 0.1, 0.7, 0.2)
    img = _vertical_gradient(width, height, top, bottom)
    draw = ImageDraw.Draw(img)
    stripe = tint_rgb(top, 0.15)
    for i in range(-4, 12):
        x = i * width / 8
        draw.polygon(
            [(x, 0), (x + width / 24, 0), (x - width / 6, height), (x - width / 5, height)],
            fill=stripe,
        )
    lines = textwrap.wrap(text, width=24) or [""]
    size = max(8, min(round(height / (2.2 * len(lines) + 1)), round(width / 16)))
    font = _font(size)
    spacing = round(size * 0.25)
    draw.multiline_text(
        (width / 2, height / 2),
        "\n".join(lines),
        font=font,
        fill=(255, 255, 250),
        anchor="mm",
        align="center",
        spacing=spacing,
        stroke_width=max(1, size // 12),
        stroke_fill=mix_rgb(bottom, (0, 0, 0), 0.5),
    )
    return img
