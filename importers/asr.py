"""Optional speech recognition for lines cut from speech: fills their empty text.

Lines found by speech detection have no text, which annotators miss when they judge who speaks.
A user who has a speech recognition model can fill it in. Engines are plugins behind one tiny
protocol, `Transcriber`, chosen with ``ENGINE:PATH`` (``--asr faster-whisper:/models/whisper``):

- ``faster-whisper``: a CTranslate2 Whisper folder (``model.bin``, ``config.json``,
  ``vocabulary.json`` or ``.txt``, ``tokenizer.json``; what ``ct2-transformers-converter
  --copy_files tokenizer.json`` writes, or any ``Systran/faster-whisper-*`` download). It needs
  the ``asr`` extra (``pip install 'speaker-grouping[asr]'``).

Nothing here downloads weights: the path must be a local folder, and a folder without its
tokenizer is refused instead of letting faster-whisper fetch one from the hub.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from foundation.hook import Hook
from importers.subtitles import SubtitleLine

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class AsrError(ValueError):
    """A speech recognition engine or model cannot be used; one line naming what and why."""


class Transcriber(Protocol):
    """Turns one line's audio into its text."""

    name: str
    """Engine and model, recorded in the import report."""

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str:
        """samples : (num_samples,) float32 mono in [-1, 1]. Returns the text ("" for none)."""
        ...


class FasterWhisperTranscriber:
    """A CTranslate2 Whisper model through faster-whisper, loaded once, on the CPU.

    Greedy decoding without timestamps and without conditioning on earlier text: each line is
    transcribed on its own, so one misheard line cannot derail the next.
    """

    REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")

    def __init__(
        self,
        model_dir: str | Path,
        *,
        language: str | None = None,
        compute_type: str = "default",
        cpu_threads: int = 0,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.language = language
        self.name = f"faster-whisper:{self.model_dir}"
        if not self.model_dir.is_dir():
            raise AsrError(f"{self.model_dir}: no such model folder")
        missing = [f for f in self.REQUIRED_FILES if not (self.model_dir / f).is_file()]
        if missing:
            raise AsrError(
                f"{self.model_dir}: not a faster-whisper (CTranslate2 Whisper) model folder: "
                f"missing {', '.join(missing)}"
            )
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise AsrError(
                "the faster-whisper engine is not installed: pip install 'speaker-grouping[asr]'"
            ) from None
        try:
            self._model: Any = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=cpu_threads or (os.cpu_count() or 1),
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise AsrError(f"{self.model_dir}: cannot load the Whisper model: {reason}") from None
        if language is not None and language not in self._model.supported_languages:
            raise AsrError(
                f"{self.model_dir}: the model does not know language {language!r} "
                f"(it knows {', '.join(self._model.supported_languages[:12])}...)"
            )
        logger.info("loaded %s", self.name)

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"Whisper needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if not len(samples):
            return ""
        segments, _info = self._model.transcribe(
            samples,
            language=self.language,
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()


ENGINES: dict[str, Callable[..., Transcriber]] = {
    "faster-whisper": FasterWhisperTranscriber,
}
"""Engine name -> factory taking the model path (and ``language=``)."""


def load_transcriber(spec: str, *, language: str | None = None) -> Transcriber:
    """The engine and model named by ``ENGINE:PATH``; `AsrError` for anything unusable."""
    engine, separator, path = spec.partition(":")
    if not separator or not path:
        raise AsrError(
            f"--asr {spec!r}: expected ENGINE:PATH, e.g. faster-whisper:/models/whisper-small"
        )
    factory = ENGINES.get(engine)
    if factory is None:
        raise AsrError(
            f"--asr {spec!r}: unknown engine {engine!r}; known: {', '.join(sorted(ENGINES))}"
        )
    return factory(Path(path).expanduser(), language=language)


def transcribe_lines(
    lines: Sequence[SubtitleLine],
    audio: np.ndarray,
    sample_rate: int,
    transcriber: Transcriber,
    *,
    hook: Hook | None = None,
) -> list[SubtitleLine]:
    """``lines`` with their text from ``transcriber`` run on each line's span of ``audio``.

    audio : (num_samples,) float32 mono of the whole episode at ``sample_rate``. Progress goes to
    ``hook("asr", completed=i, total=n)``.
    """
    transcribed = []
    for done, line in enumerate(lines, start=1):
        first = max(0, int(line.start * sample_rate))
        last = min(len(audio), int(np.ceil(line.end * sample_rate)))
        text = transcriber.transcribe(audio[first:last], sample_rate)
        transcribed.append(replace(line, text=" ".join(text.split())))
        if hook is not None:
            hook("asr", completed=done, total=len(lines))
    return transcribed
