"""One-pass media cutting: every line's clip and frames from one decode of the episode.

An episode has hundreds of subtitle lines. Starting FFmpeg once per line, or seeking once per
frame, costs a process start or a keyframe-to-target decode for every line; decoding the file
once and cutting in memory costs one decode in all (docs/architecture.md §6; the figures are in
bench/README.md, "Import speed"). So:

- :func:`decode_audio` decodes the whole audio track once to 16 kHz mono float32, and
  :func:`slice_clip` cuts each line's clip out of that array;
- :func:`extract_frames` walks the video stream once, in order, and keeps the frames the
  caller asked for. Between requests it skips decoding frames nothing depends on, and it
  seeks over stretches longer than a keyframe interval instead of decoding through them.

Everything decodes with PyAV's bundled FFmpeg, so no system ffmpeg is needed. Times are in
seconds from the start of the file's timeline (the container's start time), which is what
subtitle timestamps are relative to.

Modules: `probe` (what a file holds), `audio` (decode once, slice per line, WAV), `frames`
(keyframe-interval walks, JPEGs), and `container` (opening files and reading packets, shared by
the other three and by `importers.tracks`).
"""

from importers.media.audio import (
    ClipOptions,
    decode_audio,
    from_pcm16,
    slice_clip,
    to_pcm16,
    wav_bytes,
    write_wav,
)
from importers.media.container import MediaError
from importers.media.frames import (
    DEFAULT_SKIP_LOOP_FILTER,
    LOOP_FILTER_SKIPS,
    FrameCallback,
    extract_frames,
    keyframe_index,
    plan_walks,
    usable_cores,
)
from importers.media.probe import MediaInfo, probe_media

__all__ = [
    "DEFAULT_SKIP_LOOP_FILTER",
    "LOOP_FILTER_SKIPS",
    "ClipOptions",
    "FrameCallback",
    "MediaError",
    "MediaInfo",
    "decode_audio",
    "extract_frames",
    "from_pcm16",
    "keyframe_index",
    "plan_walks",
    "probe_media",
    "slice_clip",
    "to_pcm16",
    "usable_cores",
    "wav_bytes",
    "write_wav",
]
