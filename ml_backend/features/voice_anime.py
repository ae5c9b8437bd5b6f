"""An anime-domain voice embedder: ECAPA-TDNN with GroupNorm, in plain torch (192-d).

`anime_speaker_embedding` (PyPI, MIT) publishes ECAPA-TDNN speaker encoders trained on anime
and visual-novel speech (about 7 million lines; a ``char`` variant that tells characters apart
and a ``va`` variant that tells voice actors apart). Their network is speechbrain's
``ECAPA_TDNN`` (channels 1024-1024-1024-1024-3072, kernels 5-3-3-3-1, dilations 1-2-3-4-1,
Res2Net scale 8, SE and attention 128) with every BatchNorm replaced by ``GroupNorm(32, C)``,
fed with speechbrain's ``Fbank`` (80 mel bands, 25 ms Hamming windows every 10 ms, power
spectrum, triangular filters, 10·log10 with an 80 dB floor) of the waveform scaled to 16-bit
integers' range. speechbrain does not load beside this project's torch (it needs torchaudio),
so the network is written here from that description, with the same parameter names, and the
published ``embedding_model.pth`` state dicts load into it unchanged.

Weights come from a local folder or from the Hugging Face cache (never fetched here; offline
machines must copy them in), in this order of preference:

- ``embedding_model.safetensors``: tensors only, nothing to unpickle (`convert_checkpoint`
  writes it from the published file once);
- ``embedding_model.pth``: the published format, read with ``torch.load(weights_only=True)``,
  torch's restricted loader that accepts tensors and plain containers and refuses any other
  object.

Sizes are read from the checkpoint itself (channels, mel bands, embedding size), so a smaller
or retrained model of the same layout loads too.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml_backend.features.base import ModelUnavailableError, check_batch, normalise_rows
from ml_backend.features.hub import (
    cached_hub_file,
    file_fingerprint,
    hub_offline,
    looks_like_hub_id,
)
from ml_backend.features.store import ModelInfo

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
VARIANTS = {
    "char": "litagin/anime_speaker_embedding_ecapa_tdnn_groupnorm",
    "va": "litagin/anime_speaker_embedding_by_va_ecapa_tdnn_groupnorm",
}
"""The published checkpoints (hub ids); ``char`` is the package's default."""
SAFETENSORS = "embedding_model.safetensors"
PUBLISHED = "embedding_model.pth"
GROUPS = 32
"""GroupNorm groups in place of every BatchNorm (the package's ``swap_bn_to_gn``)."""
DILATIONS = (1, 2, 3, 4, 1)
RES2NET_SCALE = 8
N_FFT = 400
HOP = 160
TOP_DB = 80.0
INT16_SCALE = 32768.0
"""The published models were trained on waveforms in [-1, 1] multiplied by this."""
MIN_SAMPLES = SAMPLE_RATE // 10
"""Shorter clips are zero-padded to this (0.1 s: 11 frames), so every reflect-padded
convolution has enough frames."""

_load_lock = threading.Lock()
_networks: dict[str, Any] = {}


# --------------------------------------------------------------------------- network


def _modules() -> Any:
    """The network's classes, built on first use so that importing this module stays cheap."""
    import torch
    from torch import nn
    from torch.nn import functional

    class Conv(nn.Module):
        """1-d convolution with speechbrain's "same" reflect padding (parameters ``conv.*``)."""

        def __init__(self, inputs: int, outputs: int, kernel: int, dilation: int = 1) -> None:
            super().__init__()
            self.pad = dilation * (kernel - 1) // 2
            self.conv = nn.Conv1d(inputs, outputs, kernel, dilation=dilation)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.pad:
                x = functional.pad(x, (self.pad, self.pad), mode="reflect")
            return self.conv(x)

    class Norm(nn.Module):
        """GroupNorm where speechbrain has its BatchNorm wrapper (parameters ``norm.*``)."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.norm = nn.GroupNorm(GROUPS, channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(x)

    class TDNN(nn.Module):
        """Convolution, ReLU, norm: (batch, inputs, frames) -> (batch, outputs, frames)."""

        def __init__(self, inputs: int, outputs: int, kernel: int, dilation: int) -> None:
            super().__init__()
            self.conv = Conv(inputs, outputs, kernel, dilation)
            self.norm = Norm(outputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(torch.relu(self.conv(x)))

    class Res2Net(nn.Module):
        """Channels cut in ``scale`` parts; each part after the first goes through its own
        TDNN together with the previous part's output (multi-scale receptive fields)."""

        def __init__(self, channels: int, kernel: int, dilation: int) -> None:
            super().__init__()
            part = channels // RES2NET_SCALE
            self.blocks = nn.ModuleList(
                TDNN(part, part, kernel, dilation) for _ in range(RES2NET_SCALE - 1)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            parts = torch.chunk(x, RES2NET_SCALE, dim=1)
            out = [parts[0]]
            previous = None
            for block, part in zip(self.blocks, parts[1:], strict=True):
                previous = block(part if previous is None else part + previous)
                out.append(previous)
            return torch.cat(out, dim=1)

    class SqueezeExcite(nn.Module):
        def __init__(self, channels: int, hidden: int) -> None:
            super().__init__()
            self.conv1 = Conv(channels, hidden, 1)
            self.conv2 = Conv(hidden, channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale = torch.relu(self.conv1(x.mean(dim=2, keepdim=True)))
            return torch.sigmoid(self.conv2(scale)) * x

    class SERes2NetBlock(nn.Module):
        def __init__(self, inputs: int, outputs: int, kernel: int, dilation: int, se: int):
            super().__init__()
            self.tdnn1 = TDNN(inputs, outputs, 1, 1)
            self.res2net_block = Res2Net(outputs, kernel, dilation)
            self.tdnn2 = TDNN(outputs, outputs, 1, 1)
            self.se_block = SqueezeExcite(outputs, se)
            self.shortcut = Conv(inputs, outputs, 1) if inputs != outputs else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            residual = x if self.shortcut is None else self.shortcut(x)
            x = self.tdnn2(self.res2net_block(self.tdnn1(x)))
            return self.se_block(x) + residual

    class AttentivePooling(nn.Module):
        """Attention-weighted mean and standard deviation over frames, the attention seeing
        each frame beside the utterance's global mean and deviation: (B, C, T) -> (B, 2C, 1)."""

        def __init__(self, channels: int, attention: int) -> None:
            super().__init__()
            self.tdnn = TDNN(3 * channels, attention, 1, 1)
            self.conv = Conv(attention, channels, 1)

        @staticmethod
        def _stats(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean = (weights * x).sum(dim=2)
            variance = (weights * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2)
            return mean, torch.sqrt(variance.clamp(min=1e-12))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            frames = x.shape[-1]
            uniform = torch.full_like(x[:, :1, :], 1.0 / frames)
            mean, std = self._stats(x, uniform)
            context = torch.cat(
                [x, mean.unsqueeze(2).expand_as(x), std.unsqueeze(2).expand_as(x)], dim=1
            )
            weights = torch.softmax(self.conv(torch.tanh(self.tdnn(context))), dim=2)
            mean, std = self._stats(x, weights)
            return torch.cat([mean, std], dim=1).unsqueeze(2)

    class EcapaTdnn(nn.Module):
        """(batch, frames, mels) log-mel features -> (batch, 1, embedding) speaker vectors."""

        def __init__(
            self,
            mels: int,
            channels: Sequence[int],
            kernels: Sequence[int],
            embedding: int,
            attention: int,
            se: int,
        ) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([TDNN(mels, channels[0], kernels[0], DILATIONS[0])])
            for i in range(1, len(channels) - 1):
                self.blocks.append(
                    SERes2NetBlock(channels[i - 1], channels[i], kernels[i], DILATIONS[i], se)
                )
            self.mfa = TDNN(sum(channels[1:-1]), channels[-1], kernels[-1], DILATIONS[-1])
            self.asp = AttentivePooling(channels[-1], attention)
            self.asp_bn = Norm(2 * channels[-1])
            self.fc = Conv(2 * channels[-1], embedding, 1)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            x = features.transpose(1, 2)
            outputs = []
            for block in self.blocks:
                x = block(x)
                outputs.append(x)
            x = self.mfa(torch.cat(outputs[1:], dim=1))
            return self.fc(self.asp_bn(self.asp(x))).transpose(1, 2)

    class AnimeSpeakerNetwork(nn.Module):
        """Waveform -> unnormalised speaker vector; parameters under ``backbone.``."""

        def __init__(self, **sizes: Any) -> None:
            super().__init__()
            self.mels = int(sizes["mels"])
            self.backbone = EcapaTdnn(**sizes)
            self.register_buffer("filters", _mel_filters(self.mels), persistent=False)
            self.register_buffer("window", torch.hamming_window(N_FFT), persistent=False)

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            """wave : (1, samples) float32 in [-1, 1] -> (1, embedding)."""
            return self.backbone(self.fbank(wave)).reshape(wave.shape[0], -1)

        def fbank(self, wave: torch.Tensor) -> torch.Tensor:
            """(batch, samples) -> (batch, frames, mels) log-mel energies in dB."""
            peak = wave.abs().max()
            if peak > 1.0:
                wave = wave / peak
            spectrum = torch.stft(
                wave * INT16_SCALE,
                N_FFT,
                hop_length=HOP,
                win_length=N_FFT,
                window=self.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
            power = spectrum.real.pow(2) + spectrum.imag.pow(2)  # (batch, bins, frames)
            energies = power.transpose(1, 2) @ self.filters  # (batch, frames, mels)
            db = 10.0 * torch.log10(energies.clamp(min=1e-10))
            floor = db.amax(dim=(1, 2), keepdim=True) - TOP_DB
            return torch.maximum(db, floor)

    return AnimeSpeakerNetwork


def _mel_filters(mels: int) -> torch.Tensor:
    """(N_FFT // 2 + 1, mels) triangular filters as speechbrain's ``Filterbank`` makes them:
    centres evenly spaced on the mel scale between 0 and 8 kHz, each triangle 1 at its centre
    and 0 one lower spacing (the distance to the previous centre) to either side."""
    import torch

    def to_mel(hz: float) -> float:
        return 2595.0 * math.log10(1.0 + hz / 700.0)

    points = torch.linspace(to_mel(0.0), to_mel(SAMPLE_RATE / 2), mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (points / 2595.0) - 1.0)
    band = (hz[1:] - hz[:-1])[:-1]
    centre = hz[1:-1]
    freqs = torch.linspace(0.0, SAMPLE_RATE // 2, N_FFT // 2 + 1, dtype=torch.float64)
    slope = (freqs[None, :] - centre[:, None]) / band[:, None]
    triangles = torch.clamp(torch.minimum(slope + 1.0, 1.0 - slope), min=0.0)
    return triangles.T.to(torch.float32).contiguous()


def sizes_from_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The network's sizes, read from a state dict's shapes (keys under ``backbone.``).

    Raises ValueError naming the first key a checkpoint of this layout must have.
    """

    def shape(key: str) -> tuple[int, ...]:
        if f"backbone.{key}" not in state:
            raise ValueError(f"no {key!r}: not an ECAPA-TDNN state dict")
        return tuple(state[f"backbone.{key}"].shape)

    first = shape("blocks.0.conv.conv.weight")  # (channels[0], mels, kernel)
    count = 1
    while f"backbone.blocks.{count}.tdnn1.conv.conv.weight" in state:
        count += 1
    channels, kernels = [first[0]], [first[2]]
    for i in range(1, count):
        channels.append(shape(f"blocks.{i}.tdnn1.conv.conv.weight")[0])
        kernels.append(shape(f"blocks.{i}.res2net_block.blocks.0.conv.conv.weight")[2])
    mfa = shape("mfa.conv.conv.weight")
    channels.append(mfa[0])
    kernels.append(mfa[2])
    return {
        "mels": first[1],
        "channels": tuple(channels),
        "kernels": tuple(kernels),
        "embedding": shape("fc.conv.weight")[0],
        "attention": shape("asp.tdnn.conv.conv.weight")[0],
        "se": shape("blocks.1.se_block.conv1.conv.weight")[0],
    }


def build_network(state: Mapping[str, Any]) -> Any:
    """The network with ``state`` loaded; every parameter must be there (extra keys, such as a
    training-time classifier, are ignored and logged). Raises ValueError otherwise."""
    sizes = sizes_from_state(state)
    network = _modules()(**sizes)
    expected = network.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise ValueError(f"missing {len(missing)} tensors, first {missing[0]!r}")
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(
            f"{wrong[0]!r} has shape {tuple(state[wrong[0]].shape)}, "
            f"expected {tuple(expected[wrong[0]].shape)}"
        )
    extra = sorted(set(state) - set(expected))
    if extra:
        logger.info("ignoring %d tensors not in the encoder, e.g. %s", len(extra), extra[0])
    network.load_state_dict({key: state[key] for key in expected})
    return network.eval()


# --------------------------------------------------------------------------- checkpoints


def read_state(path: Path) -> dict[str, Any]:
    """A state dict from ``.safetensors`` or the published ``.pth`` (restricted loader only)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error).strip().splitlines()
        raise ModelUnavailableError(
            f"anime-ecapa: cannot read {path} ({type(error).__name__}: {text[0] if text else ''})"
        ) from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ModelUnavailableError(f"anime-ecapa: {path} does not hold a state dict of tensors")
    return dict(state)


def convert_checkpoint(source: Path | str, target: Path | str) -> Path:
    """Write the published ``.pth`` once as ``.safetensors`` (tensors only), atomically.

    The ``.pth`` is read with torch's restricted loader; later loads read only the
    safetensors file.
    """
    import os

    from safetensors.torch import save_file

    source, target = Path(source), Path(target)
    state = read_state(source)
    build_network(state)  # refuse to write something that will not load
    partial = target.with_name(f".{target.name}.partial")
    save_file({key: value.contiguous() for key, value in state.items()}, str(partial))
    with partial.open("rb") as written:
        os.fsync(written.fileno())
    os.replace(partial, target)
    return target


def find_checkpoint(source: str) -> Path:
    """The weights file for ``source`` (a variant name, a hub id, a folder or a file)."""
    repo = VARIANTS.get(source, source)
    path = Path(repo).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in (SAFETENSORS, PUBLISHED):
            if (path / name).is_file():
                return path
        raise ModelUnavailableError(
            f"anime-ecapa: {path} holds neither {SAFETENSORS} nor {PUBLISHED}"
        )
    if not looks_like_hub_id(repo):
        raise ModelUnavailableError(
            f"anime-ecapa: {source} is neither a variant ({', '.join(VARIANTS)}), a hub id "
            "nor a folder or file"
        )
    for name in (SAFETENSORS, PUBLISHED):
        cached = cached_hub_file(repo, name)
        if cached is not None:
            return cached
    how = "HF_HUB_OFFLINE=1 is set" if hub_offline() else "this project never downloads weights"
    raise ModelUnavailableError(
        f"anime-ecapa: {repo} is not in the Hugging Face cache and {how}: download it once "
        f"with `hf download {repo} {PUBLISHED}` where there is network, or pass "
        f"anime-ecapa:/path/to/folder (holding {SAFETENSORS} or {PUBLISHED})"
    )


def _weights_file(found: Path) -> Path:
    if found.is_file():
        return found
    safe = found / SAFETENSORS
    return safe if safe.is_file() else found / PUBLISHED


def _network(path: Path) -> Any:
    """One network per weights file, per process."""
    key = str(path.resolve())
    with _load_lock:
        if key not in _networks:
            try:
                _networks[key] = build_network(read_state(path))
            except ValueError as error:
                raise ModelUnavailableError(f"anime-ecapa: {path}: {error}") from None
        return _networks[key]


# --------------------------------------------------------------------------- embedder


class AnimeEcapaEmbedder:
    """Speaker vectors from the anime-domain ECAPA-TDNN (`anime_speaker_embedding`).

    source : ``char`` (default) or ``va`` (the published variants, from the hub cache), a hub
        id, a folder holding ``embedding_model.safetensors`` or ``.pth``, or such a file.
    num_threads : torch intra-op threads while embedding (restored afterwards).
    """

    def __init__(self, source: str | Path | None = None, *, num_threads: int = 2) -> None:
        self.source = str(source or "char")
        self.num_threads = num_threads
        self.weights = _weights_file(find_checkpoint(self.source))
        self._model = _network(self.weights)
        label = self.source if self.source in VARIANTS else self.weights.parent.name
        embedding = int(self._model.backbone.fc.conv.out_channels)
        self.info = ModelInfo(
            name=f"anime-ecapa:{label}",
            version=f"anime-ecapa-1+{file_fingerprint(self.weights)}",
            dim=embedding,
        )

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """(len(batch), dim) float32 unit rows; each item is (num_samples,) float32 at 16 kHz.

        Clips run one at a time: GroupNorm's statistics span the whole clip, so padding a clip
        to its batch mates' length would change its vector.
        """
        import torch

        check_batch(batch, kind="voice")
        out = np.zeros((len(batch), self.info.dim), dtype=np.float32)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                for i, clip in enumerate(batch):
                    wave = np.zeros(max(len(clip), MIN_SAMPLES), dtype=np.float32)
                    wave[: len(clip)] = clip
                    vector = self._model(torch.from_numpy(wave).unsqueeze(0))
                    out[i] = vector[0].numpy()
        finally:
            torch.set_num_threads(threads)
        return normalise_rows(out)
