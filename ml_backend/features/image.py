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

Detection costs about 0.2-0.4 s per 480p frame and animeface's C code holds the GIL, so large
batches are spread over worker processes (both cores); small ones run inline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ml_backend.features.anime_faces import AnimeFace, detect_faces
from ml_backend.features.embedder import check_batch, normalise_rows
from ml_backend.features.store import ModelInfo

logger = logging.getLogger(__name__)

DESCRIPTOR_VERSION = "1"
"""Bump when the descriptor changes: old vectors must not be compared with new ones."""

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
    """Frames are downscaled to this height for face detection (faces of 40+ px survive)."""
    min_likelihood: float = 0.5
    weights: tuple[float, float, float, float, float] = (1.0, 0.7, 0.6, 1.0, 0.15)
    """Per region, in the order of `REGIONS`."""


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


def describe_frame(frame: np.ndarray, options: AnimeColourOptions) -> np.ndarray:
    """(200,) float32, not yet normalised: the weighted region histograms of one frame."""
    frame = np.asarray(frame)
    height, width = frame.shape[:2]
    face = main_face(frame, options)
    hsv = np.asarray(Image.fromarray(frame).convert("HSV"))
    if face is not None:
        regions = _face_regions(face, width, height)
    else:
        regions = _centre_regions(width, height)
    blocks = []
    for name, weight in zip(REGIONS, options.weights, strict=True):
        boxes = regions.get(name, [])
        if name == "frame":
            boxes = [(0, 0, width, height)]
        blocks.append(weight * _hellinger(_histogram(hsv, boxes)))
    return np.concatenate(blocks).astype(np.float32)


def main_face(frame: np.ndarray, options: AnimeColourOptions) -> AnimeFace | None:
    """The largest confident face, in the frame's own pixel coordinates.

    The largest is the character nearest the camera, the one a shot is usually framed on.
    """
    height = frame.shape[0]
    scale = min(1.0, options.detect_height / height)
    small = frame
    if scale < 1.0:
        size = (max(1, round(frame.shape[1] * scale)), max(1, round(height * scale)))
        small = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
    faces = [face for face in detect_faces(small) if face.likelihood >= options.min_likelihood]
    if not faces:
        return None
    best = max(faces, key=lambda face: face.box[2] * face.box[3])
    if scale == 1.0:
        return best

    def up(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return tuple(round(value / scale) for value in box)

    return AnimeFace(
        likelihood=best.likelihood,
        box=up(best.box),
        skin=best.skin,
        hair=best.hair,
        left_eye=best.left_eye,
        right_eye=best.right_eye,
        left_eye_box=up(best.left_eye_box),
        right_eye_box=up(best.right_eye_box),
        mouth_box=up(best.mouth_box),
    )


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


def _histogram(hsv: np.ndarray, boxes: Sequence[Region]) -> np.ndarray:
    """(BINS,) pixel counts over the union of ``boxes`` (overlaps counted once per box)."""
    height, width = hsv.shape[:2]
    counts = np.zeros(BINS, dtype=np.float64)
    for left, top, right, bottom in boxes:
        x0, x1 = max(0, int(left)), min(width, int(np.ceil(right)))
        y0, y1 = max(0, int(top)), min(height, int(np.ceil(bottom)))
        if x1 <= x0 or y1 <= y0:
            continue
        pixels = hsv[y0:y1, x0:x1].reshape(-1, 3).astype(np.int32)
        hue, saturation, value = pixels[:, 0], pixels[:, 1], pixels[:, 2]
        chromatic = (saturation >= MIN_SATURATION * 255) & (value >= MIN_VALUE * 255)
        hue_bin = hue * HUE_BINS // 256
        saturation_bin = np.minimum(
            SATURATION_BINS - 1,
            (saturation - MIN_SATURATION * 255)
            * SATURATION_BINS
            // max(1.0, 255 * (1 - MIN_SATURATION)),
        ).astype(np.int32)
        colour_index = hue_bin * SATURATION_BINS + saturation_bin
        grey_index = HUE_BINS * SATURATION_BINS + np.minimum(
            GREY_BINS - 1, value * GREY_BINS // 256
        )
        index = np.where(chromatic, colour_index, grey_index)
        counts += np.bincount(index, minlength=BINS)[:BINS]
    return counts


def _hellinger(counts: np.ndarray) -> np.ndarray:
    """Square roots of the normalised histogram: a unit vector (zeros for an empty region)."""
    total = counts.sum()
    if total <= 0:
        return np.zeros_like(counts)
    return np.sqrt(counts / total)
