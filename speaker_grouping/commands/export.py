"""Export a Label Studio project: speaker-tagged SRT/ASS, a CSV and a per-speaker clip dataset.

Writes into OUT: ``<episode>.srt`` and ``<episode>.ass`` per episode, ``lines.csv`` and
``lines.parquet`` for the whole project, and ``clips/<speaker>/*.wav`` with
``clips/metadata.csv`` (Hugging Face's audiofolder layout).

The clips are found without options for a project ``import --push`` filled: its local-files
storages lead to the import folders (`exporters.label_studio_export.find_import_folders`);
``--media-root``/``--document-root`` are for media that moved or projects imported otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from speaker_grouping.commands.label_studio_options import add_label_studio_options

if TYPE_CHECKING:
    from exporters.label_studio_export import EpisodeExport

FORMATS = ("srt", "ass", "csv", "parquet", "clips")
DOCUMENT_ROOT_ENV = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_label_studio_options(parser)
    parser.add_argument("--project", required=True, help="project title or id")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--format",
        default=",".join(FORMATS),
        help=f"comma-separated, any of {','.join(FORMATS)} (default: all)",
    )
    parser.add_argument(
        "--media-root",
        type=Path,
        help="folder holding the import folders (<media-root>/<episode>/audio/0001.wav), to "
        "find clips and the original subtitles (default: the folders the project's local "
        "storages point at, as `import --push` creates them)",
    )
    parser.add_argument(
        "--document-root",
        type=Path,
        default=os.environ.get(DOCUMENT_ROOT_ENV) or None,
        help=f"Label Studio's local-files document root, to resolve /data/local-files/?d= "
        f"URLs (default: ${DOCUMENT_ROOT_ENV})",
    )
    parser.add_argument(
        "--include-predictions",
        action="store_true",
        help="lines nobody annotated take the backend's prediction (column source=prediction)",
    )
    parser.add_argument(
        "--include-unnamed",
        action="store_true",
        help="also put lines named 'Unknown' or a placeholder 'Speaker N' into the clip dataset "
        "(default: left out, as they would train a voice on a mixture of speakers)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def parse_formats(text: str) -> list[str]:
    formats = [item.strip().lower() for item in text.split(",") if item.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(
            f"--format {text!r}: unknown format(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(FORMATS)}"
        )
    return [name for name in FORMATS if name in formats]


def run(args: argparse.Namespace) -> int:
    formats = parse_formats(args.format)
    if not args.url:
        raise ValueError("--url is needed (or LABEL_STUDIO_URL)")
    if not args.api_key:
        raise ValueError("--api-key is needed (or LABEL_STUDIO_API_KEY)")
    for name, folder in (
        ("--media-root", args.media_root),
        ("--document-root", args.document_root),
    ):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{name} {folder}: no such folder")

    from exporters.clip_dataset import safe_path_names, write_clip_dataset
    from exporters.label_studio_export import read_project
    from exporters.table import write_table, write_table_parquet
    from exporters.tagged_subtitles import write_tagged_srt
    from label_config import is_unnamed_speaker
    from speaker_grouping.progress import ProgressBars

    exported = read_project(
        url=args.url,
        api_key=args.api_key,
        project=args.project,
        include_predictions=args.include_predictions,
        include_unnamed=args.include_unnamed,
        media_root=args.media_root,
        document_root=args.document_root,
    )
    if not exported.episodes:
        raise ValueError(f"project {exported.title!r} (id {exported.project_id}) has no lines")
    if "clips" in formats:
        wanted = [
            line
            for line in exported.lines
            if line.speaker and (args.include_unnamed or not is_unnamed_speaker(line.speaker))
        ]
        if wanted and all(line.clip is None for line in wanted):
            raise FileNotFoundError(
                f"clips: none of the {len(wanted)} named lines' clips was found: the project's "
                "local storages lead to no import folder on this machine; give --media-root "
                f"(the folder holding the import folders) or --document-root (or "
                f"${DOCUMENT_ROOT_ENV}), or leave clips out of --format"
            )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    file_names = safe_path_names(exported.episodes)
    written: list[str] = []
    with ProgressBars(disable=True if args.quiet else None) as bars:
        for done, (episode, part) in enumerate(exported.episodes.items(), start=1):
            stem = out / file_names[episode]
            if "srt" in formats:
                write_tagged_srt(part.lines, stem.with_name(stem.name + ".srt"))
            if "ass" in formats:
                _write_ass(part, stem.with_name(stem.name + ".ass"))
            bars("episodes", completed=done, total=len(exported.episodes))
        if "csv" in formats:
            write_table(exported.lines, out / "lines.csv")
            written.append(str(out / "lines.csv"))
        if "parquet" in formats:
            write_table_parquet(exported.lines, out / "lines.parquet")
            written.append(str(out / "lines.parquet"))
        if "clips" in formats:
            clips = write_clip_dataset(
                exported.lines,
                out / "clips",
                include_unnamed=args.include_unnamed,
                hook=bars,
            )
    for name in ("srt", "ass"):
        if name in formats:
            written.append(f"{out}/*.{name} ({len(exported.episodes)} episode(s))")

    lines = exported.lines
    print(
        f"project {exported.title!r} (id {exported.project_id}): {len(lines)} lines in "
        f"{len(exported.episodes)} episode(s); {exported.count('annotation')} named by "
        f"annotators, {exported.count('prediction')} by predictions, "
        f"{exported.flagged} flagged (not one speaker), "
        f"{sum(1 for line in lines if not line.speaker)} without a speaker"
    )
    for item in written:
        print(f"wrote {item}")
    if "clips" in formats:
        print(
            f"wrote {clips.clips_written} clips for {len(clips.per_speaker)} speaker(s) "
            f"under {out / 'clips'} ({clips.metadata_path.name}; loads with "
            f"datasets.load_dataset('audiofolder', data_dir=...))"
        )
        if clips.placeholders_left_out:
            print(
                f"left out {clips.placeholders_left_out} line(s) named only by a placeholder "
                "(Unknown, Speaker N); --include-unnamed keeps them"
            )
        if clips.missing_clips:
            print(
                f"warning: {len(clips.missing_clips)} clip(s) not found, e.g. "
                f"{clips.missing_clips[0]}; check --media-root/--document-root",
                file=sys.stderr,
            )
    return 0


def _write_ass(part: EpisodeExport, path: Path) -> None:
    """Into the original ASS when it is there and matches; else a plain ASS.

    An episode imported from SRT or WebVTT has no styles to keep, so its plain ASS is the
    expected result and needs no note; a note says only why an ASS original was not used.
    """
    from exporters.tagged_subtitles import write_tagged_ass
    from importers.subtitles import SubtitleError

    source = part.subtitles
    if source is not None and source.suffix.lower() in (".ass", ".ssa"):
        try:
            write_tagged_ass(part.lines, path, source)
            return
        except SubtitleError as error:
            reason = str(error)
    elif source is not None:
        write_tagged_ass(part.lines, path)
        return
    else:
        reason = "original subtitles not found"
    print(f"note: {part.episode}: {reason}; its .ass has default styles", file=sys.stderr)
    write_tagged_ass(part.lines, path)
