"""Subtitle parsing: real files written here, in the encodings and shapes fansubs really use."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from importers.subtitles import (
    FLAG_CLAMPED,
    FLAG_NON_DIALOGUE,
    FLAG_OVERLAP,
    FLAG_TWO_SPEAKERS,
    ParsedSubtitles,
    SubtitleError,
    SubtitleOptions,
    find_subtitles_for,
    parse_subtitles,
)

# Everyday dialogue, so the encoding detector sees the character statistics of real subtitles.
ZH_HANS = [
    "你今天怎么这么晚才回来？",
    "路上堵车了，我也没办法。",
    "饭已经凉了，我再给你热一下。",
    "不用了，我在公司吃过了。",
    "你最近总是加班，身体要紧啊。",
    "我知道，等这个项目做完就好了。",
    "妈妈昨天打电话来，问我们什么时候回家。",
    "下个月吧，过年的时候一起回去。",
    "对了，小明的成绩单出来了。",
    "考得怎么样？数学及格了吗？",
    "比上次好多了，老师还表扬了他。",
    "那就好，周末带他去公园玩吧。",
]
ZH_HANT = [
    "你今天怎麼這麼晚才回來？",
    "路上塞車了，我也沒辦法。",
    "飯已經涼了，我再幫你熱一下。",
    "不用了，我在公司吃過了。",
    "你最近總是加班，身體要緊啊。",
    "我知道，等這個專案做完就好了。",
    "媽媽昨天打電話來，問我們什麼時候回家。",
    "下個月吧，過年的時候一起回去。",
    "對了，小明的成績單出來了。",
    "考得怎麼樣？數學及格了嗎？",
    "比上次好多了，老師還稱讚了他。",
    "那就好，週末帶他去公園玩吧。",
]
JA = [
    "おはよう！今日は早いね。",
    "うん、朝練があるんだ。",
    "そっか、大会まであと一週間だもんね。",
    "絶対に優勝してみせるよ。",
    "無理しないでね。怪我したら大変だから。",
    "分かってるって。心配しすぎだよ。",
    "あ、先生が来た！早く座って！",
    "今日の授業はここまで。宿題を忘れないように。",
    "ねえ、放課後に駅前のカフェに行かない？",
    "いいね！新しいケーキが出たらしいよ。",
    "じゃあ、四時に校門の前で待ち合わせね。",
    "遅れたらジュースおごりだからね。",
]
KO = [
    "오늘 왜 이렇게 늦게 들어왔어?",
    "길이 너무 막혀서 어쩔 수 없었어.",
    "밥 다 식었어. 다시 데워 줄게.",
    "괜찮아, 회사에서 먹고 왔어.",
    "요즘 계속 야근하잖아. 건강 챙겨야지.",
    "알아, 이번 프로젝트만 끝나면 괜찮아질 거야.",
    "어제 엄마한테서 전화 왔었어.",
    "다음 달에 설날 때 같이 가자.",
    "밖에 비 올 것 같아. 우산 챙겨.",
    "내일 아침 일곱 시에 깨워 줘.",
    "주말에 같이 영화 보러 갈래?",
    "좋아, 표는 내가 예매할게.",
]


def srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def ass_time(seconds: float) -> str:
    cs = round(seconds * 100)
    return f"{cs // 360_000}:{cs // 6000 % 60:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}"


def srt_document(texts: list[str], spacing: float = 3.0) -> str:
    blocks = [
        f"{n}\n{srt_time(n * spacing)} --> {srt_time(n * spacing + 2)}\n{text}\n"
        for n, text in enumerate(texts, start=1)
    ]
    return "\n".join(blocks)


ASS_HEADER = """[Script Info]
ScriptType: v4.00+
PlayResX: 1920
PlayResY: 1080

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, \
Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, \
Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,60,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,2,1,2,\
10,10,10,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""


FIRST_EVENT_LINE = ASS_HEADER.count("\n") + 1  # 1-based line of the first event written after it


def dialogue(start: float, end: float, text: str, style: str = "Default", actor: str = "") -> str:
    return f"Dialogue: 0,{ass_time(start)},{ass_time(end)},{style},{actor},0,0,0,,{text}"


def ass_document(events: list[str]) -> str:
    return ASS_HEADER + "\n".join(events) + "\n"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def texts(parsed: ParsedSubtitles) -> list[str]:
    return [line.text for line in parsed.lines]


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("codec", "sample", "expected"),
    [
        ("utf-8", ZH_HANS, "utf_8"),
        ("utf-8-sig", JA, "utf_8"),
        ("utf-16", ZH_HANS, "utf_16"),  # Python writes the BOM, little-endian here
        ("utf-16-be", JA, "utf_16"),  # BOM added by hand below
        ("gb18030", ZH_HANS, "gb18030"),
        ("gbk", ZH_HANS, "gb18030"),
        ("big5", ZH_HANT, "big5"),
        ("shift_jis", JA, "shift_jis"),
    ],
)
def test_detects_fansub_encodings_on_twelve_cues(tmp_path, codec, sample, expected):
    document = srt_document(sample)
    data = document.encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data
    path = tmp_path / "episode.srt"
    path.write_bytes(data)

    parsed = parse_subtitles(path)

    assert parsed.encoding == expected
    assert texts(parsed) == sample
    assert [line.source_line for line in parsed.lines] == [1 + 4 * n for n in range(12)]


def test_windows_only_shift_jis_characters_decode_as_cp932(tmp_path):
    sample = [*JA[:11], "①番線に電車が参ります。"]  # "①" exists only in Microsoft's CP932
    path = write(tmp_path, "ep.srt", srt_document(sample), "cp932")

    parsed = parse_subtitles(path)

    assert parsed.encoding == "cp932"
    assert texts(parsed) == sample


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_short_shift_jis_file_is_not_read_as_korean(tmp_path, count):
    # Regression: charset-normalizer alone ranks CP949 first for many 2-9 cue Japanese files.
    sample = JA[:count]
    path = write(tmp_path, "ep.srt", srt_document(sample), "shift_jis")

    assert texts(parse_subtitles(path)) == sample


def test_random_short_cjk_files_decode_from_two_cues_up(tmp_path):
    rng = random.Random(7)
    for codec, sample in [("gbk", ZH_HANS), ("big5", ZH_HANT), ("shift_jis", JA)]:
        for _ in range(10):
            chosen = [rng.choice(sample) for _ in range(rng.randint(2, 6))]
            path = write(tmp_path, "ep.srt", srt_document(chosen), codec)
            assert texts(parse_subtitles(path)) == chosen, codec


def test_korean_cp949_still_decodes(tmp_path):
    path = write(tmp_path, "ep.srt", srt_document(KO), "cp949")

    assert texts(parse_subtitles(path)) == KO


def test_forced_encoding_is_used_and_reported(tmp_path):
    path = write(tmp_path, "ep.srt", srt_document(ZH_HANT), "big5")

    parsed = parse_subtitles(path, options={"encoding": "cp950"})

    assert parsed.encoding == "cp950"
    assert texts(parsed) == ZH_HANT


def test_wrong_forced_encoding_is_one_line_error(tmp_path):
    path = write(tmp_path, "ep.srt", srt_document(ZH_HANS), "gbk")

    with pytest.raises(SubtitleError, match=r"ep\.srt: cannot decode as utf_8"):
        parse_subtitles(path, options=SubtitleOptions(encoding="utf-8"))


def test_ass_in_utf16_with_bom(tmp_path):
    events = [dialogue(1 + n, 2 + n, text) for n, text in enumerate(JA)]
    path = write(tmp_path, "ep.ass", ass_document(events), "utf-16")

    parsed = parse_subtitles(path)

    assert (parsed.format, parsed.encoding) == ("ass", "utf_16")
    assert texts(parsed) == JA


# --------------------------------------------------------------------------- SubRip

GOOD_BEFORE = "1\n00:00:01,000 --> 00:00:02,000\nFirst good line.\n"
GOOD_AFTER = "3\n00:00:05,000 --> 00:00:06,000\nLast good line.\n"


@pytest.mark.parametrize(
    ("bad_block", "reason"),
    [
        (
            "2\n00:00:0x,000 --> 00:00:04,000\nBroken start.\n",
            r"unparsable timestamp '00:00:0x,000'",
        ),
        ("2\n00:00:03,000 --> 00:00:04\nNo millis.\n", r"unparsable timestamp '00:00:04'"),
        ("2\n00:00:04,000 --> 00:00:03,000\nBackwards.\n", r"end 00:00:03,000 is not after start"),
        ("2\n00:00:03,000 --> 00:00:03,000\nZero length.\n", r"is not after start 00:00:03,000"),
        ("2\n00:00:03,000 --> 00:00:04,000\n<i></i> {\\an8}\n", r"empty text"),
        ("2\n00:00:03,000 -> 00:00:04,000\nNo arrow.\n", r"no '-->' timing line"),
        ("2\n00:00:03,000 --> 00:00:04,000 --> 00:00:05,000\nTwo arrows.\n", "unparsable timing"),
    ],
)
def test_bad_srt_cue_is_reported_with_its_line_and_the_rest_import(tmp_path, bad_block, reason):
    path = write(tmp_path, "ep.srt", "\n".join([GOOD_BEFORE, bad_block, GOOD_AFTER]))

    parsed = parse_subtitles(path)

    assert texts(parsed) == ["First good line.", "Last good line."]
    assert [line.source_line for line in parsed.lines] == [1, 9]
    assert [line.index for line in parsed.lines] == [1, 2]
    [skipped] = parsed.skipped
    assert skipped.source_line == 5
    assert skipped.text != ""
    assert re.search(reason, skipped.reason), skipped.reason
    assert parsed.report_lines()[0].startswith(f"{path}:5: ")


def test_every_bad_cue_in_one_file_is_reported_not_just_the_first(tmp_path):
    document = (
        "1\n00:00:01,000 --> 00:00:02,000\nOne.\n\n"  # line 1
        "2\n00:00:bad --> 00:00:03,000\nTwo.\n\n"  # line 5
        "3\n00:00:04,000 --> 00:00:03,500\nThree.\n\n"  # line 9
        "4\n00:00:05,000 --> 00:00:06,000\nFour.\n\n"  # line 13
        "5\n00:00:07,000 --> 00:00:07,000\nFive.\n\n"  # line 17
        "6\n00:00:08,000 --> 00:00:09,000\nSix.\n"  # line 21
    )
    parsed = parse_subtitles(write(tmp_path, "ep.srt", document))

    assert texts(parsed) == ["One.", "Four.", "Six."]
    assert [line.source_line for line in parsed.lines] == [1, 13, 21]
    assert [cue.source_line for cue in parsed.skipped] == [5, 9, 17]


def test_cues_past_the_media_are_skipped_and_overhanging_end_is_clamped(tmp_path):
    document = srt_document(["Early.", "Overhangs the end.", "After the end."], spacing=4.0)
    # cues: 4-6 s, 8-10 s, 12-14 s; media lasts 9 s
    parsed = parse_subtitles(write(tmp_path, "ep.srt", document), media_duration=9.0)

    assert texts(parsed) == ["Early.", "Overhangs the end."]
    assert parsed.lines[1].end == 9.0
    assert parsed.lines[1].flags == {FLAG_CLAMPED}
    assert parsed.lines[0].flags == frozenset()
    [skipped] = parsed.skipped
    assert skipped.source_line == 9
    assert "at or after the end of the media (00:00:09,000)" in skipped.reason
    assert f"{parsed.path}:5: end clamped to the media's duration" in parsed.report_lines()


def test_cue_starting_exactly_at_media_end_is_skipped(tmp_path):
    document = srt_document(["Inside.", "At the end."], spacing=3.0)  # 3-5 s, 6-8 s
    parsed = parse_subtitles(write(tmp_path, "ep.srt", document), media_duration=6.0)

    assert texts(parsed) == ["Inside."]
    assert [cue.source_line for cue in parsed.skipped] == [5]


def test_srt_without_blank_lines_or_numbers_still_splits_with_line_numbers(tmp_path):
    document = (
        "1\n00:00:01,000 --> 00:00:02,000\nOne.\n"  # lines 1-3
        "2\n00:00:03,000 --> 00:00:04,000\nTwo,\nstill two.\n"  # lines 4-7
        "00:00:05,000 --> 00:00:06,000\nThree has no number.\n"  # line 8
    )
    parsed = parse_subtitles(write(tmp_path, "ep.srt", document))

    assert texts(parsed) == ["One.", "Two, still two.", "Three has no number."]
    assert [line.source_line for line in parsed.lines] == [1, 4, 8]


def test_blank_line_inside_a_cue_continues_it(tmp_path):
    document = (
        "1\n00:00:01,000 --> 00:00:02,000\nFirst half\n\nsecond half.\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\nNext.\n"
    )
    parsed = parse_subtitles(write(tmp_path, "ep.srt", document))

    assert texts(parsed) == ["First half second half.", "Next."]
    assert [line.source_line for line in parsed.lines] == [1, 7]


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_windows_and_old_mac_line_endings_keep_line_numbers(tmp_path, newline):
    document = srt_document(["One.", "Two.", "Three."]).replace("\n", newline)
    parsed = parse_subtitles(write(tmp_path, "ep.srt", document))

    assert texts(parsed) == ["One.", "Two.", "Three."]
    assert [line.source_line for line in parsed.lines] == [1, 5, 9]


def test_srt_formatting_is_stripped_but_text_in_braces_and_hearts_stay(tmp_path):
    cues = [
        "<i>Italic</i> and <b>bold</b>",
        '<font color="#ffff00">Yellow</font> text',
        "{\\an8}On top\\Nsecond line",
        "{laughs} I <3 you",
        "Two\nlines",
    ]
    parsed = parse_subtitles(write(tmp_path, "ep.srt", srt_document(cues)))

    assert texts(parsed) == [
        "Italic and bold",
        "Yellow text",
        "On top second line",
        "{laughs} I <3 you",
        "Two lines",
    ]


def test_srt_fractions_and_display_coordinates(tmp_path):
    document = (
        "1\n00:00:01,5 --> 00:00:02.25\nShort fractions are decimals.\n\n"
        "2\n00:00:03,000 --> 00:00:04,000 X1:100 X2:600 Y1:20 Y2:80\nWith coordinates.\n"
    )
    parsed = parse_subtitles(write(tmp_path, "ep.srt", document))

    assert [(line.start, line.end) for line in parsed.lines] == [(1.5, 2.25), (3.0, 4.0)]


def test_lines_are_indexed_in_time_order_not_file_order(tmp_path):
    document = (
        "1\n00:00:05,000 --> 00:00:06,000\nLater.\n\n"
        "2\n00:00:01,000 --> 00:00:02,000\nEarlier.\n\n"
        "3\n00:00:01,000 --> 00:00:01,500\nEarliest end.\n"
    )
    parsed = parse_subtitles(write(tmp_path, "ep.srt", document))

    assert texts(parsed) == ["Earliest end.", "Earlier.", "Later."]
    assert [line.index for line in parsed.lines] == [1, 2, 3]
    assert [line.source_line for line in parsed.lines] == [9, 5, 1]


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("text", "two_speakers"),
    [
        ("- Hi!\n- Hello.", True),
        ("-Hi! -Hello.", True),
        ("- Ready? - Yes.", True),
        ("Hi!\n- Hello.", True),
        ("－你好！\n－再见。", True),
        ("– Where? – Here.", True),
        ("Well - I mean it.", False),
        ("I was going to—", False),
        ("-5 degrees outside.", False),
        ("- I said - no, wait.", False),
        ("Hello\nthere.", False),
        ("——等一下！", False),
    ],
)
def test_dash_dialogue_is_flagged_two_speakers(tmp_path, text, two_speakers):
    parsed = parse_subtitles(write(tmp_path, "ep.srt", srt_document([text])))

    assert (FLAG_TWO_SPEAKERS in parsed.lines[0].flags) is two_speakers


def test_overlaps_are_kept_and_flagged_but_touching_lines_are_not(tmp_path):
    document = "\n".join(
        f"{n}\n{srt_time(start)} --> {srt_time(end)}\nLine {n}.\n"
        for n, (start, end) in enumerate(
            [(1, 3), (2, 4), (4, 5), (10, 20), (12, 13), (15, 16), (30, 31)], start=1
        )
    )
    parsed = parse_subtitles(write(tmp_path, "ep.srt", document))

    overlapping = [FLAG_OVERLAP in line.flags for line in parsed.lines]
    assert overlapping == [True, True, False, True, True, True, False]
    assert len(parsed.lines) == 7


# --------------------------------------------------------------------------- ASS / SSA


def test_signs_songs_and_karaoke_are_kept_apart_by_default(tmp_path):
    events = [
        dialogue(1, 3, "{\\i1}Who's there?{\\i0}", actor="Ed"),
        dialogue(1, 3, "{\\an8\\pos(960,100)}Tokyo Station", style="Sign"),
        dialogue(2, 4, "Kimi no koe ga", style="OP-Romaji"),
        dialogue(2, 4, "Your voice is", style="ED_English"),
        dialogue(5, 6, "{\\k20}ko{\\k30}no{\\kf40}mi{\\ko10}chi"),
        dialogue(7, 9, "It's me.", style="Default"),
    ]
    parsed = parse_subtitles(write(tmp_path, "ep.ass", ass_document(events)))

    assert texts(parsed) == ["Who's there?", "It's me."]
    assert [line.actor for line in parsed.lines] == ["Ed", None]
    assert [line.text for line in parsed.non_dialogue] == [
        "Tokyo Station",
        "Kimi no koe ga",
        "Your voice is",
        "konomichi",
    ]
    assert all(line.flags == {FLAG_NON_DIALOGUE} for line in parsed.non_dialogue)
    # A sign on screen while someone talks is not an overlap of voices.
    assert FLAG_OVERLAP not in parsed.lines[0].flags
    assert any("left out 4 sign/song line(s)" in line for line in parsed.report_lines())


def test_import_non_dialogue_adds_them_flagged_in_time_order(tmp_path):
    events = [
        dialogue(1, 2, "Hello."),
        dialogue(1.5, 2.5, "Sign text", style="Sign"),
        dialogue(3, 4, "Bye."),
    ]
    parsed = parse_subtitles(
        write(tmp_path, "ep.ass", ass_document(events)), options={"import_non_dialogue": True}
    )

    assert texts(parsed) == ["Hello.", "Sign text", "Bye."]
    assert [line.index for line in parsed.lines] == [1, 2, 3]
    assert FLAG_NON_DIALOGUE in parsed.lines[1].flags
    assert parsed.non_dialogue == []


NON_DIALOGUE_STYLE_NAMES = [
    "OP", "ED", "op", "OP-Romaji", "OP_Kanji", "OPRomaji", "EDkara", "Kara-OP", "Karaoke",
    "Song", "Insert Song", "InsertSong", "Sign", "Signs", "Sign_Top", "sign2", "Title",
    "EpisodeTitle", "TL Note", "TLnote", "Note", "Opening", "Ending", "Typeset", "Eyecatch",
    "Preview", "歌词", "注释", "OP日文",
]  # fmt: skip
DIALOGUE_STYLE_NAMES = [
    "Default", "Main", "Top", "Default-Top", "Italics", "Flashback", "Ed", "Edward", "Opal",
    "Subtitle", "Karasu", "Thoughts", "Narrator", "Alt", "Overlap", "Design", "Dialogue",
    "Red", "Speed", "中文", "对白",
]  # fmt: skip


def test_style_names_sort_into_signs_and_songs_versus_speech(tmp_path):
    names = NON_DIALOGUE_STYLE_NAMES + DIALOGUE_STYLE_NAMES
    events = [dialogue(n, n + 0.5, f"line {n}", style=name) for n, name in enumerate(names)]
    parsed = parse_subtitles(write(tmp_path, "ep.ass", ass_document(events)))

    assert [line.style for line in parsed.non_dialogue] == NON_DIALOGUE_STYLE_NAMES
    assert [line.style for line in parsed.lines] == DIALOGUE_STYLE_NAMES


def test_actor_field_can_mark_a_sign(tmp_path):
    events = [dialogue(1, 2, "EXIT", actor="Sign"), dialogue(3, 4, "Run!", actor="Ed")]
    parsed = parse_subtitles(write(tmp_path, "ep.ass", ass_document(events)))

    assert texts(parsed) == ["Run!"]
    assert [line.actor for line in parsed.non_dialogue] == ["Sign"]


def test_custom_non_dialogue_patterns_replace_the_defaults(tmp_path):
    events = [dialogue(1, 2, "Long ago...", style="Narrator"), dialogue(3, 4, "EXIT", style="Sign")]
    parsed = parse_subtitles(
        write(tmp_path, "ep.ass", ass_document(events)),
        options={"non_dialogue_styles": [r"^narr"]},
    )

    assert texts(parsed) == ["EXIT"]
    assert [line.style for line in parsed.non_dialogue] == ["Narrator"]


def test_drawings_are_dropped_and_text_beside_them_kept(tmp_path):
    events = [
        dialogue(1, 2, "{\\p1}m 0 0 l 100 0 100 100 0 100{\\p0}"),
        dialogue(3, 4, "{\\p2}m 0 0 l 5 5{\\p0}Real words"),
        dialogue(5, 6, "{\\pos(10,10)\\bord2}Position tags are not drawings"),
    ]
    parsed = parse_subtitles(write(tmp_path, "ep.ass", ass_document(events)))

    assert texts(parsed) == ["Real words", "Position tags are not drawings"]
    assert parsed.drawings_dropped == 1
    assert parsed.skipped == []


def test_ass_text_markup_and_comments(tmp_path):
    events = [
        "Comment: 0,0:00:00.00,0:00:05.00,Default,,0,0,0,,translator's comment",
        dialogue(1, 2, "{\\fad(200,200)}First\\NSecond{\\i1}line{\\i0}"),
        dialogue(3, 4, "Hard\\hspace and <i>html</i>"),
        dialogue(5, 6, "{\\an8}"),
    ]
    parsed = parse_subtitles(write(tmp_path, "ep.ass", ass_document(events)))

    assert texts(parsed) == ["First Secondline", "Hard space and html"]
    assert [line.source_line for line in parsed.lines] == [
        FIRST_EVENT_LINE + 1,
        FIRST_EVENT_LINE + 2,
    ]
    [empty] = parsed.skipped
    assert (empty.source_line, empty.reason) == (
        FIRST_EVENT_LINE + 3,
        "empty text after removing formatting",
    )


def test_bad_dialogue_lines_are_reported_and_the_rest_import(tmp_path):
    events = [
        dialogue(1, 2, "Good one."),
        "Dialogue: 0,0:00:0x.00,0:00:04.00,Default,,0,0,0,,Bad start.",
        "Dialogue: 0,0:00:05.00,Default,Too few fields",
        dialogue(7, 6, "Backwards."),
        dialogue(8, 9, "Good two, with, commas."),
    ]
    parsed = parse_subtitles(write(tmp_path, "ep.ass", ass_document(events)))

    assert texts(parsed) == ["Good one.", "Good two, with, commas."]
    assert [line.source_line for line in parsed.lines] == [FIRST_EVENT_LINE, FIRST_EVENT_LINE + 4]
    reasons = [(cue.source_line - FIRST_EVENT_LINE, cue.reason) for cue in parsed.skipped]
    assert reasons == [
        (1, "unparsable timestamp '0:00:0x.00'"),
        (2, "malformed Dialogue line: 4 fields where Format names 10"),
        (3, "end 00:00:06.000 is not after start 00:00:07.000"),
    ]


def test_format_line_field_order_is_honoured(tmp_path):
    document = ASS_HEADER.replace(
        "Format: Layer, Start, End, Style, Name,", "Format: Layer, Style, Name, Start, End,"
    )
    document += "Dialogue: 0,Default,Kyon,0:00:01.00,0:00:02.00,0,0,0,,Reordered.\n"
    parsed = parse_subtitles(write(tmp_path, "ep.ass", document))

    [line] = parsed.lines
    assert (line.start, line.end, line.actor, line.text) == (1.0, 2.0, "Kyon", "Reordered.")


def test_ssa_v4_file(tmp_path):
    document = (
        "[Script Info]\nScriptType: v4.00\n\n[V4 Styles]\n"
        "Format: Name, Fontname, Fontsize\nStyle: Default,Arial,20\n\n[Events]\n"
        "Format: Marked, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        "Dialogue: Marked=0,0:00:01.00,0:00:02.50,Default,,0000,0000,0000,,Old format.\n"
    )
    parsed = parse_subtitles(write(tmp_path, "ep.ssa", document))

    assert parsed.format == "ssa"
    assert [(line.start, line.end, line.text) for line in parsed.lines] == [
        (1.0, 2.5, "Old format.")
    ]


def test_layered_duplicates_are_merged_and_counted(tmp_path):
    events = [
        dialogue(1, 2, "{\\blur3\\bord6}Same words", style="Default"),
        dialogue(1, 2, "{\\bord0}Same words", style="Default"),
        dialogue(1, 2, "Same words", style="Sign"),
        dialogue(3, 4, "Different."),
    ]
    path = write(tmp_path, "ep.ass", ass_document(events))

    merged = parse_subtitles(path)
    unmerged = parse_subtitles(path, options={"merge_duplicates": False})

    assert texts(merged) == ["Same words", "Different."]
    assert merged.duplicates_merged == 2
    assert merged.non_dialogue == []
    assert FLAG_OVERLAP not in merged.lines[0].flags
    assert texts(unmerged) == ["Same words", "Same words", "Different."]
    assert unmerged.duplicates_merged == 0
    assert FLAG_OVERLAP in unmerged.lines[0].flags


def test_spoken_copy_survives_when_it_comes_after_a_sign_copy(tmp_path):
    events = [dialogue(1, 2, "Hey!", style="Sign"), dialogue(1, 2, "Hey!", style="Default")]
    parsed = parse_subtitles(write(tmp_path, "ep.ass", ass_document(events)))

    assert [(line.style, line.source_line) for line in parsed.lines] == [
        ("Default", FIRST_EVENT_LINE + 1)
    ]
    assert parsed.duplicates_merged == 1


# --------------------------------------------------------------------------- WebVTT

WEBVTT_DOCUMENT = """WEBVTT - Episode 1
Kind: captions
Language: en

NOTE This note spans
two lines and must not leak into text.

STYLE
::cue { color: yellow }

intro
00:01.000 --> 00:02.500 align:start position:10% line:0
<v Roger Bingham><i>We are</i> in New York &amp; live

2
00:00:03.000 --> 00:00:04.000
<c.yellow.bg_blue>Hello</c> <00:00:03.500>world,
<ruby>漢字<rt>かんじ</rt></ruby> &lt;3

00:00:05.000 --> 00:00:0x.000
Bad timestamp.

00:00:07.000 --> 00:00:08.000
<v.loud Mary>Last one.
"""


def test_webvtt_cues_with_settings_voices_and_tags(tmp_path):
    parsed = parse_subtitles(write(tmp_path, "ep.vtt", WEBVTT_DOCUMENT))

    assert parsed.format == "vtt"
    assert texts(parsed) == ["We are in New York & live", "Hello world, 漢字 <3", "Last one."]
    assert [line.actor for line in parsed.lines] == ["Roger Bingham", None, "Mary"]
    assert [(line.start, line.end) for line in parsed.lines] == [(1.0, 2.5), (3.0, 4.0), (7.0, 8.0)]
    # WebVTT cues are located by their timing line.
    assert [line.source_line for line in parsed.lines] == [12, 16, 23]
    [bad] = parsed.skipped
    assert (bad.source_line, bad.reason) == (20, "unparsable timestamp '00:00:0x.000'")


def test_format_comes_from_content_before_extension(tmp_path):
    srt_named_txt = write(tmp_path, "ep.txt", srt_document(["Plain."]))
    vtt_named_srt = write(tmp_path, "other.srt", "WEBVTT\n\n00:01.000 --> 00:02.000\nVTT.\n")
    ass_named_srt = write(tmp_path, "third.srt", ass_document([dialogue(1, 2, "ASS.")]))

    assert parse_subtitles(srt_named_txt).format == "srt"
    assert parse_subtitles(vtt_named_srt).format == "vtt"
    assert parse_subtitles(ass_named_srt).format == "ass"


# --------------------------------------------------------------------------- whole-file errors


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("noise.srt", random.Random(3).randbytes(4096), r"cannot detect a text encoding"),
        ("image.srt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, r"cannot detect|NUL"),
        ("zeros.srt", bytes(2048), r"NUL characters"),
        ("notes.srt", b"Just some notes,\nnothing timed here.\n", r"not a subtitle file"),
        ("blank.srt", b"\n\n  \n", r"file is empty"),
    ],
)
def test_whole_file_failures_raise_one_line_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(SubtitleError, match=reason) as caught:
        parse_subtitles(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(SubtitleError, match=r"missing\.srt: cannot read"):
        parse_subtitles(tmp_path / "missing.srt")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"import_signs": True}, r"unknown subtitle option\(s\) \['import_signs'\]"),
        ({"non_dialogue_styles": ["(unclosed"]}, r"bad regex '\(unclosed'"),
    ],
)
def test_bad_options_name_the_bad_value(tmp_path, options, error):
    path = write(tmp_path, "ep.srt", srt_document(["Hi."]))

    with pytest.raises(ValueError, match=error):
        parse_subtitles(path, options=options)


# --------------------------------------------------------------------------- finding the file


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_text("x")


VIDEO_STEM = "[Group] Show - 01 [1080p]"  # brackets: glob would read them as patterns


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ([".srt", ".ass"], ".ass"),
        ([".zh.ass", ".vtt"], ".vtt"),
        ([".chs.ass"], ".chs.ass"),
        ([".en.forced.srt", ".en.srt"], ".en.srt"),
        ([".SRT"], ".SRT"),
        ([".5.srt"], None),  # episode 1.5, not a language tag
        ([], None),
    ],
)
def test_find_subtitles_beside_the_video(tmp_path, present, expected):
    video = tmp_path / f"{VIDEO_STEM}.mkv"
    touch(tmp_path, video.name, "Show - 02.srt", "Show.srt", *(VIDEO_STEM + s for s in present))

    found = find_subtitles_for(video)

    assert found == (tmp_path / f"{VIDEO_STEM}{expected}" if expected else None)


def test_find_subtitles_for_a_video_in_a_missing_folder(tmp_path):
    assert find_subtitles_for(tmp_path / "nowhere" / "ep.mkv") is None
