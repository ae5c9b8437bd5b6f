import numpy as np
import pytest

from bench.voice_accuracy import (
    TruthRow,
    cut_clips,
    markdown_table,
    nearest_other,
    read_truth,
    score_episode,
)


def _row(index: int, character: str, conditions: str = "clean", speaker: str = "") -> TruthRow:
    return TruthRow(
        index=index,
        start=float(index),
        end=index + 0.5,
        speaker=speaker or f"voice:{character}",
        character=character,
        conditions=tuple(conditions.split(";")),
    )


def _unit(vectors: list[list[float]]) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_nearest_other_never_picks_the_line_itself():
    embeddings = _unit([[1, 0], [0.9, 0.1], [0, 1]])
    assert nearest_other(embeddings).tolist() == [1, 0, 1]


def test_scores_are_split_by_condition_and_singletons_are_not_scored():
    rows = [
        _row(1, "Aoi"),
        _row(2, "Aoi", "music_5db"),
        _row(3, "Ren"),
        _row(4, "Ren", "music_5db;one_word"),
        _row(5, "Mei"),  # speaks once: no right neighbour exists
        _row(6, "Ren"),
    ]
    # Line 4 (Ren) sits nearest Aoi's lines: one miss, under music_5db and one_word.
    embeddings = _unit(
        [[1, 0, 0], [0.95, 0.05, 0], [0, 1, 0], [0.9, 0.0, 0.1], [0, 0, 1], [0.05, 1, 0]]
    )
    report = score_episode(rows, embeddings, episode="ep")
    assert report.lines == 6
    assert report.scored == 5
    assert report.character_accuracy == pytest.approx(4 / 5)
    assert report.per_condition["clean"].accuracy == 1.0
    assert (report.per_condition["music_5db"].correct, report.per_condition["music_5db"].total) == (
        1,
        2,
    )
    assert report.per_condition["one_word"].accuracy == 0.0


def test_one_actor_for_two_characters_counts_as_right_only_for_the_actor():
    rows = [
        _row(1, "Aoi", speaker="flite:awb"),
        _row(2, "Ren", speaker="flite:awb"),
        _row(3, "Aoi", speaker="flite:awb"),
        _row(4, "Ren", speaker="flite:awb"),
    ]
    embeddings = _unit([[1, 0], [0.99, 0.01], [0, 1], [0.01, 0.99]])
    report = score_episode(rows, embeddings)
    assert report.character_accuracy == 0.0
    assert report.speaker_accuracy == 1.0


def test_clips_are_cut_at_the_subtitle_times():
    audio = np.arange(100, dtype=np.float32)
    rows = [
        TruthRow(1, 0.1, 0.2, "s", "c", ("clean",)),
        TruthRow(2, 0.95, 2.0, "s", "c", ("clean",)),
    ]
    clips = cut_clips(audio, rows, sample_rate=100)
    assert clips[0].tolist() == list(range(10, 20))
    assert clips[1].tolist() == list(range(95, 100))


def test_a_bad_truth_row_names_the_file_and_line(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text(
        "index,start,end,speaker,character,condition\n1,0.5,1.0,a,Aoi,clean\n2,soon,2.0,a,Aoi,clean\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"truth\.csv:3: bad truth row"):
        read_truth(path)


def test_a_truth_file_needs_the_right_header(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text("index,start,end,who\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match="header must be index,start,end,speaker,character,condition"
    ):
        read_truth(path)


def test_the_table_shows_missing_conditions_as_a_dash():
    rows = [_row(1, "Aoi"), _row(2, "Aoi"), _row(3, "Ren"), _row(4, "Ren")]
    report = score_episode(rows, _unit([[1, 0], [1, 0.1], [0, 1], [0.1, 1]]), episode="ep")
    table = markdown_table([report])
    assert "| ep | 4 | 1.000 (4) | 1.000 (4) | — | — | — | 1.000 |" in table
