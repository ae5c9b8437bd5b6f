"""What leaves the project: speaker-tagged subtitles, a CSV of lines, a per-speaker clip dataset.

Every exporter takes the same rows, `SpeakerLine`, so one list of lines (from the offline
``group`` command or from a Label Studio project, :mod:`exporters.label_studio_export`) feeds
every format the same way (docs/style.md). The writers live in their own modules:

- :mod:`exporters.tagged_subtitles`: ``write_tagged_srt(rows, path)``,
  ``write_tagged_ass(rows, path, source=None)``;
- :mod:`exporters.table`: ``write_table(rows, path)``;
- :mod:`exporters.clip_dataset`: ``write_clip_dataset(rows, out_dir)``, ``safe_path_names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from foundation.layout import make_line_id

__all__ = ["SOURCE_ANNOTATION", "SOURCE_PREDICTION", "SpeakerLine"]

SOURCE_ANNOTATION = "annotation"
SOURCE_PREDICTION = "prediction"


@dataclass(frozen=True)
class SpeakerLine:
    """One subtitle line and who speaks it; ``speaker`` None means nobody is named (yet)."""

    index: int  # 1-based cue number, as the importer numbers lines (docs/architecture.md §3)
    start: float  # seconds
    end: float  # seconds
    text: str
    speaker: str | None
    episode: str = ""
    source: str = ""  # where the speaker came from: "annotation", "prediction" or "" (unknown)
    flags: tuple[str, ...] = ()  # annotators' flags, e.g. "Two speakers", "Not speech"
    source_line: int | None = None  # 1-based line of the subtitle file where the cue starts
    clip: Path | None = None  # the line's audio clip (importer's audio/0001.wav), when known

    @property
    def line_id(self) -> str:
        return make_line_id(self.episode, self.index)
