"""Where hub models are looked for, and the one-line errors when they cannot be had.

The optional embedders (ECAPA, CLIP) load weights from the Hugging Face hub or from a local
copy in the hub's own layout. Offline (``HF_HUB_OFFLINE=1``, as on CI and this project's
machines) a hub id that was never downloaded must fail at once and say what to do, not after
a chain of retries inside someone else's library; so we look in the hub cache ourselves first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from ml_backend.features.base import ModelUnavailableError

HUB_MODELS_HINT = "run `make hub-models` (see README)"


def hub_offline() -> bool:
    """True when huggingface_hub would refuse to reach the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    """The hub cache, resolved the way huggingface_hub resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_hub_file(repo_id: str, filename: str) -> Path | None:
    """A snapshot's copy of ``filename`` from model repo ``repo_id``, if any was downloaded."""
    snapshots = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    found = sorted(snapshots.glob(f"*/{filename}"), key=lambda path: path.stat().st_mtime)
    return found[-1] if found else None


def looks_like_hub_id(source: str) -> bool:
    """``org/name`` that is not a path on this machine."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not Path(source).expanduser().exists()


def require_modules(model: str, modules: tuple[str, ...], what: str) -> None:
    """Raise the one-line 'needs the heavy stack' error unless every module can be imported.

    ``find_spec`` looks without importing, so the check costs milliseconds even when the stack
    is present; a module that is found but fails to import is caught where it is imported.
    """
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelUnavailableError(f"{model} needs {what}: {HUB_MODELS_HINT}")


def one_line(error: BaseException) -> str:
    """The first line of an exception's message, for errors from other libraries."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def file_fingerprint(path: Path) -> str:
    """A short id of a weights file: its size and its first and last MiB, hashed.

    Hashing a 600 MB checkpoint in full would cost seconds at every start; two different
    checkpoints that agree in size and at both ends are not a case worth paying that for.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as weights:
        digest.update(weights.read(1 << 20))
        if size > 2 << 20:
            weights.seek(-(1 << 20), os.SEEK_END)
            digest.update(weights.read(1 << 20))
    return f"w{digest.hexdigest()[:12]}"
