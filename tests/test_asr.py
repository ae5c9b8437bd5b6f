"""Optional speech recognition (`importers.asr`) on a Whisper model the test builds itself.

No weights can be downloaded here, so the test makes a real faster-whisper model folder the way
users make one from a Hugging Face checkpoint: a tiny random-weight
``WhisperForConditionalGeneration`` (transformers) with a byte-level tokenizer, converted by
CTranslate2's ``TransformersConverter`` with ``tokenizer.json`` copied beside it. Its words are
nonsense, but loading, decoding and the import's use of it are the real code paths. Its output
layer is made to favour lower-case letters, so what it says is text.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import numpy as np
import pytest

from importers.asr import AsrError, FasterWhisperTranscriber, load_transcriber
from importers.media import decode_audio
from importers.pipeline import import_episode
from speaker_grouping.cli import main as cli_main

pytest.importorskip("faster_whisper")
pytest.importorskip("ctranslate2")
pytest.importorskip("transformers")

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)


def build_tiny_whisper(folder: Path) -> Path:
    """A CTranslate2 Whisper folder (model.bin, config.json, vocabulary.json, tokenizer.json)."""
    import ctranslate2
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    checkpoint = folder / "hf"
    # Byte-level BPE without merges: one token per byte, then Whisper's special tokens and its
    # 1,501 timestamp tokens, in Whisper's order (English-only: no language tokens).
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", special=False) for i in range(1501)])
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    eot = ids["<|endoftext|>"]
    vocab_size = tokenizer.get_vocab_size()
    letters = [tokenizer.token_to_id(c) for c in string.ascii_lowercase]
    WhisperTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    ).save_pretrained(checkpoint)
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=80,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    # Left as drawn, the model says timestamps (which decode to no text) or a space over and
    # over. Its output layer shares the token embeddings, so zeroing every other token's row
    # gives those a logit of 0 while some letter always scores above it: it speaks letters.
    with torch.no_grad():
        keep = torch.zeros(vocab_size, dtype=torch.bool)
        keep[letters] = True
        model.get_output_embeddings().weight[~keep] = 0.0
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=eot,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        suppress_tokens=[],
        begin_suppress_tokens=[eot],
    )
    model.save_pretrained(checkpoint)
    converted = folder / "faster-whisper-tiny-random"
    converter = ctranslate2.converters.TransformersConverter(
        str(checkpoint), copy_files=["tokenizer.json"]
    )
    converter.convert(str(converted), force=True)
    return converted


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="module")
def speech(tiny_episode) -> np.ndarray:
    """The first line of the generated tiny episode: (num_samples,) float32 at 16 kHz."""
    spec = json.loads((tiny_episode.made / "spec.json").read_text())
    first = spec["lines_detail"][0]
    audio = decode_audio(tiny_episode.made / "episode.mp4")
    return audio[int(first["speech_start"] * 16000) : int(first["speech_end"] * 16000)]


def test_the_built_folder_has_the_layout_users_download(whisper_dir):
    names = {path.name for path in whisper_dir.iterdir()}
    assert {"model.bin", "config.json", "tokenizer.json"} <= names
    assert names & {"vocabulary.json", "vocabulary.txt"}


def test_faster_whisper_engine_loads_the_folder_and_transcribes(whisper_dir, speech):
    transcriber = load_transcriber(f"faster-whisper:{whisper_dir}")
    assert isinstance(transcriber, FasterWhisperTranscriber)
    assert transcriber.name == f"faster-whisper:{whisper_dir}"
    text = transcriber.transcribe(speech, 16000)
    assert isinstance(text, str) and text.strip()  # timestamps and specials are suppressed
    assert text == text.strip() and "\n" not in text
    assert transcriber.transcribe(speech, 16000) == text  # greedy: the same every time
    assert transcriber.transcribe(np.zeros(0, np.float32), 16000) == ""
    with pytest.raises(ValueError, match="16000 Hz"):
        transcriber.transcribe(speech, 44100)


def test_an_unknown_language_is_refused_by_an_english_only_model(whisper_dir):
    with pytest.raises(AsrError, match="does not know language 'ja'"):
        load_transcriber(f"faster-whisper:{whisper_dir}", language="ja")


def broken_copy(whisper_dir: Path, tmp_path: Path, damage: str) -> Path:
    copy = tmp_path / f"whisper-{damage}"
    shutil.copytree(whisper_dir, copy)
    if damage == "no-tokenizer":
        (copy / "tokenizer.json").unlink()
    elif damage == "corrupt":
        (copy / "model.bin").write_bytes(b"not a model" * 100)
    return copy


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "no such model folder"),
        ("no-tokenizer", "not a faster-whisper .* missing tokenizer.json"),
        ("corrupt", "cannot load the Whisper model"),
    ],
)
def test_an_unusable_model_path_is_a_one_line_error_naming_it(
    whisper_dir, tmp_path, damage, message
):
    path = (
        tmp_path / "nowhere" if damage == "missing" else broken_copy(whisper_dir, tmp_path, damage)
    )
    with pytest.raises(AsrError, match=message) as error:
        load_transcriber(f"faster-whisper:{path}")
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("faster-whisper", "expected ENGINE:PATH"),
        ("faster-whisper:", "expected ENGINE:PATH"),
        ("whisperx:/models/x", "unknown engine 'whisperx'; known: faster-whisper"),
    ],
)
def test_a_bad_asr_spec_is_named(spec, message):
    with pytest.raises(AsrError, match=message):
        load_transcriber(spec)


def test_import_with_asr_fills_each_lines_text_and_records_the_engine(
    whisper_dir, tiny_episode, tmp_path
):
    transcriber = load_transcriber(f"faster-whisper:{whisper_dir}")
    video = tiny_episode.made / "episode.mp4"
    result = import_episode(
        video,
        out_dir=tmp_path,
        options={"line_source": "speech"},
        transcriber=transcriber,
    )
    audio = decode_audio(video)
    assert result.tasks
    for task in result.tasks:
        data = task["data"]
        span = audio[int(data["start"] * 16000) : int(np.ceil(data["end"] * 16000))]
        assert data["text"] == " ".join(transcriber.transcribe(span, 16000).split())
        assert data["text"]
        assert data["flags"] == ["no_subtitles"]
    report = json.loads(result.report_path.read_text())
    assert report["speech"]["asr"] == transcriber.name


def test_cli_refuses_a_bad_model_before_any_work(tiny_episode, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(
        [
            "import",
            str(tiny_episode.made / "episode.mp4"),
            "--out",
            str(out),
            "--no-subtitles",
            "--asr",
            f"faster-whisper:{tmp_path / 'no-model'}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'no-model'}: no such model folder"]
    assert not out.exists()


def test_cli_asr_needs_lines_from_speech(tiny_episode, whisper_dir, tmp_path, capsys):
    code = cli_main(
        [
            "import",
            str(tiny_episode.made / "episode.mp4"),
            "--out",
            str(tmp_path),
            "--asr",
            f"faster-whisper:{whisper_dir}",
        ]
    )
    assert code == 2
    assert "add --no-subtitles or --fallback-to-speech" in capsys.readouterr().err
