"""`speaker-grouping eval TRUTH.csv PRED.csv`: joins, output and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from speaker_grouping.cli import main

TRUTH = """index,start,end,speaker,character,condition
1,0.0,1.0,voice_a,Aoi,clean
2,1.0,2.0,voice_a,Aoi,clean
3,2.0,3.0,voice_b,Ren,clean
4,3.0,4.0,voice_b,Ren,one_word
5,4.0,5.0,voice_c,Mei,clean
"""

# what `group` writes: index,start,end,text,speaker,score,cluster; line 5 unassigned
PRED = """index,start,end,text,speaker,score,cluster
1,0.0,1.0,hi,Speaker 1,0.9,1
2,1.0,2.0,"yes, me",Speaker 1,0.8,1
3,2.0,3.0,no,Speaker 2,0.7,2
4,3.0,4.0,ok,Speaker 1,0.4,1
5,4.0,5.0,hm,,0.1,-1
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _eval_json(capsys, *argv: str) -> dict:
    assert main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_scores_a_group_csv(tmp_path, capsys):
    truth, pred = _write(tmp_path, "truth.csv", TRUTH), _write(tmp_path, "pred.csv", PRED)
    scores = _eval_json(capsys, str(truth), str(pred))
    # clusters {1,2,4} {3}, line 5 unassigned. Predicted pairs C(3,2) = 3, correct (1,2) = 1;
    # true pairs (1,2) (3,4) = 2 -> P 1/3, R 1/2
    assert scores["edge"]["precision"] == pytest.approx(1 / 3)
    assert scores["edge"]["recall"] == pytest.approx(1 / 2)
    assert scores["coverage"] == pytest.approx(4 / 5)
    # cluster 1 -> Aoi (remove line 4), cluster 2 -> Ren; adds = 1 removed + 1 unassigned
    assert scores["operations"] == {
        "removals": 1,
        "adds": 2,
        "merges": 0,
        "names": 2,
        "total": 5,
        "per_100_lines": 100.0,
    }
    assert scores["missing_predictions"] == 0


def test_prints_a_table(tmp_path, capsys):
    truth, pred = _write(tmp_path, "truth.csv", TRUTH), _write(tmp_path, "pred.csv", PRED)
    assert main(["eval", str(truth), str(pred)]) == 0
    out = capsys.readouterr().out
    assert "edge" in out and "BCubed" in out and "coverage 80.0%" in out
    assert "5 per 100" not in out and "(100.0 per 100 lines)" in out


def test_pred_column_and_missing_lines_are_unassigned(tmp_path, capsys):
    truth = _write(tmp_path, "truth.csv", TRUTH)
    pred = _write(tmp_path, "pred.csv", "index,cluster\n1,7\n2,7\n3,8\n4,8\n")
    assert main(["eval", str(truth), str(pred), "--pred-column", "cluster"]) == 0
    captured = capsys.readouterr()
    assert "1 lines of" in captured.err and "counted as unassigned" in captured.err
    assert "coverage 80.0%" in captured.out
    scores = _eval_json(capsys, str(truth), str(pred), "--pred-column", "cluster")
    assert scores["edge"]["precision"] == 1.0 and scores["edge"]["recall"] == 1.0
    assert scores["missing_predictions"] == 1


def test_truth_column_option(tmp_path, capsys):
    # judged against voice actors, lines 1-4 pair up differently: (1,2) (3,4) again, same scores
    truth, pred = _write(tmp_path, "truth.csv", TRUTH), _write(tmp_path, "pred.csv", PRED)
    scores = _eval_json(capsys, str(truth), str(pred), "--truth-column", "speaker")
    assert scores["speakers"] == 3


def test_episode_column_joins_a_season(tmp_path, capsys):
    truth = _write(
        tmp_path,
        "truth.csv",
        "episode,index,character\nep1,1,Aoi\nep1,2,Ren\nep2,1,Aoi\nep2,2,Ren\n",
    )
    # same indices in two episodes; rows out of order on purpose
    pred = _write(
        tmp_path, "pred.csv", "episode,index,speaker\nep2,2,B\nep1,1,A\nep2,1,A\nep1,2,B\n"
    )
    scores = _eval_json(capsys, str(truth), str(pred))
    assert scores["edge"]["f1"] == 1.0
    assert scores["lines"] == 4


def test_line_id_column_stands_in_for_index(tmp_path, capsys):
    truth = _write(tmp_path, "truth.csv", "episode,index,character\nep1,1,Aoi\nep1,2,Aoi\n")
    pred = _write(tmp_path, "pred.csv", "line_id,speaker\nep1:1,X\nep1:2,X\n")
    assert _eval_json(capsys, str(truth), str(pred))["edge"]["f1"] == 1.0


@pytest.mark.parametrize(
    ("truth_text", "pred_text", "message"),
    [
        (TRUTH, "index,who\n1,A\n", r"pred\.csv:1: no column 'speaker' \(columns: index, who\)"),
        (TRUTH, "index,speaker\n1,A\nx,B\n", r"pred\.csv:3: bad index 'x'"),
        (TRUTH, "index,speaker\n1,A\n9,B\n", r"pred\.csv:3: line 9 is not in .*truth\.csv"),
        (
            TRUTH,
            "index,speaker\n1,A\n1,B\n",
            r"pred\.csv:3: line 1 appears twice \(first on line 2\)",
        ),
        ("index,character\n1,Aoi\n2,\n", "index,speaker\n1,A\n", r"truth\.csv:3: line 2 has no"),
        ("", "index,speaker\n1,A\n", r"truth\.csv: empty file"),
        ("speaker,character\nA,Aoi\n", "index,speaker\n1,A\n", r"no 'index' or 'line_id' column"),
        (
            "episode,index,character\ne1,1,A\ne2,1,B\n",
            "index,speaker\n1,A\n",
            r"truth\.csv:3: index 1 appears in more than one episode",
        ),
    ],
)
def test_bad_csv_is_one_line_error(tmp_path, capsys, truth_text, pred_text, message):
    truth = _write(tmp_path, "truth.csv", truth_text)
    pred = _write(tmp_path, "pred.csv", pred_text)
    assert main(["eval", str(truth), str(pred)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_missing_file(tmp_path, capsys):
    truth = _write(tmp_path, "truth.csv", TRUTH)
    assert main(["eval", str(truth), str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
