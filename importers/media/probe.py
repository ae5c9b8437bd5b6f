"""What a media file holds, read without decoding it: streams, codecs, duration, frame rate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from importers.media.container import (
    MediaError,
    audio_stream,
    codec_name,
    media_duration,
    open_media,
    require_decoder,
    video_stream,
)


@dataclass(frozen=True)
class MediaInfo:
    """What the pipeline needs to know about a file before cutting it."""

    path: Path
    duration: float
    has_audio: bool
    has_video: bool
    width: int | None
    height: int | None
    fps: float | None
    audio_codec: str | None
    video_codec: str | None


def probe_media(path: str | Path, *, audio_track: int | None = None) -> MediaInfo:
    """Read a file's streams and duration without decoding it.

    audio_track : the stream index of the audio track to use (see :func:`decode_audio`);
        None: the default one.
    Raises MediaError for a missing file, one FFmpeg cannot parse, one without audio or
    video, and one whose chosen audio or video stream this FFmpeg cannot decode.
    """
    path = Path(path)
    with open_media(path) as container:
        video = video_stream(container)
        audio = audio_stream(path, container, audio_track)
        if video is None and audio is None:
            raise MediaError(path, "no audio or video stream")
        for stream, kind in ((video, "video"), (audio, "audio")):
            if stream is not None:
                require_decoder(path, stream, kind)
        duration = media_duration(container, (video, audio))
        fps = None
        if video is not None:
            rate = video.average_rate or video.guessed_rate or video.base_rate
            fps = float(rate) if rate else None
        return MediaInfo(
            path=path,
            duration=duration,
            has_audio=audio is not None,
            has_video=video is not None,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            fps=fps,
            audio_codec=codec_name(audio) if audio is not None else None,
            video_codec=codec_name(video) if video is not None else None,
        )
