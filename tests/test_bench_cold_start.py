"""The cold-start comparison's verdicts against issue 15's targets (`bench.bench_cold_start`)."""

from __future__ import annotations

import pytest

from bench.bench_cold_start import summarise


def _row(name: str, scores: dict[str, tuple[float, float]]) -> dict:
    return {
        "name": name,
        "methods": {
            method: {"edge": {"f1": f1}, "operations": {"per_100_lines": ops}, "note": ""}
            for method, (f1, ops) in scores.items()
        },
    }


def test_targets_are_judged_against_the_best_baseline():
    rows = [
        _row("a", {"spectral": (0.80, 10.0), "hdbscan": (0.50, 50.0), "ours": (0.90, 6.0)}),
        _row("b", {"spectral": (0.70, 20.0), "hdbscan": (0.90, 60.0), "ours": (0.84, 8.0)}),
    ]
    table = summarise(rows, ["spectral", "hdbscan", "ours"])
    assert table["_best_baseline"] == {"method": "spectral", "best_ops": 15.0}
    assert table["ours"]["mean_f1"] == pytest.approx(0.87)
    # mean 0.87 >= 0.75 + 0.05; episode b is 0.06 below hdbscan's 0.90; ops 7 <= 0.7 x 15
    assert table["ours"]["targets"] == {"mean_f1": True, "every_episode": False, "ops": True}


def test_an_undefined_f1_counts_as_zero():
    rows = [_row("a", {"spectral": (0.5, 10.0), "ours": (None, 1.0)})]
    table = summarise(rows, ["spectral", "ours"])
    assert table["ours"]["f1"] == [0.0]
    assert table["ours"]["targets"]["mean_f1"] is False
