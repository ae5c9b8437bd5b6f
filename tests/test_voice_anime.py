"""The anime-domain ECAPA loader (`ml_backend.features.voice_anime`) on checkpoints built here.

The published weights cannot be downloaded on this machine, so each test writes a state dict
with random weights in the published layout: the key names and shapes of speechbrain's
ECAPA_TDNN with GroupNorm under ``backbone.``, generated below from the architecture's
description independently of the module's own classes (at reduced width, so that the tests stay
fast; the loader reads the sizes from the checkpoint).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ml_backend.features.embedder import ModelUnavailableError, voice_embedder  # noqa: E402
from ml_backend.features.voice_anime import (  # noqa: E402
    AnimeEcapaEmbedder,
    convert_checkpoint,
    sizes_from_state,
)


def published_layout(
    *,
    mels: int = 80,
    channels=(256, 256, 256, 256, 768),
    kernels=(5, 3, 3, 3, 1),
    embedding: int = 192,
    attention: int = 128,
    se: int = 128,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A state dict named and shaped as `anime_speaker_embedding` saves its model."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(key: str, outputs: int, inputs: int, kernel: int) -> None:
        scale = 1.0 / (inputs * kernel) ** 0.5
        state[f"backbone.{key}.weight"] = (
            torch.randn(outputs, inputs, kernel, generator=generator) * scale
        )
        state[f"backbone.{key}.bias"] = torch.randn(outputs, generator=generator) * 0.01

    def norm(key: str, size: int) -> None:  # GroupNorm affine parameters
        state[f"backbone.{key}.weight"] = 1.0 + 0.1 * torch.randn(size, generator=generator)
        state[f"backbone.{key}.bias"] = 0.1 * torch.randn(size, generator=generator)

    def tdnn(key: str, outputs: int, inputs: int, kernel: int) -> None:
        conv(f"{key}.conv.conv", outputs, inputs, kernel)
        norm(f"{key}.norm.norm", outputs)

    tdnn("blocks.0", channels[0], mels, kernels[0])
    for i in range(1, len(channels) - 1):
        c = channels[i]
        tdnn(f"blocks.{i}.tdnn1", c, channels[i - 1], 1)
        for j in range(7):
            tdnn(f"blocks.{i}.res2net_block.blocks.{j}", c // 8, c // 8, kernels[i])
        tdnn(f"blocks.{i}.tdnn2", c, c, 1)
        conv(f"blocks.{i}.se_block.conv1.conv", se, c, 1)
        conv(f"blocks.{i}.se_block.conv2.conv", c, se, 1)
    tdnn("mfa", channels[-1], sum(channels[1:-1]), kernels[-1])
    tdnn("asp.tdnn", attention, 3 * channels[-1], 1)
    conv("asp.conv.conv", channels[-1], attention, 1)
    norm("asp_bn.norm", 2 * channels[-1])
    conv("fc.conv", embedding, 2 * channels[-1], 1)
    return state


def voices(count: int = 4, seconds: float = 1.2, seed: int = 1) -> list[np.ndarray]:
    """Harmonic tones of different pitches with a little noise, 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    clips = []
    for k in range(count):
        f0 = 110.0 * (1.3**k)
        wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
        clips.append((0.2 * wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32))
    return clips


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("anime-ecapa")
    torch.save(published_layout(), folder / "embedding_model.pth")
    return folder


def test_the_published_layout_loads_and_gives_unit_vectors(checkpoint):
    embedder = voice_embedder(f"anime-ecapa:{checkpoint}")
    assert isinstance(embedder, AnimeEcapaEmbedder)
    assert embedder.info.dim == 192
    assert embedder.info.name == f"anime-ecapa:{checkpoint.name}"
    rows = embedder.embed(voices())
    assert rows.shape == (4, 192) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    # different voices, different vectors; one voice, one vector whatever its batch mates
    assert np.abs(rows @ rows.T - np.eye(4)).max() < 0.9999
    alone = embedder.embed([voices()[2]])
    np.testing.assert_allclose(alone[0], rows[2], atol=1e-5)


def test_the_sizes_are_read_from_the_checkpoint():
    sizes = sizes_from_state(published_layout(channels=(256, 256, 256, 256, 768), embedding=64))
    assert sizes == {
        "mels": 80,
        "channels": (256, 256, 256, 256, 768),
        "kernels": (5, 3, 3, 3, 1),
        "embedding": 64,
        "attention": 128,
        "se": 128,
    }


def test_the_full_published_size_is_the_default_layout():
    # the real model: channels 1024 x4 + 3072 (shapes only; no forward pass, to stay quick)
    state = published_layout(channels=(1024, 1024, 1024, 1024, 3072))
    assert sizes_from_state(state)["channels"] == (1024, 1024, 1024, 1024, 3072)
    assert state["backbone.asp_bn.norm.weight"].shape == (6144,)


def test_safetensors_conversion_gives_the_same_vectors(checkpoint, tmp_path):
    converted = tmp_path / "converted"
    converted.mkdir()
    convert_checkpoint(
        checkpoint / "embedding_model.pth", converted / "embedding_model.safetensors"
    )
    from_pth = AnimeEcapaEmbedder(checkpoint).embed(voices(2))
    safe = AnimeEcapaEmbedder(converted)
    assert safe.weights.name == "embedding_model.safetensors"
    np.testing.assert_allclose(safe.embed(voices(2)), from_pth, atol=1e-6)


def test_a_missing_tensor_is_named(tmp_path):
    state = published_layout()
    del state["backbone.blocks.2.se_block.conv2.conv.bias"]
    torch.save(state, tmp_path / "embedding_model.pth")
    with pytest.raises(
        ModelUnavailableError,
        match=r"missing 1 tensors, first 'backbone\.blocks\.2\.se_block\.conv2\.conv\.bias'",
    ):
        AnimeEcapaEmbedder(tmp_path)


def test_a_pickled_object_is_refused(tmp_path):
    # weights_only=True: a checkpoint holding anything but tensors and containers does not load
    from fractions import Fraction

    torch.save({"model": Fraction(1, 3)}, tmp_path / "embedding_model.pth")
    with pytest.raises(ModelUnavailableError, match="cannot read"):
        AnimeEcapaEmbedder(tmp_path)


def test_a_folder_without_weights_and_an_uncached_variant_fail_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(ModelUnavailableError, match=r"holds neither embedding_model\.safetensors"):
        voice_embedder(f"anime-ecapa:{tmp_path}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelUnavailableError, match="litagin/anime_speaker_embedding_by_va"
    ) as error:
        voice_embedder("anime-ecapa:va")
    assert "\n" not in str(error.value)


def test_a_hub_cache_copy_is_found(tmp_path, monkeypatch):
    snapshot = (
        tmp_path
        / "models--litagin--anime_speaker_embedding_ecapa_tdnn_groupnorm"
        / "snapshots"
        / "abc123"
    )
    snapshot.mkdir(parents=True)
    torch.save(published_layout(seed=3), snapshot / "embedding_model.pth")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    embedder = voice_embedder("anime-ecapa")
    assert embedder.info.name == "anime-ecapa:char"
    assert embedder.embed(voices(1)).shape == (1, 192)
