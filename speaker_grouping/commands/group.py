"""Group an episode's (or a season's) lines by speaker offline, without Label Studio.

For a team that wants speaker-tagged subtitles or a CSV straight away, or a first look before
setting up annotation: import, features and grouping run in one go, and a few known lines
(``--labels``) are enough to turn numbered speakers (``Speaker N``) into character names.
Several episodes given together are grouped as one season, so a character keeps one name
across them.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from foundation.layout import line_index, make_line_id

LABEL_COLUMNS = ("index", "speaker")


@dataclass(frozen=True)
class EpisodeInput:
    """One episode to group: its video, its subtitles and where its import landed."""

    video: Path
    subtitles: Path
    episode_id: str
    import_dir: Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "episodes", type=Path, nargs="+", help="video file(s); several = one season"
    )
    parser.add_argument(
        "--subs",
        type=Path,
        action="append",
        help="subtitle file, once per episode in the same order (default: found beside each)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        help="CSV of known lines: index,speaker (plus an episode column — the video's file "
        "name or stem — when grouping several episodes)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--work",
        type=Path,
        help="where clips, frames and features are kept (default: OUT/import); reused by "
        "a second run, so only changed lines are computed again",
    )
    parser.add_argument(
        "--voice-model", help="voice embedder (default: $SG_VOICE_MODEL or resemblyzer)"
    )
    parser.add_argument(
        "--image-model", help="image embedder (default: $SG_IMAGE_MODEL or anime-colour)"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--no-subtitles",
        action="store_true",
        help="ignore any subtitles: cut lines from detected speech (silero-vad), with empty text",
    )
    source.add_argument(
        "--fallback-to-speech",
        action="store_true",
        help="cut lines from detected speech for episodes without subtitles instead of failing",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from exporters.tagged_subtitles import SpeakerLine, write_tagged_ass, write_tagged_srt
    from foundation.atomic import atomic_write_text
    from importers.pipeline import ImportOptions
    from ml_backend.episode_lines import load_lines
    from ml_backend.features.extractor import FeatureExtractor
    from ml_backend.features.prepare import prepare_episode
    from ml_backend.grouping import SpeakerGrouper
    from speaker_grouping.progress import ProgressBars

    if args.no_subtitles and args.subs:
        raise ValueError("--no-subtitles and --subs contradict each other; give one")
    subtitles = _pair_subtitles(args.episodes, args.subs)
    line_source = (
        "speech"
        if args.no_subtitles
        else "subtitles-or-speech"
        if args.fallback_to_speech
        else "subtitles"
    )
    work = args.work or args.out / "import"
    extractor = FeatureExtractor.build(args.voice_model, args.image_model)
    inputs: list[EpisodeInput] = []
    try:
        with ProgressBars(disable=True if args.quiet else None) as bars:
            for video, subs in zip(args.episodes, subtitles, strict=True):
                # media first, then features from the files (overlap=False): what this command
                # has always done, so that its output does not depend on the import's threads
                imported = prepare_episode(
                    video,
                    work,
                    subs,
                    ImportOptions(line_source=line_source),
                    extractor,
                    bars,
                    overlap=False,
                ).media
                for problem in imported.problems:
                    print(problem, file=sys.stderr)
                inputs.append(
                    EpisodeInput(
                        video=video,
                        subtitles=imported.subtitles.path,
                        episode_id=imported.episode_id,
                        import_dir=imported.episode_dir,
                    )
                )
    finally:
        extractor.close()
    lines = load_lines([episode.import_dir for episode in inputs])
    labels = read_labels(args.labels, inputs) if args.labels else {}
    grouper = SpeakerGrouper()
    if labels:
        grouper.fit(lines, labels)
    proposals = grouper.propose(lines, labels).proposals

    args.out.mkdir(parents=True, exist_ok=True)
    by_line = {proposal.line_id: proposal for proposal in proposals}
    for episode in inputs:
        rows = [
            (index, by_line[line_id])
            for index, line_id in enumerate(lines.line_ids)
            if lines.episodes[index] == episode.episode_id
        ]
        speaker_lines = [
            SpeakerLine(
                index=int(line_id_index(proposal.line_id)),
                start=float(lines.starts[position]),
                end=float(lines.ends[position]),
                text=lines.texts[position],
                speaker=proposal.speaker or "",
            )
            for position, proposal in rows
        ]
        stem = episode.video.stem
        table = _csv_text(speaker_lines, [proposal for _, proposal in rows])
        atomic_write_text(args.out / f"{stem}.speakers.csv", table)
        write_tagged_srt(speaker_lines, args.out / f"{stem}.speakers.srt")
        if episode.subtitles.suffix.lower() in {".ass", ".ssa"}:
            write_tagged_ass(
                speaker_lines, args.out / f"{stem}.speakers.ass", source=episode.subtitles
            )
        assigned = sum(1 for _, proposal in rows if proposal.speaker)
        print(
            f"{stem}: {len(rows)} lines, {assigned} with a speaker → {args.out}/{stem}.speakers.*"
        )
    clusters = {proposal.cluster for proposal in proposals if proposal.cluster >= 0}
    print(f"{len(clusters)} speakers proposed over {len(proposals)} lines")
    return 0


def line_id_index(line_id: str) -> int:
    """The cue number at the end of a ``<episode_id>:<index>`` line id."""
    return line_index(line_id)


def read_labels(path: Path, episodes: Sequence[EpisodeInput]) -> dict[str, str]:
    """Known lines of a labels CSV as ``line_id -> speaker``; one-line errors name the row."""
    by_name: dict[str, EpisodeInput] = {}
    for episode in episodes:
        for key in (episode.video.name, episode.video.stem, episode.episode_id):
            by_name[key] = episode
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as error:
        raise FileNotFoundError(f"{path}: cannot read labels ({error.strerror})") from None
    labels: dict[str, str] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = [name for name in LABEL_COLUMNS if name not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}:1: labels need the columns {', '.join(missing)}")
        has_episode = "episode" in (reader.fieldnames or ())
        if len(episodes) > 1 and not has_episode:
            raise ValueError(f"{path}:1: labels for several episodes need an episode column")
        for row in reader:
            line = reader.line_num
            episode = episodes[0]
            if has_episode and (row.get("episode") or "").strip():
                key = row["episode"].strip()
                if key not in by_name:
                    raise ValueError(f"{path}:{line}: unknown episode {key!r}")
                episode = by_name[key]
            try:
                index = int((row["index"] or "").strip())
            except ValueError:
                raise ValueError(f"{path}:{line}: index {row['index']!r} is not a number") from None
            speaker = (row["speaker"] or "").strip()
            if speaker:
                labels[make_line_id(episode.episode_id, index)] = speaker
    return labels


def _pair_subtitles(videos: Sequence[Path], subs: Sequence[Path] | None) -> list[Path | None]:
    if not subs:
        return [None] * len(videos)
    if len(subs) != len(videos):
        raise ValueError(f"{len(videos)} episodes but {len(subs)} --subs: give one per episode")
    return list(subs)


def _csv_text(lines: Sequence[object], proposals: Sequence[object]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "start", "end", "text", "speaker", "score", "cluster"])
    for line, proposal in zip(lines, proposals, strict=True):
        writer.writerow(
            [
                line.index,
                f"{line.start:.3f}",
                f"{line.end:.3f}",
                line.text,
                line.speaker,
                f"{proposal.score:.4f}",
                proposal.cluster,
            ]
        )
    return buffer.getvalue()
