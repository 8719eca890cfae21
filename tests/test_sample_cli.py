"""python -m ad_purchase.cli.sample: synthetic rows in the client's raw format, any number of
them, written in chunks, that score.py and the API read as they are."""
from __future__ import annotations

import csv

import pytest

from ad_purchase.cli import sample, score
from ad_purchase.schema import FIELDS, TARGET


def rows_of(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_writes_the_rows_asked_for_in_chunks_with_one_header(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sample, "CHUNK_ROWS", 7)                 # 3 chunks: 7 + 7 + 6
    out = tmp_path / "deep" / "rows.csv"
    assert sample.main(["20", "-o", str(out), "--seed", "4"]) == 0
    assert "wrote 20 rows" in capsys.readouterr().err
    rows = rows_of(out)
    assert rows[0] == list(FIELDS) and len(rows) == 21
    assert all(len(row) == len(FIELDS) for row in rows)
    assert rows_of(out)[1:] != rows_of(out)[1:8] * 3               # chunks are not repeats


def test_the_same_seed_gives_the_same_file_and_another_seed_another(tmp_path):
    paths = [tmp_path / f"{name}.csv" for name in ("a", "b", "c")]
    for path, seed in zip(paths, ("1", "1", "2")):
        assert sample.main(["30", "-o", str(path), "--seed", seed]) == 0
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()


def test_with_target_adds_y_for_training(tmp_path):
    out = tmp_path / "train.csv"
    assert sample.main(["10", "-o", str(out), "--with-target"]) == 0
    rows = rows_of(out)
    assert rows[0] == [*FIELDS, TARGET]
    assert {row[-1] for row in rows[1:]} <= {"0", "1"}


def test_fewer_than_one_row_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        sample.main(["0", "-o", str(tmp_path / "none.csv")])
    assert exited.value.code == 2 and "at least 1" in capsys.readouterr().err
    assert not (tmp_path / "none.csv").exists()


def test_score_py_scores_the_sample_as_it_is(tmp_path, capsys):
    rows, scores = tmp_path / "rows.csv", tmp_path / "scores.csv"
    assert sample.main(["500", "-o", str(rows)]) == 0
    assert score.main([str(rows), "-o", str(scores), "--no-progress"]) == 0
    assert "scored 500 rows" in capsys.readouterr().err
    assert len(rows_of(scores)) == 501
