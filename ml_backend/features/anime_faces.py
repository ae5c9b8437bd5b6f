"""animeface's anime face detector, called so that it works with every Pillow.

``animeface`` 2.0.3 ships a C extension (and the detector's trained weights) that reads the
pixels of the Pillow image it is given through Pillow's *private* C structs, as laid out in
Pillow 4.2.1, which it was built against. Pillow 12 changed that layout, and since then
``animeface.detect`` silently finds no face at all. Pinning Pillow below 12 is not an option
(label-studio-sdk 2 needs Pillow >= 12.3), so this module hands the extension a stand-in for the
Pillow object instead: a ctypes structure laid out as Pillow 4.2.1's image memory, pointing at
a numpy buffer we own.

Why that works: the extension takes its argument with ``PyArg_ParseTuple("O")`` and reads the
pointer that follows the object header, which in Pillow's ``ImagingObject`` is the image
pointer, and in a ctypes object is ``b_ptr``, the address of its buffer. On drawn test frames
the results equal ``animeface.detect`` under Pillow 11.3 field for field (boxes, likelihoods,
colours); ``tests/test_embedders.py`` checks the boxes against the drawings' true face boxes.
"""

from __future__ import annotations

import ctypes
import sysconfig
from dataclasses import dataclass

import numpy as np

from ml_backend.features.base import ModelUnavailableError

Box = tuple[int, int, int, int]
"""(x, y, width, height) in pixels."""
Colour = tuple[int, int, int]
"""(r, g, b)."""


@dataclass(frozen=True)
class AnimeFace:
    """One detected face, with the colours the detector samples from its parts."""

    likelihood: float
    box: Box
    skin: Colour
    hair: Colour
    left_eye: Colour
    right_eye: Colour
    left_eye_box: Box
    right_eye_box: Box
    mouth_box: Box


class _PillowImage421(ctypes.Structure):
    """``struct ImagingMemoryInstance`` of Pillow 4.2.1 (libImaging/Imaging.h), field for field."""

    _fields_ = (
        ("mode", ctypes.c_char * 7),
        ("type", ctypes.c_int),  # IMAGING_TYPE_UINT8 = 0
        ("depth", ctypes.c_int),
        ("bands", ctypes.c_int),
        ("xsize", ctypes.c_int),
        ("ysize", ctypes.c_int),
        ("palette", ctypes.c_void_p),
        ("image8", ctypes.c_void_p),
        ("image32", ctypes.c_void_p),
        ("image", ctypes.c_void_p),
        ("block", ctypes.c_void_p),
        ("pixelsize", ctypes.c_int),
        ("linesize", ctypes.c_int),
        ("destroy", ctypes.c_void_p),
    )


_native = None


def _detector() -> object:
    global _native
    if _native is None:
        if sysconfig.get_config_var("Py_GIL_DISABLED"):
            # The stand-in relies on the classic object header; free-threaded builds differ.
            raise ModelUnavailableError(
                "anime-colour needs a standard (GIL) CPython build for animeface's detector"
            )
        try:
            from animeface import _nvxs
        except ImportError as error:
            raise ModelUnavailableError(
                f"anime-colour needs the animeface package ({error}): pip install animeface==2.0.3"
            ) from None
        _native = _nvxs
    return _native


def detect_faces(rgb: np.ndarray) -> list[AnimeFace]:
    """Anime faces in an (h, w, 3) uint8 RGB frame, most likely first."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (h, w, 3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
    native = _detector()
    height, width = rgb.shape[:2]
    # Pillow keeps RGB as 4 bytes a pixel (RGBX), one pointer per row.
    pixels = np.zeros((height, width, 4), dtype=np.uint8)
    pixels[..., :3] = rgb
    row_stride = width * 4
    rows = (ctypes.c_void_p * height)(*(pixels.ctypes.data + y * row_stride for y in range(height)))
    image = _PillowImage421(
        mode=b"RGB",
        type=0,
        depth=8,
        bands=3,
        xsize=width,
        ysize=height,
        image32=ctypes.addressof(rows),
        image=ctypes.addressof(rows),
        block=pixels.ctypes.data,
        pixelsize=4,
        linesize=row_stride,
    )
    found = native.detect(image)
    faces = [
        AnimeFace(
            likelihood=float(result["likelihood"]),
            box=tuple(result["face_box"]),
            skin=tuple(result["skin_color"]),
            hair=tuple(result["hair_color"]),
            left_eye=tuple(result["left_eye_color"]),
            right_eye=tuple(result["right_eye_color"]),
            left_eye_box=tuple(result["left_eye_box"]),
            right_eye_box=tuple(result["right_eye_box"]),
            mouth_box=tuple(result["mouth_box"]),
        )
        for result in found
    ]
    return sorted(faces, key=lambda face: -face.likelihood)
