"""Episodes for the backend tests whose right answer is not in doubt.

`write_episode` writes what ``speaker-grouping import`` plus ``extract_features`` would leave in
an episode folder: the importer's ``tasks.json`` (built by `importers.tasks.build_task`), a clip
file per line, and a ``features.npz`` written with the real `FeatureStore`. Only the vectors are
made up: each speaker's lines lie close around one direction and far from the other speakers',
with clean-speech quality stats, so the real grouper with its shipped priors has one right
grouping to find. (The grouper logs that these vectors are not from the models its priors were
trained for; its neighbourhood features are relative to the episode, so it still finds them.)
`speech_wav` synthesises real speech for the tests that make the backend compute features itself.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from importers.subtitles import SubtitleLine
from importers.tasks import LineMedia, MediaUrls, build_task
from ml_backend.features.store import FeatureStore, ModelInfo

VOICE_MODEL = ModelInfo("test-voice", "separated-1", 64)
IMAGE_MODEL = ModelInfo("test-image", "separated-1", 32)
QUALITY_MODEL = ModelInfo("test-quality", "clean-1", 4)


def speakers_of(lines: int, cast: Sequence[str]) -> list[str]:
    """The speaker of each line: the cast in turn (line 1 is cast[0], line 2 cast[1], ...)."""
    return [cast[(index - 1) % len(cast)] for index in range(1, lines + 1)]


def _directions(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """(count, dim) unit vectors, pairwise orthogonal: speakers that cannot be confused."""
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return basis[:count].astype(np.float64)


def _around(centre: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    vector = centre + rng.normal(0.0, spread / np.sqrt(len(centre)), len(centre))
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def write_episode(
    document_root: Path,
    episode: str,
    speakers: Sequence[str],
    *,
    seed: int = 0,
    spread: float = 0.35,
) -> tuple[Path, list[dict]]:
    """An imported episode folder ``<document_root>/<episode>`` with one line per speaker given.

    Voice and image vectors of one speaker have cosine similarity about ``1 - spread²/2`` with
    each other and about 0 with anyone else's. Returns the folder and its tasks (as imported).
    """
    rng = np.random.default_rng(seed)
    folder = document_root / episode
    cast = sorted(set(speakers))
    voice_centres = _directions(len(cast), VOICE_MODEL.dim, rng)
    image_centres = _directions(len(cast), IMAGE_MODEL.dim, rng)
    urls = MediaUrls(document_root=document_root)
    tasks, voice, image = [], [], []
    quality: dict[str, list[float]] = {
        "duration": [],
        "speech_ratio": [],
        "snr_db": [],
        "rms_dbfs": [],
    }
    for index, speaker in enumerate(speakers, start=1):
        start = 2.5 * index
        duration = float(rng.uniform(1.6, 3.2))
        media = LineMedia(
            Path("audio") / f"{index:04d}.wav", (Path("frames") / f"{index:04d}.jpg",)
        )
        for relative in (media.audio, *media.frames):
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / media.audio).write_bytes(silence_wav(0.1))
        Image.new("RGB", (64, 36), (80 * cast.index(speaker), 90, 160)).save(
            folder / media.frames[0]
        )
        line = SubtitleLine(index, start, start + duration, f"line {index}", None, None, index)
        tasks.append(build_task(episode, line, media, out_dir=folder, urls=urls))
        who = cast.index(speaker)
        voice.append(_around(voice_centres[who], spread, rng))
        image.append(_around(image_centres[who], spread, rng))
        quality["duration"].append(duration)
        quality["speech_ratio"].append(float(rng.uniform(0.75, 0.95)))
        quality["snr_db"].append(float(rng.uniform(32.0, 40.0)))
        quality["rms_dbfs"].append(float(rng.uniform(-24.0, -18.0)))
    (folder / "tasks.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    store = FeatureStore()
    ids = [task["data"]["line_id"] for task in tasks]
    store.add(
        ids,
        voice=np.stack(voice),
        voice_model=VOICE_MODEL,
        image=np.stack(image),
        image_model=IMAGE_MODEL,
        quality=quality,
        quality_model=QUALITY_MODEL,
    )
    store.save(folder / "features.npz")
    return folder, tasks


def silence_wav(seconds: float, sample_rate: int = 16000) -> bytes:
    """A valid 16-bit mono WAV of silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(b"\x00\x00" * int(seconds * sample_rate))
    return buffer.getvalue()


def speech_wav(voice: str, text: str) -> bytes:
    """Real speech, as the importer cuts it (16 kHz mono 16-bit WAV), for the embedders to hear.

    voice : ``engine:name`` of a `bench.voices` voice, e.g. ``flite:slt``; the synthesis is
    cached on disk, so a second session pays nothing.
    """
    from bench.voices import Voice, synthesize

    engine, name = voice.split(":", 1)
    samples = synthesize(Voice(engine, name), text, sample_rate=16000)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm)
    return buffer.getvalue()
