"""speechbrain speaker encoders (ECAPA-TDNN and any checkpoint in speechbrain's format).

Loaded with ``EncoderClassifier.from_hparams``, exactly as speechbrain's model cards do, from a
hub id (default ``speechbrain/spkrec-ecapa-voxceleb``) or from a local folder in the same
layout: ``hyperparams.yaml`` + ``embedding_model.ckpt`` (+ ``mean_var_norm_emb.ckpt``,
``classifier.ckpt``, ``label_encoder.txt`` where the yaml's pretrainer lists them). That folder
can be a copy of the hub repo or any speechbrain-trained speaker model (say an ECAPA fine-tuned
on anime voices).

A copied hub folder still says ``pretrained_path: speechbrain/spkrec-ecapa-voxceleb`` in its
yaml, and speechbrain resolves every checkpoint against that, going to the network even though
the files lie beside the yaml. So a local folder is loaded with ``pretrained_path`` overridden
to the folder itself.

speechbrain needs torchaudio, which does not load beside the project's CPU torch; it lives in
the optional hub-models environment, and is imported only when this embedder is chosen.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml_backend.features.base import ModelUnavailableError, check_batch, normalise_rows
from ml_backend.features.hub import (
    cached_hub_file,
    file_fingerprint,
    hub_cache_dir,
    hub_offline,
    looks_like_hub_id,
    one_line,
    require_modules,
)
from ml_backend.features.store import ModelInfo

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "speechbrain/spkrec-ecapa-voxceleb"
SAMPLE_RATE = 16000
HPARAMS = "hyperparams.yaml"
REQUIRED_FILES = (HPARAMS, "embedding_model.ckpt")
BUCKET_S = 0.5
"""Clips are zero-padded up to the next multiple of this many seconds and batched with clips
of the same padded length. The padding depends only on the clip's own length, so a clip gets
the same vector whatever else is in its batch, while batches still share one network call."""
MAX_BATCH_SAMPLES = 64 * SAMPLE_RATE
"""Audio per network call (64 s); bounds memory whatever the clip lengths."""

_load_lock = threading.Lock()
_models: dict[str, object] = {}


class SpeechBrainEmbedder:
    """Speaker embeddings (192-d for ECAPA) from a speechbrain ``EncoderClassifier``.

    source : a hub id or a local folder; default ``speechbrain/spkrec-ecapa-voxceleb``.
    num_threads : torch intra-op threads.
    """

    def __init__(
        self, source: str | Path | None = None, *, num_threads: int = 2, device: str = "cpu"
    ) -> None:
        self.source = str(source or DEFAULT_SOURCE)
        self.num_threads = num_threads
        self.device = device
        self.local_dir = _check_source(self.source)
        require_modules("ecapa", ("torch", "torchaudio", "speechbrain"), "speechbrain + torchaudio")
        self._model = _load(self.source, self.local_dir, device)
        dim = int(self._probe_dim())
        self.info = ModelInfo(
            name=f"speechbrain:{self._label()}",
            version=f"{_version()}+{_weights_id(self.source, self.local_dir)}",
            dim=dim,
        )

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """(len(batch), dim) float32 unit rows; each item is (num_samples,) float32 at 16 kHz."""
        import torch

        check_batch(batch, kind="voice")
        out = np.zeros((len(batch), self.info.dim), dtype=np.float32)
        if not batch:
            return out
        torch.set_num_threads(self.num_threads)
        bucket = int(BUCKET_S * SAMPLE_RATE)
        padded_length = [-(-len(clip) // bucket) * bucket for clip in batch]
        for length in sorted(set(padded_length)):
            members = [i for i, padded in enumerate(padded_length) if padded == length]
            per_call = max(1, MAX_BATCH_SAMPLES // length)
            for start in range(0, len(members), per_call):
                chunk = members[start : start + per_call]
                wavs = np.zeros((len(chunk), length), dtype=np.float32)
                for row, i in enumerate(chunk):
                    wavs[row, : len(batch[i])] = batch[i]
                lengths = torch.tensor([len(batch[i]) / length for i in chunk])
                with torch.inference_mode():
                    embedded = self._model.encode_batch(torch.from_numpy(wavs), lengths)
                out[chunk] = embedded.reshape(len(chunk), -1).cpu().numpy()
        return normalise_rows(out)

    def _probe_dim(self) -> int:
        import torch

        with torch.inference_mode():
            probe = self._model.encode_batch(torch.zeros(1, SAMPLE_RATE))
        return probe.reshape(1, -1).shape[1]

    def _label(self) -> str:
        return self.local_dir.name if self.local_dir is not None else self.source


def _check_source(source: str) -> Path | None:
    """The local folder to load from (None for a hub id); one-line errors for what cannot load."""
    path = Path(source).expanduser()
    if path.is_dir():
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            raise ModelUnavailableError(
                f"ecapa: {path} is not a speechbrain model folder (no {', '.join(missing)}); "
                "it needs hyperparams.yaml + embedding_model.ckpt as on the hub"
            )
        return path.resolve()
    if not looks_like_hub_id(source):
        raise ModelUnavailableError(
            f"ecapa: {source} is neither a folder nor a hub id (org/name); pass ecapa:<folder> "
            "with hyperparams.yaml + embedding_model.ckpt"
        )
    if hub_offline() and cached_hub_file(source, HPARAMS) is None:
        raise ModelUnavailableError(
            f"ecapa: {source} is not in the Hugging Face cache and HF_HUB_OFFLINE=1: download "
            f"it once with `hf download {source}` (network needed), "
            "or pass ecapa:/path/to/folder (hyperparams.yaml + embedding_model.ckpt)"
        )
    return None


def _load(source: str, local_dir: Path | None, device: str) -> object:
    """One ``EncoderClassifier`` per source and device, per process."""
    key = f"{local_dir or source}@{device}"
    with _load_lock:
        if key not in _models:
            _models[key] = _from_hparams(source, local_dir, device)
        return _models[key]


def _from_hparams(source: str, local_dir: Path | None, device: str) -> object:
    try:
        from speechbrain.inference.speaker import EncoderClassifier
        from speechbrain.utils.fetching import FetchConfig
    except Exception as error:  # torchaudio that does not match torch fails here, not at find
        raise ModelUnavailableError(
            f"ecapa needs speechbrain + torchaudio ({one_line(error)}): "
            "run `make hub-models` (see README)"
        ) from None
    overrides = {}
    if local_dir is not None and _declares_pretrained_path(local_dir / HPARAMS):
        overrides["pretrained_path"] = str(local_dir)
    logger.info("loading speechbrain model %s", local_dir or source)
    try:
        model = EncoderClassifier.from_hparams(
            source=str(local_dir or source),
            savedir=None,  # files are used where they lie: the folder or the hub cache
            overrides=overrides,
            # The cache we checked, resolved now: huggingface_hub reads its env at import.
            fetch_config=FetchConfig(
                huggingface_cache_dir=str(hub_cache_dir()), allow_network=not hub_offline()
            ),
            run_opts={"device": device},
        )
    except Exception as error:
        raise ModelUnavailableError(
            f"ecapa: cannot load {local_dir or source} ({one_line(error)})"
        ) from None
    model.eval()
    return model


def _declares_pretrained_path(hparams: Path) -> bool:
    text = hparams.read_text(encoding="utf-8", errors="replace")
    return re.search(r"^pretrained_path\s*:", text, flags=re.MULTILINE) is not None


def _weights_id(source: str, local_dir: Path | None) -> str:
    """Which weights: vectors of two checkpoints of one architecture must not be mixed."""
    if local_dir is None:
        cached = cached_hub_file(source, HPARAMS)
        return f"rev-{cached.parent.name[:12]}" if cached is not None else "hub"
    return file_fingerprint(local_dir / "embedding_model.ckpt")


def _version() -> str:
    from importlib.metadata import version

    try:
        return f"speechbrain-{version('speechbrain')}"
    except Exception:
        return "speechbrain-unknown"
