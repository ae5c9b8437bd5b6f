"""How hard is an episode for voice alone? Leave-one-out 1-NN accuracy of resemblyzer embeddings.

Each line's audio is cut with its *subtitle* times (what a grouping method gets, jitter and all,
not the true speech times), embedded with resemblyzer's GE2E encoder, and labelled with the
character of its most similar other line (cosine similarity). The share of lines labelled right,
per hard condition in ``truth.csv``, shows whether a preset is as easy or as hard as it claims:
``standard`` should stay above 0.95 and ``hard`` below 0.85.

Lines of a character who speaks only once cannot have a right neighbour, so they are not scored
(they still serve as everyone else's possible wrong neighbour).

Usage: ``python -m bench.voice_accuracy EPISODE_DIR [EPISODE_DIR ...]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from foundation.hook import Hook

logger = logging.getLogger(__name__)


SAMPLE_RATE = 16000
"""resemblyzer's rate; the episode's audio is decoded straight to it."""
REPORTED_CONDITIONS = ("clean", "music_5db", "one_word", "offscreen")
"""The columns the bench README shows for every preset."""
_BATCH = 64


@dataclass(frozen=True)
class TruthRow:
    """One row of ``truth.csv``."""

    index: int
    start: float
    end: float
    speaker: str
    character: str
    conditions: tuple[str, ...]


@dataclass(frozen=True)
class ConditionScore:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


@dataclass(frozen=True)
class VoiceAccuracyReport:
    """1-NN accuracy of one episode, overall and per condition (a line counts in each of its)."""

    episode: str
    lines: int
    scored: int
    character_accuracy: float
    """Right when the nearest line has the same character: what a grouping method must get."""
    speaker_accuracy: float
    """Right when the nearest line has the same voice actor (differs only with shared voices)."""
    per_condition: dict[str, ConditionScore]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_condition"] = {
            name: {**asdict(score), "accuracy": round(score.accuracy, 4)}
            for name, score in self.per_condition.items()
        }
        return data


def read_truth(path: str | Path) -> list[TruthRow]:
    """Rows of a ``truth.csv``; a malformed row raises one line naming the file and row."""
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        expected = ["index", "start", "end", "speaker", "character", "condition"]
        if reader.fieldnames != expected:
            raise ValueError(
                f"{path}: header must be {','.join(expected)}, got {reader.fieldnames}"
            )
        for number, record in enumerate(reader, start=2):
            try:
                rows.append(
                    TruthRow(
                        index=int(record["index"]),
                        start=float(record["start"]),
                        end=float(record["end"]),
                        speaker=record["speaker"],
                        character=record["character"],
                        conditions=tuple(record["condition"].split(";")),
                    )
                )
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}:{number}: bad truth row ({error})") from None
    return rows


def decode_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The whole audio track as (num_samples,) float32 mono, decoded and resampled in one pass."""
    path = Path(path)
    chunks = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray()[0])
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray()[0])
    except (av.FFmpegError, IndexError) as error:
        raise ValueError(f"{path}: cannot decode audio ({error})") from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


class LineEmbedder:
    """resemblyzer embeddings of many clips, with all their 1.6 s partials in shared batches.

    ``VoiceEncoder.embed_utterance`` runs the network once per clip; batching the partials of
    many clips gives the same embeddings several times faster on CPU.
    """

    def __init__(self, device: str = "cpu") -> None:
        from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder(device, verbose=False)

    def embed(self, clips: Sequence[np.ndarray], *, hook: Hook | None = None) -> np.ndarray:
        """(num_clips, 256) float32, unit length; a clip is (num_samples,) float32 at 16 kHz."""
        import torch
        from resemblyzer import preprocess_wav
        from resemblyzer.audio import wav_to_mel_spectrogram

        partials: list[np.ndarray] = []
        owner: list[int] = []
        for number, clip in enumerate(clips):
            wav = preprocess_wav(np.asarray(clip, dtype=np.float32))
            if len(wav) < SAMPLE_RATE // 10:
                wav = np.asarray(clip, dtype=np.float32)  # VAD removed nearly all: keep it raw
            wav_slices, mel_slices = self.encoder.compute_partial_slices(
                len(wav), rate=1.3, min_coverage=0.75
            )
            needed = wav_slices[-1].stop
            if needed >= len(wav):
                wav = np.pad(wav, (0, needed - len(wav) + 1))
            mel = wav_to_mel_spectrogram(wav)
            for mel_slice in mel_slices:
                partials.append(mel[mel_slice])
                owner.append(number)
        sums = np.zeros((len(clips), 256), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(partials), _BATCH):
                batch = torch.from_numpy(np.stack(partials[start : start + _BATCH])).to(
                    self.encoder.device
                )
                embedded = self.encoder(batch).cpu().numpy()
                np.add.at(sums, np.asarray(owner[start : start + _BATCH]), embedded)
                if hook is not None:
                    hook("embed", completed=min(start + _BATCH, len(partials)), total=len(partials))
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def cut_clips(
    audio: np.ndarray, rows: Sequence[TruthRow], sample_rate: int = SAMPLE_RATE
) -> list[np.ndarray]:
    """Each line's audio between its subtitle times."""
    clips = []
    for row in rows:
        start = max(0, round(row.start * sample_rate))
        end = min(len(audio), max(start + 1, round(row.end * sample_rate)))
        clips.append(audio[start:end])
    return clips


def nearest_other(embeddings: np.ndarray) -> np.ndarray:
    """Index of each row's most cosine-similar other row; embeddings (n, d), unit length."""
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argmax(similarity, axis=1)


def score_episode(
    rows: Sequence[TruthRow], embeddings: np.ndarray, *, episode: str = ""
) -> VoiceAccuracyReport:
    """Leave-one-out 1-NN accuracy from embeddings already computed, per condition."""
    if len(rows) != len(embeddings):
        raise ValueError(f"{len(rows)} truth rows but {len(embeddings)} embeddings")
    if len(rows) < 2:
        raise ValueError(f"{episode or 'episode'}: 1-NN needs at least 2 lines, got {len(rows)}")
    nearest = nearest_other(embeddings)
    lines_of = Counter(row.character for row in rows)
    scored = [i for i, row in enumerate(rows) if lines_of[row.character] > 1]
    hit = [rows[int(nearest[i])].character == rows[i].character for i in range(len(rows))]
    speaker_hit = [rows[int(nearest[i])].speaker == rows[i].speaker for i in range(len(rows))]
    tally: dict[str, list[int]] = {}
    for i in scored:
        for condition in ("all", *rows[i].conditions):
            tally.setdefault(condition, [0, 0])
            tally[condition][0] += hit[i]
            tally[condition][1] += 1
    per_condition = {
        name: ConditionScore(correct, total) for name, (correct, total) in sorted(tally.items())
    }
    return VoiceAccuracyReport(
        episode=episode,
        lines=len(rows),
        scored=len(scored),
        character_accuracy=sum(hit[i] for i in scored) / max(1, len(scored)),
        speaker_accuracy=sum(speaker_hit[i] for i in scored) / max(1, len(scored)),
        per_condition=per_condition,
    )


def voice_accuracy(
    folder: str | Path, *, embedder: LineEmbedder | None = None, hook: Hook | None = None
) -> VoiceAccuracyReport:
    """Score the episode in ``folder``: its ``episode.mp4`` and ``truth.csv``."""
    folder = Path(folder)
    rows = read_truth(folder / "truth.csv")
    audio = decode_audio(folder / "episode.mp4")
    embedder = embedder or LineEmbedder()
    embeddings = embedder.embed(cut_clips(audio, rows), hook=hook)
    return score_episode(rows, embeddings, episode=str(folder))


def markdown_table(
    reports: Sequence[VoiceAccuracyReport], conditions: Sequence[str] = REPORTED_CONDITIONS
) -> str:
    """One row per episode: overall and per-condition accuracy, with the line count in brackets."""
    header = ["episode", "lines", "all", *conditions, "same actor"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for report in reports:
        cells = [
            report.episode,
            str(report.lines),
            f"{report.character_accuracy:.3f} ({report.scored})",
        ]
        for condition in conditions:
            score = report.per_condition.get(condition)
            cells.append(f"{score.accuracy:.3f} ({score.total})" if score else "—")
        cells.append(f"{report.speaker_accuracy:.3f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.voice_accuracy", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "episodes", nargs="+", type=Path, help="episode folders (episode.mp4 + truth.csv)"
    )
    parser.add_argument("--json", type=Path, help="also write every per-condition score here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    embedder = LineEmbedder()
    reports = []
    for folder in args.episodes:
        began = time.monotonic()
        try:
            reports.append(voice_accuracy(folder, embedder=embedder))
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{folder}: scored in {time.monotonic() - began:.1f} s", file=sys.stderr)
    print(markdown_table(reports))
    if args.json is not None:
        from foundation.atomic import atomic_write_json

        atomic_write_json(args.json, [report.to_dict() for report in reports])
        print(json.dumps({"written": str(args.json)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
