"""Issue 12 row 6: a 1 MB subtitle line of ``<i``, ``{\\``, ``<rt>``, ``<``, ``<v a`` or ``{``
took over 60 s to parse (regexes scanning to the end of the line from every position), and an
import with such a line was killed at 120 s. The regexes' repeats are now bounded, so parsing
is linear in the line's length. These tests parse real files with such lines (200 KB: minutes
for the old quadratic regexes) and check the file's other cues come through intact; the speed
itself is in the closing note of the issue, not asserted here.
"""

from __future__ import annotations

import pytest

from importers.subtitles import parse_subtitles

UNITS = ["<i", "{\\", "<rt>", "<", "<v a", "{", "<font ", "<rp>x"]
SIZE = 200_000


def srt(text: str) -> str:
    return (
        f"1\n00:00:01,000 --> 00:00:02,000\n{text}\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\nHello there.\n"
    )


@pytest.mark.parametrize("unit", UNITS)
def test_a_huge_line_of_tag_starts_parses_and_spares_the_rest(tmp_path, unit):
    path = tmp_path / "hostile.srt"
    path.write_text(srt(unit * (SIZE // len(unit))), encoding="utf-8")
    parsed = parse_subtitles(path)
    assert [line.text for line in parsed.lines][-1] == "Hello there."


@pytest.mark.parametrize("unit", UNITS)
def test_a_huge_webvtt_line_parses(tmp_path, unit):
    path = tmp_path / "hostile.vtt"
    body = unit * (SIZE // len(unit))
    path.write_text(
        f"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n{body}\n\n"
        "00:00:03.000 --> 00:00:04.000\n<v Mika>Hello there.\n",
        encoding="utf-8",
    )
    parsed = parse_subtitles(path)
    assert parsed.lines[-1].text == "Hello there."


@pytest.mark.parametrize("unit", ["{", "{\\", "{\\k", "<i"])
def test_a_huge_ass_event_parses(tmp_path, unit):
    path = tmp_path / "hostile.ass"
    body = unit * (SIZE // len(unit))
    path.write_text(
        "[Script Info]\nScriptType: v4.00+\n\n[Events]\n"
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        f"Dialogue: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,{body}\n"
        "Dialogue: 0,0:00:03.00,0:00:04.00,Default,Mika,0,0,0,,Hello there.\n",
        encoding="utf-8",
    )
    parsed = parse_subtitles(path)
    assert [line.text for line in parsed.lines] == ["Hello there."]
    (skipped,) = parsed.skipped
    assert skipped.source_line == 6 and "at most 20000" in skipped.reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<i>in italics</i>", "in italics"),
        ('<font color="#ffcc00" face="Noto Sans CJK">colour</font>', "colour"),
        ("漢字<ruby>漢<rt>かん</rt></ruby>", "漢字漢"),
        ("{\\an8}on top", "on top"),
    ],
)
def test_ordinary_tags_are_still_removed(tmp_path, text, expected):
    path = tmp_path / "tags.srt"
    path.write_text(srt(text), encoding="utf-8")
    assert parse_subtitles(path).lines[0].text == expected
