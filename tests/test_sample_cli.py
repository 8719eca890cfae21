"""python -m ad_purchase.cli.sample: synthetic rows in the client's raw format, any number of
them, written in chunks, that score.py and the API read as they are."""
from __future__ import annotations

import csv
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ad_purchase.cli import sample, score
from ad_purchase.schema import FIELDS, PLAIN_FIELDS, TARGET


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


# --------------------------------------------------------------------------- the format by extension

@pytest.mark.parametrize("name", ["rows.parquet", "rows.pq", "ROWS.PARQUET"])
def test_a_parquet_name_gets_parquet_with_the_csv_rows_in_it(tmp_path, monkeypatch, name):
    monkeypatch.setattr(sample, "CHUNK_ROWS", 40)                # 3 row groups: 40 + 40 + 20
    as_csv, as_parquet = tmp_path / "rows.csv", tmp_path / name
    assert sample.main(["100", "-o", str(as_csv), "--seed", "3", "--with-target"]) == 0
    assert sample.main(["100", "-o", str(as_parquet), "--seed", "3", "--with-target"]) == 0
    assert as_parquet.read_bytes()[:4] == b"PAR1"
    table = pq.read_table(as_parquet)
    assert table.column_names == [*FIELDS, TARGET]
    assert pq.ParquetFile(as_parquet).metadata.num_row_groups == 3
    for field in table.schema:
        expected = (pa.float64() if field.name in PLAIN_FIELDS else pa.int8() if field.name == TARGET
                    else pa.string())
        assert field.type == expected, field
    header, *lines = rows_of(as_csv)
    written = table.to_pydict()
    missing = 0
    for column, name in enumerate(header):
        for line, value in zip(lines, written[name]):
            text = line[column]
            if text == "nan":
                assert value is None, (name, value)
                missing += 1
            elif name in PLAIN_FIELDS:
                assert value == float(text), (name, text, value)
            elif name == TARGET:
                assert value == int(text)
            else:
                assert value == text, (name, text, value)
    assert missing > 0                                            # the sample has missing values to carry


def test_the_parquet_sample_scores_as_the_csv_sample_does(tmp_path, capsys):
    scores = {}
    for kind in ("csv", "parquet"):
        rows = tmp_path / f"rows.{kind}"
        assert sample.main(["300", "-o", str(rows), "--seed", "8"]) == 0
        assert score.main([str(rows), "-o", str(tmp_path / f"scores-{kind}.parquet"), "--no-progress"]) == 0
        scores[kind] = pq.read_table(tmp_path / f"scores-{kind}.parquet").to_pydict()
    assert "scored 300 rows" in capsys.readouterr().err
    assert len(scores["csv"]["phat"]) == 300
    for csv_phat, parquet_phat in zip(scores["csv"]["phat"], scores["parquet"]["phat"]):
        assert math.isclose(csv_phat, parquet_phat, rel_tol=0, abs_tol=1e-12)
    assert scores["csv"]["business_outcome"] == scores["parquet"]["business_outcome"]


@pytest.mark.parametrize("name", ["rows.parquet.txt", "rows.json", "rows", "rows.csv.gz"])
def test_any_other_extension_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys, name):
    out = tmp_path / "deep" / name
    assert sample.main(["10", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert str(out) in err and ".csv" in err and ".parquet" in err
    assert not out.exists() and not out.parent.exists()
