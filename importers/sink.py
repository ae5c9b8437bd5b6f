"""What `import_episode` hands on, in memory, as it cuts an episode: each clip and each frame.

The feature pass needs exactly the clips and frames the import writes. Reading them back from
disk, hashing them again and decoding the JPEGs just encoded costs time, and waiting for the
whole media pass to end before embedding leaves a core idle while the frame walk runs. So the
importer offers every clip and frame to a sink as soon as its file is written; whoever runs
the import (the command layer) connects the sink to the feature extractor. The importer knows
nothing of features: this protocol is the whole contract, in plain arrays and bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np


class MediaSink(Protocol):
    """Receives an import's media as they are written.

    Call order: `begin` once, after the subtitles are parsed and before any media work; then
    `clip` for every line (from the audio thread, in line order) while `frame` is called for
    every frame of every line (from the frame walks' JPEG threads, several at once, in no
    particular order). An exception raised by a method stops the import and is raised by
    `import_episode`. Nothing tells the sink that the import failed; its owner does that.
    """

    def begin(self, episode_dir: Path, line_ids: Mapping[int, str], frames_per_line: int) -> None:
        """line_ids : line index (1-based, as in the tasks) -> line id, for every line."""

    def clip(self, index: int, samples: np.ndarray, wav: bytes) -> None:
        """Line ``index``'s clip. samples : (num_samples,) float32 at the clip sample rate,
        exactly as a reader of the written 16-bit WAV gets them; wav : the file's bytes."""

    def frame(self, index: int, position: int, rgb: np.ndarray, jpeg: bytes) -> None:
        """Frame ``position`` (0-based, in time order) of line ``index``. rgb : (h, w, 3) uint8,
        the frame that was encoded (before JPEG's loss); jpeg : the file's bytes."""
