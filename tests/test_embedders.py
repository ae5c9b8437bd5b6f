"""Embedders: shapes and norms, determinism, batched == unbatched, accuracy above chance, and the
hub/local loaders with their one-line errors.

The voice tests run on the generated `tiny` episode, imported by the real pipeline. The loaders
of the optional embedders (ECAPA, CLIP) are tested on checkpoints this module writes in the
exact upstream layout (random weights), both as a local folder and as a Hugging Face cache
entry that the hub id resolves to offline; those tests need the hub-models stack and skip
without it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import wave
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.drawing import Background, Placement, face_box, random_looks, render_frame
from bench.make_episode import make_episode
from bench.voice_accuracy import read_truth
from importers.pipeline import import_episode
from ml_backend.features.anime_faces import detect_faces
from ml_backend.features.embedder import (
    IMAGE_ENV,
    VOICE_ENV,
    Embedder,
    ModelUnavailableError,
    image_embedder,
    voice_embedder,
)
from ml_backend.features.image import (
    AnimeColourEmbedder,
    AnimeColourOptions,
    UnreadableImageError,
    describe_frame,
    downscale,
)
from ml_backend.features.voice import ResemblyzerEmbedder

HAS_SPEECHBRAIN = all(
    importlib.util.find_spec(name) for name in ("speechbrain", "torchaudio", "hyperpyyaml")
)
HAS_OPEN_CLIP = all(importlib.util.find_spec(name) for name in ("open_clip", "torchvision"))
needs_speechbrain = pytest.mark.skipif(
    not HAS_SPEECHBRAIN,
    reason="speechbrain + torchaudio not installed (the hub-models stack: `make hub-models`)",
)
needs_open_clip = pytest.mark.skipif(
    not HAS_OPEN_CLIP,
    reason="open_clip + torchvision not installed (the hub-models stack: `make hub-models`)",
)


# ---------------------------------------------------------------------------------------------
# The tiny episode, generated and imported once for the module


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as clip:
        assert clip.getframerate() == 16000 and clip.getnchannels() == 1
        pcm = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
    return (pcm / 32768.0).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Clips, frames and characters of the tiny episode, line by line."""
    folder = tmp_path_factory.mktemp("tiny")
    files = make_episode("tiny", seed=1, out_dir=folder / "episode", allow_mbrola=False)
    imported = import_episode(files.video, subtitles=files.subtitles, out_dir=folder / "import")
    truth = {row.index: row.character for row in read_truth(files.truth)}
    indexes = [task["data"]["index"] for task in imported.tasks]
    episode = imported.episode_dir
    return {
        "characters": [truth[index] for index in indexes],
        "clips": [_read_wav(episode / "audio" / f"{index:04d}.wav") for index in indexes],
        "frames": [
            np.asarray(Image.open(episode / "frames" / f"{index:04d}.jpg").convert("RGB"))
            for index in indexes
        ],
    }


@pytest.fixture(scope="module")
def resemblyzer() -> ResemblyzerEmbedder:
    return ResemblyzerEmbedder()


@pytest.fixture(scope="module")
def tiny_voices(tiny, resemblyzer) -> np.ndarray:
    return resemblyzer.embed(tiny["clips"])


def _nearest_neighbour_accuracy(vectors: np.ndarray, labels: list[str]) -> float:
    """Leave-one-out 1-NN accuracy over labels that occur more than once."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    counts = Counter(labels)
    scored = [i for i, label in enumerate(labels) if counts[label] > 1]
    return float(np.mean([labels[nearest[i]] == labels[i] for i in scored]))


def _chance(labels: list[str]) -> float:
    """Expected 1-NN accuracy when the nearest line is any other line at random."""
    counts = Counter(labels)
    scored = [label for label in labels if counts[label] > 1]
    return float(np.mean([(counts[label] - 1) / (len(labels) - 1) for label in scored]))


# ---------------------------------------------------------------------------------------------
# Voice: resemblyzer, batched


def test_voice_vectors_have_recorded_dimension_and_unit_norm(tiny, resemblyzer, tiny_voices):
    vectors = tiny_voices
    assert isinstance(resemblyzer, Embedder)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(tiny["clips"]), resemblyzer.info.dim) == (len(vectors), 256)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_clip_gives_same_vector_alone_or_in_any_batch(tiny, resemblyzer):
    clips = tiny["clips"][:4]
    together = resemblyzer.embed(clips)
    reversed_ = resemblyzer.embed(clips[::-1])[::-1]
    alone = np.concatenate([resemblyzer.embed([clip]) for clip in clips])
    np.testing.assert_allclose(together, reversed_, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1], atol=1e-3)  # different clips differ


@pytest.mark.parametrize("trim_silences", [True, False])
def test_batched_resemblyzer_equals_embed_utterance(tiny, trim_silences):
    embedder = ResemblyzerEmbedder(trim_silences=trim_silences, batch_size=3)
    clips = tiny["clips"][:5]  # batch_size 3 makes partial windows of one clip straddle calls
    batched = embedder.embed(clips)
    unbatched = embedder.embed_unbatched(clips)
    np.testing.assert_allclose(batched, unbatched, atol=1e-5)


def test_prepare_matches_resemblyzer_preprocess_wav(tiny, resemblyzer):
    from resemblyzer import preprocess_wav

    clip = tiny["clips"][0]
    np.testing.assert_allclose(resemblyzer.prepare(clip), preprocess_wav(clip), atol=1e-6)


def test_fast_mel_spectrogram_matches_resemblyzers(tiny):
    from resemblyzer.audio import wav_to_mel_spectrogram

    from ml_backend.features.voice import mel_spectrogram

    for clip in tiny["clips"][:3]:
        reference = wav_to_mel_spectrogram(clip)
        ours = mel_spectrogram(clip)
        assert ours.shape == reference.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6 * reference.max())


def test_fast_trim_long_silences_is_resemblyzers_to_the_sample(tiny):
    from resemblyzer.audio import trim_long_silences as reference

    from ml_backend.features.voice import trim_long_silences

    rng = np.random.default_rng(0)
    speech = tiny["clips"][1]
    gap = np.zeros(16000, dtype=np.float32)  # a 1 s pause: long enough to be trimmed
    clips = [*tiny["clips"][:4], np.concatenate([speech, gap, speech]), gap]
    clips.append((rng.normal(0, 0.3, 24000)).clip(-1.2, 1.2).astype(np.float32))  # overflows
    for clip in clips:
        ours, theirs = trim_long_silences(clip), reference(clip)
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    assert len(trim_long_silences(clips[4])) < len(clips[4])  # the pause was trimmed


def test_unbatched_reference_uses_resemblyzers_own_preprocessing(tiny, resemblyzer):
    from resemblyzer import preprocess_wav

    clip = tiny["clips"][2]
    np.testing.assert_allclose(
        resemblyzer.prepare(clip, reference=True), preprocess_wav(clip), atol=1e-6
    )


@pytest.mark.parametrize("samples", [np.zeros(16000), np.full(80, 0.1), np.zeros(1)])
def test_silent_or_tiny_clips_still_give_unit_vectors(resemblyzer, samples):
    vectors = resemblyzer.embed([samples.astype(np.float32)])
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_voice_nearest_neighbour_finds_the_character_well_above_chance(tiny, tiny_voices):
    labels = tiny["characters"]
    accuracy = _nearest_neighbour_accuracy(tiny_voices, labels)
    assert accuracy >= _chance(labels) + 0.3, (accuracy, _chance(labels))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (np.zeros(0, np.float32), r"voice item 0: expected a non-empty \(num_samples,\)"),
        (np.zeros((2, 100), np.float32), r"voice item 0: .* got shape \(2, 100\)"),
    ],
)
def test_bad_voice_items_are_named(resemblyzer, item, message):
    with pytest.raises(ValueError, match=message):
        resemblyzer.embed([item])


def test_empty_batch_gives_empty_matrix(resemblyzer):
    assert resemblyzer.embed([]).shape == (0, 256)


# ---------------------------------------------------------------------------------------------
# Image: anime-colour


def _shots(seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Four characters, each drawn in six different shots over different backgrounds."""
    looks = random_looks(4, np.random.default_rng(seed))
    frames, labels = [], []
    shots = [(0.5, 1.0, "front"), (0.35, 1.8, "left"), (0.65, 0.6, "right")]
    for number, look in enumerate(looks):
        for shot, (x, scale, facing) in enumerate(shots):
            for kind in ("room", "street"):
                background = Background(kind, 10 * number + shot)
                placement = Placement(look, x, scale, mouth_open=shot % 2 == 0, facing=facing)
                frames.append(np.asarray(render_frame(640, 360, background, [placement])))
                labels.append(f"character {number}")
    return frames, labels


def test_animeface_detector_finds_drawn_faces_where_they_are():
    look = random_looks(1, np.random.default_rng(3))[0]
    for scale in (1.0, 1.8):
        placement = Placement(look, 0.4, scale)
        frame = np.asarray(render_frame(640, 360, Background("room", 1), [placement]))
        faces = detect_faces(frame)
        assert faces, f"no face found at scale {scale}"
        x, y, w, h = faces[0].box
        left, top, right, bottom = face_box(640, 360, placement)
        centre = (x + w / 2, y + h / 2)
        assert left <= centre[0] <= right and top <= centre[1] <= bottom, (faces[0].box, scale)
        assert 0.4 <= w / (right - left) <= 1.6


def test_detector_finds_no_face_on_an_empty_background():
    frame = np.asarray(render_frame(640, 360, Background("plain", 2), []))
    assert detect_faces(frame) == []


def test_image_embedder_separates_characters_across_shots():
    frames, labels = _shots(seed=11)
    embedder = AnimeColourEmbedder(workers=1)
    vectors = embedder.embed(frames)
    assert vectors.shape == (len(frames), embedder.info.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert _nearest_neighbour_accuracy(vectors, labels) >= 0.9


def test_image_embedder_workers_give_the_same_vectors_as_inline():
    frames, _ = _shots(seed=12)
    frames = frames[:8]
    inline = AnimeColourEmbedder(workers=1).embed(frames)
    pooled_embedder = AnimeColourEmbedder(workers=2, min_parallel=2)
    try:
        pooled = pooled_embedder.embed(frames)
    finally:
        pooled_embedder.close()
    np.testing.assert_allclose(inline, pooled, atol=1e-6)


def test_image_embedder_on_imported_frames_is_deterministic(tiny):
    embedder = AnimeColourEmbedder(workers=1)
    frames = tiny["frames"][:4]
    first = embedder.embed(frames)
    np.testing.assert_array_equal(first, embedder.embed(frames))
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)


def _encoded(frame: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def test_histograms_are_measured_on_the_detection_size_frame():
    """Issue 4: full-resolution histograms cost more than the detection; a 720p frame must be
    described exactly as its downscale to the detection height is."""
    frames, _ = _shots(seed=13)
    options = AnimeColourOptions()
    for frame in frames[:3]:
        big = np.asarray(Image.fromarray(frame).resize((1280, 720), Image.BICUBIC))
        small = downscale(big, options.detect_height)
        assert small.shape[0] == options.detect_height
        np.testing.assert_array_equal(describe_frame(big, options), describe_frame(small, options))


def test_encoded_frames_give_the_vectors_of_decoded_ones():
    frames, _ = _shots(seed=14)
    big = [np.asarray(Image.fromarray(f).resize((1280, 720), Image.BICUBIC)) for f in frames[:4]]
    embedder = AnimeColourEmbedder(workers=1)
    for fmt in ("PNG", "JPEG"):
        encoded = [_encoded(frame, fmt) for frame in big]
        decoded = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in encoded]
        np.testing.assert_array_equal(embedder.embed_encoded(encoded), embedder.embed(decoded))


def test_encoded_frames_in_workers_match_inline():
    frames, _ = _shots(seed=15)
    encoded = [_encoded(frame, "JPEG") for frame in frames[:8]]
    inline = AnimeColourEmbedder(workers=1).embed_encoded(encoded)
    pooled_embedder = AnimeColourEmbedder(workers=2, min_parallel=2)
    try:
        pooled = pooled_embedder.embed_encoded(encoded)
    finally:
        pooled_embedder.close()
    np.testing.assert_allclose(inline, pooled, atol=1e-6)


def test_an_unreadable_encoded_frame_is_named():
    frame = _encoded(np.zeros((32, 32, 3), np.uint8), "PNG")
    with pytest.raises(UnreadableImageError, match=r"image item 1: not a readable image") as info:
        AnimeColourEmbedder(workers=1).embed_encoded([frame, b"not an image"])
    assert info.value.index == 1


def test_bad_image_item_is_named():
    with pytest.raises(ValueError, match=r"image item 1: expected an \(h, w, 3\) uint8 RGB"):
        AnimeColourEmbedder(workers=1).embed(
            [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)]
        )


# ---------------------------------------------------------------------------------------------
# Registry and one-line errors (no heavy stack needed)


def test_registry_defaults_are_the_offline_embedders(monkeypatch):
    monkeypatch.delenv(VOICE_ENV, raising=False)
    monkeypatch.delenv(IMAGE_ENV, raising=False)
    assert voice_embedder().info.name == "resemblyzer"
    assert image_embedder().info.name == "anime-colour"


def test_registry_reads_names_from_the_environment(monkeypatch):
    monkeypatch.setenv(VOICE_ENV, "resemblyzer")
    monkeypatch.setenv(IMAGE_ENV, "anime-color")
    assert voice_embedder().info.dim == 256
    assert image_embedder().info.name == "anime-colour"
    monkeypatch.setenv(VOICE_ENV, "wav2vec")
    with pytest.raises(ValueError, match="unknown voice model 'wav2vec'"):
        voice_embedder()


def test_options_change_the_recorded_version():
    default = AnimeColourEmbedder(workers=1).info
    other = AnimeColourEmbedder(workers=1, options=AnimeColourOptions(detect_height=480)).info
    assert default.name == other.name and default.version != other.version
    assert ResemblyzerEmbedder(trim_silences=False).info != ResemblyzerEmbedder().info


def test_uncached_hub_id_offline_fails_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelUnavailableError) as caught:
        voice_embedder("ecapa")
    message = str(caught.value)
    assert "\n" not in message
    assert "speechbrain/spkrec-ecapa-voxceleb" in message
    assert "hf download speechbrain/spkrec-ecapa-voxceleb" in message
    assert "ecapa:/path/to/folder" in message


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ((), r"no hyperparams.yaml, embedding_model.ckpt"),
        (("hyperparams.yaml",), r"is not a speechbrain model folder \(no embedding_model.ckpt\)"),
    ],
)
def test_incomplete_speechbrain_folder_is_named(tmp_path, files, message):
    for name in files:
        (tmp_path / name).write_text("x")
    with pytest.raises(ModelUnavailableError, match=message) as caught:
        voice_embedder(f"ecapa:{tmp_path}")
    assert str(tmp_path) in str(caught.value)


def test_missing_path_is_neither_folder_nor_hub_id(tmp_path):
    with pytest.raises(ModelUnavailableError, match="is neither a folder nor a hub id"):
        voice_embedder(f"ecapa:{tmp_path / 'nowhere' / 'model'}")


@pytest.mark.skipif(HAS_SPEECHBRAIN, reason="speechbrain is installed here")
def test_ecapa_without_the_stack_says_how_to_get_it(tmp_path):
    for name in ("hyperparams.yaml", "embedding_model.ckpt"):
        (tmp_path / name).write_text("x")
    with pytest.raises(
        ModelUnavailableError,
        match=r"^ecapa needs speechbrain \+ torchaudio: run `make hub-models` \(see README\)$",
    ):
        voice_embedder(f"ecapa:{tmp_path}")


@pytest.mark.skipif(HAS_OPEN_CLIP, reason="open_clip is installed here")
def test_clip_without_the_stack_says_how_to_get_it():
    with pytest.raises(
        ModelUnavailableError,
        match=r"^clip needs open_clip \+ torchvision: run `make hub-models` \(see README\)$",
    ):
        image_embedder("clip:ViT-B-32/laion2b_s34b_b79k")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("clip:/no/such/open_clip_model.safetensors", "no checkpoint file"),
        ("clip:ViT-B-32:/no/such/file.bin", "no checkpoint file"),
        ("clip:nonsense", "cannot read 'nonsense'"),
    ],
)
def test_bad_clip_specs_are_named(spec, message):
    with pytest.raises(ModelUnavailableError, match=message):
        image_embedder(spec)


def test_clip_folder_without_config_is_named(tmp_path):
    with pytest.raises(ModelUnavailableError, match=r"has no open_clip_config\.json"):
        image_embedder(f"clip:{tmp_path}")


# ---------------------------------------------------------------------------------------------
# Hub-format checkpoints with random weights (need the hub-models stack)

ECAPA_HPARAMS = """\
# ############################################################################
# Model: ECAPA big for Speaker verification
# ############################################################################

# Feature parameters
n_mels: 80

# Pretrain folder (HuggingFace)
pretrained_path: speechbrain/spkrec-ecapa-voxceleb

# Output parameters
out_n_neurons: 7205

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [1024, 1024, 1024, 1024, 3072]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 128
    lin_neurons: 192

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 192
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""
"""The model card's hyperparams.yaml of speechbrain/spkrec-ecapa-voxceleb, as the hub serves
it: note ``pretrained_path`` naming the hub repo even in a downloaded copy."""

TINY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
    },
}
"""An open_clip_config.json as open_clip's hub repos hold, for a small random CLIP."""


def _write_ecapa_folder(folder: Path) -> dict:
    """The hub repo's five files with random weights; returns the embedding model's weights."""
    import torch
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS, get_default_hook

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(ECAPA_HPARAMS, encoding="utf-8")
    torch.manual_seed(0)
    hparams = load_hyperpyyaml(ECAPA_HPARAMS)
    hparams["label_encoder"].update_from_iterable([f"id{i:05d}" for i in range(7205)])
    hparams["mean_var_norm_emb"].train()  # gather global statistics, as training leaves them
    hparams["mean_var_norm_emb"](torch.randn(8, 1, 192), torch.ones(8))
    files = {
        "embedding_model": "embedding_model.ckpt",
        "mean_var_norm_emb": "mean_var_norm_emb.ckpt",
        "classifier": "classifier.ckpt",
        "label_encoder": "label_encoder.txt",
    }
    for key, filename in files.items():
        get_default_hook(hparams[key], DEFAULT_SAVE_HOOKS)(hparams[key], folder / filename)
    return {k: v.clone() for k, v in hparams["embedding_model"].state_dict().items()}


def _as_hub_cache(cache: Path, repo_id: str, files_from: Path) -> None:
    """Lay ``files_from`` out as huggingface_hub's cache holds a downloaded snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for path in files_from.iterdir():
        (snapshot / path.name).symlink_to(path)


def _assert_loaded(model, weights: dict) -> None:
    import torch

    loaded = model.state_dict()
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[key].cpu(), weights[key]) for key in weights)


def _speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (
        0.1 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    ).astype(np.float32)


@pytest.mark.hub_models
@needs_speechbrain
def test_ecapa_loads_a_local_hub_format_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # must not be needed
    weights = _write_ecapa_folder(tmp_path / "spkrec-ecapa-voxceleb")
    embedder = voice_embedder(f"ecapa:{tmp_path / 'spkrec-ecapa-voxceleb'}")
    _assert_loaded(embedder._model.mods.embedding_model, weights)
    clips = [_speech(seconds, seed) for seed, seconds in enumerate((0.4, 1.3, 2.0))]
    vectors = embedder.embed(clips)
    assert vectors.shape == (3, embedder.info.dim) == (3, 192)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([embedder.embed([clip]) for clip in clips])
    np.testing.assert_allclose(vectors, alone, atol=1e-5)


@pytest.mark.hub_models
@needs_speechbrain
def test_ecapa_hub_id_loads_offline_from_the_hub_cache(tmp_path, monkeypatch):
    weights = _write_ecapa_folder(tmp_path / "download")
    _as_hub_cache(tmp_path / "hub", "speechbrain/spkrec-ecapa-voxceleb", tmp_path / "download")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    embedder = voice_embedder("ecapa")
    _assert_loaded(embedder._model.mods.embedding_model, weights)
    assert embedder.info.name == "speechbrain:speechbrain/spkrec-ecapa-voxceleb"
    assert embedder.embed([_speech(1.0, 0)]).shape == (1, 192)


def _write_clip_folder(folder: Path) -> dict:
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(TINY_CLIP_CONFIG), encoding="utf-8")
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG["model_cfg"])
    weights = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(weights, str(folder / "open_clip_model.safetensors"))
    return weights


@pytest.mark.hub_models
@needs_open_clip
@pytest.mark.parametrize("point_at", ["folder", "file"])
def test_clip_loads_a_local_hub_format_checkpoint(tmp_path, monkeypatch, point_at):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "CLIP-tiny"
    weights = _write_clip_folder(folder)
    target = folder if point_at == "folder" else folder / "open_clip_model.safetensors"
    embedder = image_embedder(f"clip:{target}")
    _assert_loaded(embedder._model, weights)
    frames, _ = _shots(seed=5)
    vectors = embedder.embed(frames[:5])
    assert vectors.shape == (5, embedder.info.dim) == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[:2], embedder.embed(frames[:2]), atol=1e-5)


@pytest.mark.hub_models
@needs_open_clip
def test_clip_hub_repo_loads_offline_from_the_hub_cache(tmp_path, monkeypatch):
    weights = _write_clip_folder(tmp_path / "download")
    _as_hub_cache(tmp_path / "hub", "example/CLIP-tiny", tmp_path / "download")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    embedder = image_embedder("clip:hf-hub:example/CLIP-tiny")
    _assert_loaded(embedder._model, weights)


@pytest.mark.hub_models
@needs_open_clip
def test_uncached_clip_tag_offline_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import open_clip  # noqa: F401  (its import takes seconds on a cold start; not what is timed)

    with pytest.raises(ModelUnavailableError, match="hf download laion/CLIP-ViT-B-32") as caught:
        image_embedder("clip")
    assert "\n" not in str(caught.value)
