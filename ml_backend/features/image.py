"""The offline default image embedder: who is on screen, described by their colours.

An anime character is told apart mostly by colour: hair, eyes, skin and outfit stay the same
from shot to shot while the pose, the framing and the background change. So the descriptor
finds the character's face with animeface's detector (weights ship in its wheel), and
describes the regions a person would look at, each as a hue/saturation histogram:

    hair    the band above and beside the face
    face    the face itself (skin, and hair falling over it)
    eyes    the two eye boxes the detector reports
    outfit  the figure below the chin
    frame   the whole frame, coarsely, weighted low: it mostly encodes the scene, not the speaker

A frame where no face is found (a back view, a wide shot, nobody on screen) is described from
a centre strip cut in the same proportions, so its vector is comparable, only vaguer.

Histograms are square-rooted (the Hellinger map), so the dot product of two unit vectors is a
weighted Bhattacharyya similarity of their colour distributions.

Everything is measured on the frame downscaled to `AnimeColourOptions.detect_height` rows: a
region's colour distribution barely changes at that size, and full-resolution histograms of a
720p frame cost more than the detection. Detection is the expensive step and animeface's C
code holds the GIL, so large batches are spread over worker processes (both cores); small ones
run inline (bench/README.md, "Measurements behind code choices").
`AnimeColourEmbedder.embed_encoded` takes the image files' bytes instead of decoded frames:
the workers decode them, so the caller's process neither decodes nor ships full-size frames
through a pipe.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, UnidentifiedImageError

from ml_backend.features.anime_faces import AnimeFace, detect_faces
from ml_backend.features.base import check_batch, normalise_rows
from ml_backend.features.store import ModelInfo

logger = logging.getLogger(__name__)

DESCRIPTOR_VERSION = "2"
"""Bump when the descriptor changes: old vectors must not be compared with new ones.
2: histograms on the detection-size frame (1: on the full frame)."""

HUE_BINS = 18
SATURATION_BINS = 2
GREY_BINS = 4
"""Chromatic pixels go to hue x saturation bins; pixels too grey or dark for a hue to mean
anything go to a few lightness bins instead (black hair, white shirts)."""
MIN_SATURATION = 0.2
MIN_VALUE = 0.18
BINS = HUE_BINS * SATURATION_BINS + GREY_BINS
REGIONS = ("hair", "face", "eyes", "outfit", "frame")
ANIME_COLOUR_DIM = BINS * len(REGIONS)


@dataclass(frozen=True)
class AnimeColourOptions:
    """What the descriptor looks at and how much each region counts."""

    detect_height: int = 360
    """Frames are downscaled to this height for detection and histograms (faces of 40+ px
    survive). A lower height is cheaper but loses small faces of the drawn test shots, so
    wide shots would suffer (bench/README.md, "Measurements behind code choices")."""
    min_likelihood: float = 0.5
    weights: tuple[float, float, float, float, float] = (1.0, 0.7, 0.6, 1.0, 0.15)
    """Per region, in the order of `REGIONS`."""


class UnreadableImageError(ValueError):
    """An encoded image given to `AnimeColourEmbedder.embed_encoded` cannot be decoded."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"image item {index}: not a readable image ({reason})")
        self.index = index
        self.reason = reason


class AnimeColourEmbedder:
    """Colour descriptors of the main anime character in each frame (200-d).

    workers : processes for batches of at least ``min_parallel`` frames (1 = inline).
    """

    def __init__(
        self,
        *,
        options: AnimeColourOptions | None = None,
        workers: int = 2,
        min_parallel: int = 8,
    ) -> None:
        self.options = options or AnimeColourOptions()
        self.workers = workers
        self.min_parallel = min_parallel
        self._pool: ProcessPoolExecutor | None = None
        self.info = ModelInfo(
            name="anime-colour",
            version=f"{DESCRIPTOR_VERSION}+{_options_id(self.options)}",
            dim=ANIME_COLOUR_DIM,
        )

    def embed(
        self, batch: Sequence[np.ndarray], *, hook: Callable[..., None] | None = None
    ) -> np.ndarray:
        """(len(batch), 200) float32 unit rows; each item is an (h, w, 3) uint8 RGB frame."""
        check_batch(batch, kind="image")
        rows = np.zeros((len(batch), ANIME_COLOUR_DIM), dtype=np.float32)
        options = asdict(self.options)
        if self.workers > 1 and len(batch) >= self.min_parallel:
            results = self._worker_pool().map(_describe_job, ((f, options) for f in batch))
        else:
            results = (describe_frame(frame, self.options) for frame in batch)
        for done, row in enumerate(results):
            rows[done] = row
            if hook is not None:
                hook("image", completed=done + 1, total=len(batch))
        return normalise_rows(rows)

    def embed_encoded(
        self, images: Sequence[bytes], *, hook: Callable[..., None] | None = None
    ) -> np.ndarray:
        """(len(images), 200) float32 unit rows from encoded image files (JPEG, PNG...).

        Raises `UnreadableImageError` naming the first item that does not decode.
        """
        rows = np.zeros((len(images), ANIME_COLOUR_DIM), dtype=np.float32)
        options = asdict(self.options)
        if self.workers > 1 and len(images) >= self.min_parallel:
            jobs = ((data, options) for data in images)
            results = self._worker_pool().map(_describe_encoded_job, jobs)
        else:
            results = (_describe_encoded(data, self.options) for data in images)
        for done, row in enumerate(results):
            if isinstance(row, str):
                raise UnreadableImageError(done, row)
            rows[done] = row
            if hook is not None:
                hook("image", completed=done + 1, total=len(images))
        return normalise_rows(rows)

    def close(self) -> None:
        """Stop the worker processes (they also stop when the embedder is collected)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _worker_pool(self) -> ProcessPoolExecutor:
        """Kept across calls: callers embed 32 frames at a time, and a spawn costs a second."""
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork is unsafe beside torch threads
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
            weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
        return self._pool


def _options_id(options: AnimeColourOptions) -> str:
    """Short id of the options: vectors made with other weights or sizes must not be mixed."""
    text = json.dumps(asdict(options), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _describe_job(job: tuple[np.ndarray, dict]) -> np.ndarray:
    frame, options = job
    options["weights"] = tuple(options["weights"])
    return describe_frame(frame, AnimeColourOptions(**options))


def _describe_encoded_job(job: tuple[bytes, dict]) -> np.ndarray | str:
    data, options = job
    options["weights"] = tuple(options["weights"])
    return _describe_encoded(data, AnimeColourOptions(**options))


def _describe_encoded(data: bytes, options: AnimeColourOptions) -> np.ndarray | str:
    """The row of one encoded image, or why it does not decode (a message pickles safely)."""
    try:
        frame = decode_image(data)
    except (UnidentifiedImageError, OSError) as error:
        return str(error) or type(error).__name__
    return describe_frame(frame, options)


def decode_image(data: bytes) -> np.ndarray:
    """(h, w, 3) uint8 RGB from an encoded image, at full size.

    Not JPEG's reduced-scale decoding (``Image.draft``): it saves little CPU and its pixels,
    unlike the resize's, cost image accuracy (bench/README.md, "Measurements behind code choices").
    """
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.uint8)


def describe_frame(frame: np.ndarray, options: AnimeColourOptions) -> np.ndarray:
    """(200,) float32, not yet normalised: the weighted region histograms of one frame.

    Everything is measured on the frame downscaled for detection: a region's colour
    distribution barely changes at half the resolution, and the full-resolution histograms
    cost more than the detection itself.
    """
    small = downscale(np.asarray(frame), options.detect_height)
    height, width = small.shape[:2]
    face = _largest_face(small, options)
    bins = colour_bins(small)
    if face is not None:
        regions = _face_regions(face, width, height)
    else:
        regions = _centre_regions(width, height)
    blocks = []
    for name, weight in zip(REGIONS, options.weights, strict=True):
        boxes = regions.get(name, [])
        if name == "frame":
            boxes = [(0, 0, width, height)]
        blocks.append(weight * _hellinger(_histogram(bins, boxes)))
    return np.concatenate(blocks).astype(np.float32)


def downscale(frame: np.ndarray, height: int) -> np.ndarray:
    """``frame`` resized to ``height`` rows (aspect kept), or itself when not taller."""
    scale = height / frame.shape[0]
    if scale >= 1.0:
        return frame
    size = (max(1, round(frame.shape[1] * scale)), max(1, height))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


def main_face(frame: np.ndarray, options: AnimeColourOptions) -> AnimeFace | None:
    """The largest confident face, in the frame's own pixel coordinates.

    The largest is the character nearest the camera, the one a shot is usually framed on.
    """
    small = downscale(np.asarray(frame), options.detect_height)
    best = _largest_face(small, options)
    scale = small.shape[0] / frame.shape[0]
    if best is None or scale == 1.0:
        return best

    def up(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return tuple(round(value / scale) for value in box)

    return replace(
        best,
        box=up(best.box),
        left_eye_box=up(best.left_eye_box),
        right_eye_box=up(best.right_eye_box),
        mouth_box=up(best.mouth_box),
    )


def _largest_face(frame: np.ndarray, options: AnimeColourOptions) -> AnimeFace | None:
    faces = [face for face in detect_faces(frame) if face.likelihood >= options.min_likelihood]
    return max(faces, key=lambda face: face.box[2] * face.box[3]) if faces else None


Region = tuple[float, float, float, float]
"""(left, top, right, bottom) in pixels; clipped to the frame when used."""


def _face_regions(face: AnimeFace, width: int, height: int) -> dict[str, list[Region]]:
    x, y, w, h = face.box
    return {
        "hair": [(x - 0.35 * w, y - 0.5 * h, x + 1.35 * w, y + 0.2 * h)],
        "face": [(x + 0.15 * w, y + 0.3 * h, x + 0.85 * w, y + 1.0 * h)],
        "eyes": [_xywh(face.left_eye_box), _xywh(face.right_eye_box)],
        "outfit": [(x - 0.6 * w, y + 1.3 * h, x + 1.6 * w, y + 2.8 * h)],
    }


def _centre_regions(width: int, height: int) -> dict[str, list[Region]]:
    left, right = 0.3 * width, 0.7 * width
    return {
        "hair": [(left, 0.05 * height, right, 0.3 * height)],
        "face": [(0.4 * width, 0.25 * height, 0.6 * width, 0.45 * height)],
        "eyes": [(0.4 * width, 0.3 * height, 0.6 * width, 0.38 * height)],
        "outfit": [(left, 0.5 * height, right, 0.95 * height)],
    }


def _xywh(box: tuple[int, int, int, int]) -> Region:
    x, y, w, h = box
    return (x, y, x + w, y + h)


def _bin_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel lookup tables for `colour_bins`: hue and saturation bins of chromatic pixels,
    lightness bins of grey ones, and which saturations and values count as chromatic."""
    level = np.arange(256)
    hue = (level * HUE_BINS // 256 * SATURATION_BINS).astype(np.uint8)
    saturation = np.clip(
        (level - MIN_SATURATION * 255) * SATURATION_BINS // max(1.0, 255 * (1 - MIN_SATURATION)),
        0,
        SATURATION_BINS - 1,
    ).astype(np.uint8)
    grey = HUE_BINS * SATURATION_BINS + np.minimum(GREY_BINS - 1, level * GREY_BINS // 256)
    chromatic_s = level >= MIN_SATURATION * 255
    chromatic_v = level >= MIN_VALUE * 255
    return hue, saturation, grey.astype(np.uint8), chromatic_s, chromatic_v


_HUE, _SATURATION, _GREY, _CHROMATIC_S, _CHROMATIC_V = _bin_tables()


def colour_bins(rgb: np.ndarray) -> np.ndarray:
    """(h, w) uint8: each pixel's histogram bin, computed once so regions just count them.

    Chromatic pixels go to hue x saturation bins; pixels too grey or dark for a hue to mean
    anything go to `GREY_BINS` lightness bins.
    """
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV"))
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    chromatic = _CHROMATIC_S[saturation] & _CHROMATIC_V[value]
    return np.where(chromatic, _HUE[hue] + _SATURATION[saturation], _GREY[value])


def _histogram(bins: np.ndarray, boxes: Sequence[Region]) -> np.ndarray:
    """(BINS,) pixel counts over the union of ``boxes`` (overlaps counted once per box)."""
    height, width = bins.shape
    counts = np.zeros(BINS, dtype=np.float64)
    for left, top, right, bottom in boxes:
        x0, x1 = max(0, int(left)), min(width, int(np.ceil(right)))
        y0, y1 = max(0, int(top)), min(height, int(np.ceil(bottom)))
        if x1 <= x0 or y1 <= y0:
            continue
        counts += np.bincount(bins[y0:y1, x0:x1].ravel(), minlength=BINS)[:BINS]
    return counts


def _hellinger(counts: np.ndarray) -> np.ndarray:
    """Square roots of the normalised histogram: a unit vector (zeros for an empty region)."""
    total = counts.sum()
    if total <= 0:
        return np.zeros_like(counts)
    return np.sqrt(counts / total)
