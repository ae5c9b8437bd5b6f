"""Issue 12 row 7: an 11 KB MKV whose audio timestamps jump asked for 59.6 GiB of silence and
ended in a traceback; a 30,000 s jump took 1.95 GB. Decoding now refuses, with one line naming
the file, to fill a gap the file cannot hold; ordinary small gaps are still filled."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from importers.media import MediaError, decode_audio

RATE = 16000
FRAME = 1600  # 0.1 s


def mkv_with_audio_at(path: Path, starts_s: list[float]) -> Path:
    """A real Matroska file with one 0.1 s tone frame of 16 kHz PCM at each given time."""
    with av.open(str(path), "w", format="matroska") as output:
        stream = output.add_stream("pcm_s16le", rate=RATE, layout="mono")
        stream.time_base = Fraction(1, RATE)
        tone = (np.sin(np.arange(FRAME) / RATE * 2 * np.pi * 440) * 8000).astype(np.int16)
        for start in starts_s:
            frame = av.AudioFrame.from_ndarray(tone[None, :], format="s16", layout="mono")
            frame.sample_rate = RATE
            frame.pts = round(start * RATE)
            frame.time_base = stream.time_base
            for packet in stream.encode(frame):
                # Matroska counts in milliseconds; stamp the packet there, as a muxer would.
                packet.time_base = Fraction(1, 1000)
                packet.pts = packet.dts = round(start * 1000)
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return path


@pytest.mark.parametrize(
    "starts",
    [
        [0.0, 0.1, 0.2, 30_000.0],  # a 30,000 s jump
        [0.0, 0.1, 1_000_000.0],  # the 59.6 GiB one: 11.6 days
        [0.0, 0.1, 700.0],  # a gap longer than any lost packets leave
    ],
)
def test_a_timestamp_jump_is_a_one_line_error_not_gigabytes(tmp_path, starts):
    path = mkv_with_audio_at(tmp_path / "jump.mkv", starts)
    assert path.stat().st_size < 100_000
    with pytest.raises(MediaError) as error:
        decode_audio(path)
    message = str(error.value)
    assert message.startswith(f"{path}: audio timestamps jump to")
    assert "\n" not in message


def test_a_small_gap_is_still_filled_with_silence(tmp_path):
    path = mkv_with_audio_at(tmp_path / "gap.mkv", [0.0, 0.1, 5.0])
    audio = decode_audio(path)
    assert len(audio) == pytest.approx(5.1 * RATE, abs=RATE // 100)
    assert np.abs(audio[int(0.5 * RATE) : int(4.5 * RATE)]).max() == 0.0
    assert np.abs(audio[int(5.02 * RATE) : int(5.08 * RATE)]).max() > 0.1
