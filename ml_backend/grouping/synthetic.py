"""Synthetic lines with known speakers, for tests and speed measurements (no media needed).

Each speaker has a random unit direction per modality; a line's vector is its speaker's
direction plus Gaussian noise, normalised. A shared component makes every pair somewhat similar,
as real speaker embeddings are (resemblyzer's different-speaker pairs sit around 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml_backend.grouping.lines import EpisodeLines

VOICE_MODEL = "synthetic-voice 1"
IMAGE_MODEL = "synthetic-image 1"


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def synthetic_lines(
    n: int,
    *,
    speakers: int = 8,
    voice_dim: int = 256,
    image_dim: int = 200,
    noise: float = 0.6,
    shared: float = 1.0,
    episodes: int = 1,
    seed: int = 0,
    weights: Sequence[float] | None = None,
    voice_model: str = VOICE_MODEL,
    image_model: str | None = IMAGE_MODEL,
) -> tuple[EpisodeLines, np.ndarray]:
    """(lines, truth) with ``truth`` the (n,) speaker name of every line ("S0", "S1", ...).

    noise : per-dimension noise relative to the speaker direction (scaled by sqrt(dim)), so
        the same value means the same difficulty at any dimension.
    weights : how often each speaker talks (default: a long tail, like a cast).
    """
    rng = np.random.default_rng(seed)
    if weights is None:
        weights = 1.0 / np.arange(1, speakers + 1)
    p = np.asarray(weights, dtype=float)
    p = p / p.sum()
    truth_codes = rng.choice(speakers, size=n, p=p)
    truth = np.array([f"S{c}" for c in truth_codes])

    def modality(dim: int) -> np.ndarray:
        common = rng.normal(size=dim)
        centres = _unit(rng.normal(size=(speakers, dim)) + shared * _unit(common[None])[0])
        rows = centres[truth_codes] + noise * rng.normal(size=(n, dim)) / np.sqrt(dim) * 1.0
        return _unit(rows)

    voice = modality(voice_dim)
    image = modality(image_dim) if image_model is not None else None
    per_episode = np.array_split(np.arange(n), episodes)
    episode_of = np.zeros(n, dtype=np.int64)
    index_of = np.zeros(n, dtype=np.int64)
    for e, rows in enumerate(per_episode):
        episode_of[rows] = e
        index_of[rows] = np.arange(1, len(rows) + 1)
    starts = index_of * 3.0
    quality = {
        "duration": rng.uniform(0.8, 5.0, n).astype(np.float32),
        "speech_ratio": rng.uniform(0.5, 0.9, n).astype(np.float32),
        "snr_db": rng.uniform(25, 90, n).astype(np.float32),
        "rms_dbfs": rng.uniform(-32, -22, n).astype(np.float32),
    }
    lines = EpisodeLines(
        line_ids=[f"ep{episode_of[i]}:{index_of[i]}" for i in range(n)],
        episodes=[f"ep{episode_of[i]}" for i in range(n)],
        starts=starts.astype(np.float64),
        ends=(starts + quality["duration"]).astype(np.float64),
        texts=[""] * n,
        voice=voice,
        image=image,
        quality=quality,
        voice_model=voice_model,
        image_model=image_model,
    )
    return lines, truth
