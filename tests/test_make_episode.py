import csv
import json
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pysubs2
import pytest

from bench import voices
from bench.episode_spec import HARD, PRESETS, STANDARD, TINY, EpisodeSpec, HardConditions
from bench.make_episode import ONE_WORD_MAX_S, TRUTH_COLUMNS, build_cast, main, make_episode
from bench.script_writer import CHARACTER_NAMES, dialogue_line, line_counts, write_script

KNOWN_CONDITIONS = {
    "clean",
    "reverb",
    "one_word",
    "cut_by_next",
    "offscreen",
    "two_on_screen",
    "jitter",
    "shout",
    "whisper",
    "shared_voice",
}

needs_voices = pytest.mark.skipif(
    not voices.available_voices(allow_mbrola=False),
    reason="no flite, festival or espeak-ng installed",
)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """The tiny preset, generated once per test session (licence-clean voices only)."""
    if not voices.available_voices(allow_mbrola=False):
        pytest.skip("no flite, festival or espeak-ng installed")
    folder = tmp_path_factory.mktemp("tiny") / "episode"
    make_episode("tiny", seed=1, out_dir=folder, allow_mbrola=False)
    return folder


def _truth(folder: Path) -> list[dict[str, str]]:
    with (folder / "truth.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _spec(folder: Path) -> dict:
    return json.loads((folder / "spec.json").read_text(encoding="utf-8"))


def _conditions(row: dict[str, str]) -> set[str]:
    return set(row["condition"].split(";"))


# --- the tiny episode -----------------------------------------------------------------------


def test_tiny_writes_the_four_files(tiny):
    assert sorted(path.name for path in tiny.iterdir()) == [
        "episode.mp4",
        "episode.srt",
        "spec.json",
        "truth.csv",
    ]
    assert (tiny / "truth.csv").read_text(encoding="utf-8").splitlines()[0] == ",".join(
        TRUTH_COLUMNS
    )


def test_tiny_is_deterministic_for_a_seed(tiny, tmp_path, monkeypatch):
    # A fresh voice cache, so the rerun synthesises again instead of reading the first run's.
    monkeypatch.setenv("SG_VOICE_CACHE", str(tmp_path / "voice-cache"))
    again = make_episode("tiny", seed=1, out_dir=tmp_path / "again", allow_mbrola=False)
    for name in ("truth.csv", "episode.srt", "spec.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tiny / name).read_bytes(), name
    assert again.audio_sha256 == _spec(tiny)["audio_sha256"]
    assert len(again.audio_sha256) == 64


def test_subtitles_and_truth_agree_cue_for_cue(tiny):
    rows = _truth(tiny)
    subs = pysubs2.load(str(tiny / "episode.srt"))
    assert len(subs) == len(rows) == TINY.lines
    for number, (row, event) in enumerate(zip(rows, subs, strict=True), start=1):
        assert int(row["index"]) == number
        assert round(float(row["start"]) * 1000) == event.start
        assert round(float(row["end"]) * 1000) == event.end
        assert event.end > event.start
    starts = [event.start for event in subs]
    assert starts == sorted(starts)
    texts = [line["text"] for line in _spec(tiny)["lines_detail"]]
    assert [event.plaintext for event in subs] == texts


def test_every_character_of_the_spec_speaks(tiny):
    rows = _truth(tiny)
    cast = _spec(tiny)["cast"]
    assert len(cast) == TINY.characters
    assert {row["character"] for row in rows} == {member["name"] for member in cast}
    for member in cast:
        spoken = [row for row in rows if row["character"] == member["name"]]
        assert len(spoken) == member["lines"]
        assert {row["speaker"] for row in spoken} == {member["speaker"]}


def test_tiny_records_every_switched_on_condition(tiny):
    recorded = set().union(*(_conditions(row) for row in _truth(tiny)))
    beds = {name for name in recorded if name.startswith(("music_", "noise_"))}
    assert beds and beds <= {"music_10db", "noise_10db"}
    assert recorded - beds <= KNOWN_CONDITIONS
    expected = KNOWN_CONDITIONS - {"shared_voice"}  # tiny has no actor playing two roles
    assert expected <= recorded


def test_clean_is_recorded_only_alone(tiny):
    for row in _truth(tiny):
        conditions = _conditions(row)
        assert "clean" not in conditions or conditions == {"clean"}


def test_a_cut_line_ends_where_the_next_begins(tiny):
    rows = _truth(tiny)
    cut = [i for i, row in enumerate(rows) if "cut_by_next" in _conditions(row)]
    assert cut
    detail = _spec(tiny)["lines_detail"]
    for i in cut:
        jittered = "jitter" in _conditions(rows[i]) | _conditions(rows[i + 1])
        assert jittered or rows[i]["end"] == rows[i + 1]["start"]
        # The voice really is interrupted: the next voice starts where this one stops.
        assert detail[i]["speech_end"] == pytest.approx(detail[i + 1]["speech_start"], abs=1e-3)


def test_one_word_lines_are_short(tiny):
    rows = _truth(tiny)
    detail = _spec(tiny)["lines_detail"]
    one_word = [i for i, row in enumerate(rows) if "one_word" in _conditions(row)]
    assert one_word
    for i in one_word:
        assert len(detail[i]["text"].split()) == 1
        assert detail[i]["speech_end"] - detail[i]["speech_start"] < ONE_WORD_MAX_S


def test_tiny_is_h264_and_aac_and_under_a_minute(tiny):
    with av.open(str(tiny / "episode.mp4")) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert (video.codec_context.width, video.codec_context.height) == (640, 360)
        assert audio.codec_context.name == "aac"
        duration = container.duration / av.time_base
    assert duration <= 60.0
    assert float(_truth(tiny)[-1]["end"]) < duration


def test_line_audio_is_the_assigned_voice(tiny):
    """Each undisturbed line, cut from the encoded MP4, sounds nearest its own character."""
    from bench.voice_accuracy import LineEmbedder, decode_audio

    spec = _spec(tiny)
    pool = {voice.key: voice for voice in voices.available_voices(allow_mbrola=False)}
    reference_text = (
        "The quick brown fox jumps over the lazy dog. We met at the station after school, "
        "and nobody knew where the old key had gone."
    )
    names, references = [], []
    for member in spec["cast"]:
        delivery = voices.Delivery(pitch_semitones=member["pitch_semitones"], tempo=member["tempo"])
        references.append(
            voices.synthesize(pool[member["speaker"]], reference_text, delivery=delivery)
        )
        names.append(member["name"])
    audio = decode_audio(tiny / "episode.mp4")
    disturbing = {
        "reverb",
        "one_word",
        "whisper",
        "shout",
        "cut_by_next",
        "music_10db",
        "noise_10db",
    }
    chosen = [
        (row["character"], detail)
        for row, detail in zip(_truth(tiny), spec["lines_detail"], strict=True)
        if not _conditions(row) & disturbing
    ]
    assert len(chosen) >= 5
    clips = [
        audio[round(detail["speech_start"] * 16000) : round(detail["speech_end"] * 16000)]
        for _, detail in chosen
    ]
    embedder = LineEmbedder()
    reference_embeddings = embedder.embed(references)
    line_embeddings = embedder.embed(clips)
    nearest = np.argmax(line_embeddings @ reference_embeddings.T, axis=1)
    assert [names[i] for i in nearest] == [character for character, _ in chosen]


def test_cli_writes_ass_with_the_same_truth(tiny, tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(
            ["--preset", "tiny", "--seed", "1", "--out", str(out), "--format", "ass", "--no-mbrola"]
        )
        == 0
    )
    assert "20 lines" in capsys.readouterr().out
    assert (out / "truth.csv").read_bytes() == (tiny / "truth.csv").read_bytes()
    text = (out / "episode.ass").read_text(encoding="utf-8")
    for section in ("[Script Info]", "[V4+ Styles]", "[Events]", "Style: Default"):
        assert section in text
    subs = pysubs2.load(str(out / "episode.ass"))
    rows = _truth(out)
    assert [(event.start, event.end) for event in subs] == [
        (round(float(row["start"]) * 1000), round(float(row["end"]) * 1000)) for row in rows
    ]


@needs_voices
@pytest.mark.slow
def test_a_season_keeps_its_cast_across_episodes(tmp_path):
    season = replace(TINY, preset="tiny-season", episodes=2, lines=8, scene_lines=(4, 4))
    first = make_episode(season, seed=3, out_dir=tmp_path, allow_mbrola=False)
    assert first.folder == tmp_path / "ep01"
    specs = [_spec(tmp_path / name) for name in ("ep01", "ep02")]

    def identity(spec: dict) -> list:
        return [(m["name"], m["speaker"], m["pitch_semitones"], m["look"]) for m in spec["cast"]]

    assert identity(specs[0]) == identity(specs[1])
    assert specs[0]["audio_sha256"] != specs[1]["audio_sha256"]
    season_json = json.loads((tmp_path / "season.json").read_text(encoding="utf-8"))
    assert season_json["episodes"] == ["ep01", "ep02"]


# --- cast, script and spec (no audio) ---------------------------------------------------------


@needs_voices
def test_one_actor_plays_two_characters_in_the_hard_cast():
    cast = build_cast(HARD, seed=5, allow_mbrola=False)
    assert len(cast) == HARD.characters
    by_actor: dict[str, list] = {}
    for character in cast:
        by_actor.setdefault(character.speaker, []).append(character)
    shared = [roles for roles in by_actor.values() if len(roles) > 1]
    assert len(shared) == HARD.conditions.shared_voices
    first, second = shared[0][:2]
    assert first.shared_voice and second.shared_voice
    assert abs(first.pitch_semitones - second.pitch_semitones) >= 3.0
    assert first.look != second.look
    assert first.name != second.name


@needs_voices
def test_the_cast_depends_on_the_seed_only():
    assert build_cast(STANDARD, seed=2, allow_mbrola=False) == build_cast(
        STANDARD, seed=2, allow_mbrola=False
    )
    assert build_cast(STANDARD, seed=2, allow_mbrola=False) != build_cast(
        STANDARD, seed=3, allow_mbrola=False
    )


@pytest.mark.parametrize("preset", ["tiny", "standard", "hard"])
def test_line_counts_have_a_long_tail(preset):
    spec = PRESETS[preset]
    counts = line_counts(spec.characters, spec.lines, np.random.default_rng(0))
    assert sum(counts) == spec.lines
    assert min(counts) >= 1
    leads = 2 if spec.characters <= 5 else 3
    assert sum(counts[:leads]) > 0.6 * spec.lines
    assert all(count <= 10 for count in counts[-max(1, (spec.characters - leads) // 2) :])


@pytest.mark.parametrize("preset", ["tiny", "standard", "hard"])
def test_the_script_gives_every_character_its_lines(preset):
    spec = PRESETS[preset]
    rng = np.random.default_rng(7)
    counts = line_counts(spec.characters, spec.lines, rng)
    scenes = write_script(
        names=CHARACTER_NAMES[: spec.characters],
        counts=counts,
        conditions=spec.conditions,
        scene_lines=spec.scene_lines,
        words_per_line=spec.words_per_line,
        rng=rng,
    )
    lines = [line for scene in scenes for line in scene.lines]
    assert [sum(line.character == c for line in lines) for c in range(spec.characters)] == counts
    for line in lines:
        assert not (line.shout and line.whisper)
        assert line.framing != "two" or line.partner not in (None, line.character)
        assert not line.one_word or len(line.text.split()) == 1
    assert all(not scene.lines[-1].cut_by_next for scene in scenes)
    snrs = {scene.snr_db for scene in scenes if scene.bed}
    assert snrs == set(spec.conditions.snr_db)


def test_the_script_differs_between_seeds():
    def texts(seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        return [dialogue_line(rng) for _ in range(5)]

    assert texts(1) == texts(1)
    assert texts(1) != texts(2)


@pytest.mark.parametrize("words", [(2, 4), (3, 14), (10, 12)])
def test_dialogue_lines_have_the_asked_length(words):
    rng = np.random.default_rng(0)
    lengths = {len(dialogue_line(rng, words=words).split()) for _ in range(200)}
    assert min(lengths) >= words[0]
    assert max(lengths) <= words[1]


def test_hard_switches_on_what_standard_keeps_rare():
    assert HARD.conditions.shared_voices >= 1 and STANDARD.conditions.shared_voices == 0
    assert min(HARD.conditions.snr_db) == 0
    for share in ("bed_scene_share", "offscreen_share", "one_word_share", "jitter_share"):
        assert getattr(HARD.conditions, share) > getattr(STANDARD.conditions, share)
    assert PRESETS["season"].episodes == 6


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_spec_round_trips_through_json(preset):
    spec = PRESETS[preset]
    assert EpisodeSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"preset": "x", "characters": 4, "lines": 20, "colour": 1},
            "unknown episode spec keys: colour",
        ),
        ({"preset": "x", "characters": 1, "lines": 20}, "characters must be within"),
        ({"preset": "x", "characters": 6, "lines": 5}, "lines .5. must be at least characters"),
        ({"preset": "x", "characters": 4, "lines": 20, "width": 641}, "must be even"),
        (
            {"preset": "x", "characters": 4, "lines": 20, "conditions": {"noise": 1}},
            "unknown hard-condition keys: noise",
        ),
    ],
)
def test_a_bad_spec_is_refused(data, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSpec.from_dict(data)


def test_a_share_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="one_word_share must be within"):
        HardConditions(one_word_share=1.5)


def test_an_unknown_preset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        make_episode("huge", seed=1, out_dir=tmp_path)
