"""open_clip image embeddings (CLIP ViT-B/32 by default), from the hub or a local checkpoint.

Every form goes through ``open_clip.create_model_and_transforms``, the loader open_clip's own
README uses, so a local copy loads exactly as the hub copy would:

    clip                          ViT-B-32 with the ``laion2b_s34b_b79k`` weights (hub)
    clip:<arch>/<tag>             a built-in architecture and a named pretrained tag (hub)
    clip:hf-hub:<org>/<repo>      an open_clip repo on the hub (open_clip_config.json + weights)
    clip:<folder>                 a local copy of such a repo (``local-dir:`` in open_clip)
    clip:<file>                   a checkpoint file; the architecture comes from an
                                  open_clip_config.json beside it, else ViT-B-32
    clip:<arch>:<file>            a checkpoint file of the named architecture

open_clip needs torchvision, which does not load beside the project's CPU torch; it lives in
the optional hub-models environment, and is imported only when this embedder is chosen.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.features.base import ModelUnavailableError, check_batch, normalise_rows
from ml_backend.features.hub import (
    cached_hub_file,
    file_fingerprint,
    hub_cache_dir,
    hub_offline,
    one_line,
    require_modules,
)
from ml_backend.features.store import ModelInfo

logger = logging.getLogger(__name__)

DEFAULT_ARCH = "ViT-B-32"
DEFAULT_TAG = "laion2b_s34b_b79k"
CONFIG_FILE = "open_clip_config.json"
HUB_WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
)
STACK_ERROR = "clip needs open_clip + torchvision"

_load_lock = threading.Lock()
_models: dict[tuple[str, str | None, str], tuple[Any, Any]] = {}


@dataclass(frozen=True)
class ClipSource:
    """What to hand ``create_model_and_transforms``: a model name and a ``pretrained`` value."""

    model_name: str
    pretrained: str | None
    label: str
    """How the weights are named in the vectors' ModelInfo."""


def parse_clip_spec(spec: str) -> ClipSource:
    """The part after ``clip:`` (may be empty) → what open_clip is asked to load."""
    spec = spec.strip()
    if not spec:
        return ClipSource(DEFAULT_ARCH, DEFAULT_TAG, f"{DEFAULT_ARCH}/{DEFAULT_TAG}")
    if spec.startswith("hf-hub:"):
        return ClipSource(spec, None, spec)
    arch, colon, rest = spec.partition(":")
    if colon and "/" not in arch and rest:
        path = Path(rest).expanduser()
        _require_file(path)
        return ClipSource(arch, str(path.resolve()), f"{arch}:{path.name}")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ModelUnavailableError(
                f"clip: {path} has no {CONFIG_FILE}; a local model folder needs the hub layout "
                f"({CONFIG_FILE} + open_clip_model.safetensors), or pass clip:<arch>:<file>"
            )
        return ClipSource(f"local-dir:{path.resolve()}", None, path.name)
    if path.is_file() or path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
        _require_file(path)
        if (path.parent / CONFIG_FILE).is_file() and _folder_picks(path):
            return ClipSource(f"local-dir:{path.parent.resolve()}", None, path.parent.name)
        return ClipSource(DEFAULT_ARCH, str(path.resolve()), f"{DEFAULT_ARCH}:{path.name}")
    arch, slash, tag = spec.partition("/")
    if slash and arch and tag:
        return ClipSource(arch, tag, spec)
    raise ModelUnavailableError(
        f"clip: cannot read {spec!r}: use clip:<arch>/<tag>, clip:<folder>, clip:<file> "
        "or clip:hf-hub:<org>/<repo>"
    )


class OpenClipEmbedder:
    """L2-normalised CLIP image embeddings (512-d for ViT-B-32)."""

    def __init__(
        self,
        source: ClipSource | None = None,
        *,
        batch_size: int = 32,
        num_threads: int = 2,
        device: str = "cpu",
    ) -> None:
        self.source = source or parse_clip_spec("")
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.device = device
        require_modules("clip", ("torch", "torchvision", "open_clip"), "open_clip + torchvision")
        self._model, self._preprocess = _load(self.source, device)
        dim = int(self._model.visual.output_dim)
        self.info = ModelInfo(
            name=f"open_clip:{self.source.label}", version=_version(self.source), dim=dim
        )

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> OpenClipEmbedder:
        return cls(parse_clip_spec(spec), **options)

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """(len(batch), dim) float32 unit rows; each item is an (h, w, 3) uint8 RGB frame."""
        import torch
        from PIL import Image

        check_batch(batch, kind="image")
        out = np.zeros((len(batch), self.info.dim), dtype=np.float32)
        torch.set_num_threads(self.num_threads)
        for start in range(0, len(batch), self.batch_size):
            images = [
                self._preprocess(Image.fromarray(np.asarray(frame)))
                for frame in batch[start : start + self.batch_size]
            ]
            with torch.inference_mode():
                features = self._model.encode_image(torch.stack(images).to(self.device))
            out[start : start + len(images)] = features.float().cpu().numpy()
        return normalise_rows(out)


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise ModelUnavailableError(f"clip: no checkpoint file {path}")


def _folder_picks(path: Path) -> bool:
    """Whether open_clip's ``local-dir:`` loader would choose this very file in its folder."""
    preferred = [name for name in HUB_WEIGHT_FILES if (path.parent / name).is_file()]
    return bool(preferred) and preferred[0] == path.name


def _load(source: ClipSource, device: str) -> tuple[Any, Any]:
    key = (source.model_name, source.pretrained, device)
    with _load_lock:
        if key not in _models:
            _models[key] = _create(source, device)
        return _models[key]


def _create(source: ClipSource, device: str) -> tuple[Any, Any]:
    try:
        import open_clip
    except Exception as error:  # torchvision that does not match torch fails here
        raise ModelUnavailableError(
            f"{STACK_ERROR} ({one_line(error)}): run `make hub-models` (see README)"
        ) from None
    _check_cached(open_clip, source)
    logger.info("loading open_clip %s (%s)", source.model_name, source.pretrained)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            source.model_name,
            pretrained=source.pretrained,
            device=device,
            # The cache we checked, resolved now: huggingface_hub reads its env at import.
            cache_dir=str(hub_cache_dir()),
        )
    except Exception as error:
        raise ModelUnavailableError(
            f"clip: cannot load {source.label} ({one_line(error)})"
        ) from None
    model.eval()
    return model, preprocess


def _check_cached(open_clip: Any, source: ClipSource) -> None:
    """Offline, a hub tag that was never downloaded fails here in one line, not in open_clip."""
    if not hub_offline():
        return
    if source.model_name.startswith("hf-hub:"):
        repo = source.model_name.removeprefix("hf-hub:")
        files = (CONFIG_FILE,)
    elif source.pretrained and not Path(source.pretrained).is_file():
        config = open_clip.get_pretrained_cfg(source.model_name, source.pretrained)
        hub = config.get("hf_hub", "") if config else ""
        if not hub:
            return  # not a hub tag: open_clip's own error names it
        repo, filename = os.path.split(hub)  # "org/repo/" or "org/repo/file.bin", as open_clip
        files = (filename, *HUB_WEIGHT_FILES) if filename else HUB_WEIGHT_FILES
    else:
        return
    if not any(cached_hub_file(repo, name) for name in files):
        raise ModelUnavailableError(
            f"clip: {source.label} (hub repo {repo}) is not in the Hugging Face cache and "
            f"HF_HUB_OFFLINE=1: download it once with `hf download {repo}` (network needed), "
            "or pass clip:/path/to/open_clip_model.safetensors"
        )


def _version(source: ClipSource) -> str:
    from importlib.metadata import version

    try:
        library = f"open_clip-{version('open_clip_torch')}"
    except Exception:
        library = "open_clip-unknown"
    weights = source.pretrained if source.pretrained else source.model_name
    path = Path(weights.removeprefix("local-dir:"))
    if path.is_dir():
        found = [path / name for name in HUB_WEIGHT_FILES if (path / name).is_file()]
        path = found[0] if found else path
    if path.is_file():
        return f"{library}+{file_fingerprint(path)}"
    return library
