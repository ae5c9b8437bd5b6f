"""One episode made ready for grouping: its import, then its features. Every caller goes
through `prepare_episode`: ``speaker-grouping import`` and ``group``, the demo, a season runner
(once per episode with one shared `FeatureExtractor`) and the benchmark's episode cache.

The feature pass runs during the media pass: `importers.pipeline.import_episode` hands every
clip and frame to the extractor's `FeatureFeed` as it writes them, so nothing is read back
from disk, the image workers embed frames while the frame walk decodes, and the voice encoder
and the VAD start on the queued clips as soon as the last frame is in (see
`ml_backend.features.feed.DURING_MEDIA` for why not sooner). The sequential order (media
first, then `FeatureExtractor.extract` on the folder) stays available as ``overlap=False``:
it is what ``speaker-grouping features`` does, and the benchmark's baseline. Both write the
same ``features.npz``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from foundation.hook import Hook
    from importers.asr import Transcriber
    from importers.pipeline import ImportOptions, ImportResult
    from ml_backend.features.extractor import ExtractionReport, FeatureExtractor


@dataclass(frozen=True)
class PreparedEpisode:
    """The media import's result, and the feature pass's report (None when not run: no
    extractor, or an episode without lines)."""

    media: ImportResult
    features: ExtractionReport | None


def prepare_episode(
    video: str | Path,
    out_dir: str | Path,
    subtitles: str | Path | None = None,
    options: ImportOptions | Mapping[str, Any] | None = None,
    extractor: FeatureExtractor | None = None,
    hook: Hook | None = None,
    *,
    overlap: bool = True,
    batch_size: int = 32,
    transcriber: Transcriber | None = None,
) -> PreparedEpisode:
    """Import ``video`` into ``out_dir/<episode_id>/`` and, with an ``extractor``, its features.

    The models start loading once the inputs are known to be good, on a thread of their own.
    hook : the import's steps (``clips``, ``frames``) and the features' (``quality``,
        ``voice``, ``image``; sequentially also ``hash``), from several threads.
    overlap : False runs the feature pass after the media pass, from the files.
    transcriber : fills the text of lines cut from detected speech (``import --asr``).

    Raises what `import_episode` and the embedders raise, in one line. A failure of either
    pass stops both, and ``features.npz`` is then left as it was (it is written atomically,
    at the end).
    """
    from importers.pipeline import import_episode

    arguments = {
        "out_dir": out_dir,
        "subtitles": subtitles,
        "options": options,
        "transcriber": transcriber,
    }
    if extractor is None:
        return PreparedEpisode(import_episode(video, hook=hook, **arguments), None)
    if not overlap:
        result = import_episode(video, hook=_loading_models(extractor, hook), **arguments)
        if not result.tasks:
            return PreparedEpisode(result, None)
        report = extractor.extract(result.episode_dir, batch_size=batch_size, hook=hook)
        return PreparedEpisode(result, report)

    feed = extractor.feed(batch_size=batch_size, hook=hook)
    try:
        result = import_episode(video, hook=hook, sink=feed, **arguments)
        if not result.tasks:
            feed.abort()
            return PreparedEpisode(result, None)
        return PreparedEpisode(result, extractor.report(result.episode_dir, feed.finish()))
    except BaseException:
        feed.abort()
        raise


def _loading_models(extractor: FeatureExtractor, hook: Hook | None) -> Hook:
    """``hook``, which also starts loading the models at the import's first report: by then
    the inputs have been checked, so the load is not wasted on a bad file."""

    def loading(step: str, *, completed: int, total: int) -> None:
        extractor.start_loading()
        if hook is not None:
            hook(step, completed=completed, total=total)

    return loading
