"""score.py, the offline scorer, run as a user runs it: a subprocess on a CSV file.

Its output must hold the same numbers as the plain pandas implementation of the published
steps, keep the input's order and ids whatever the chunk size, and a bad row must stop it with
a message pointing at the line, exit status 2 and no output file.
"""
from __future__ import annotations

import csv
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ad_purchase.cli import score
from ad_purchase.training import synthetic
from pandas_reference import PandasReference
from ad_purchase.schema import FIELDS

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "objs"
ROWS = 3000
TOLERANCE = 1e-9


def run_score(*args, module: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    entry = ["-m", "score"] if module else [str(ROOT / "score.py")]
    return subprocess.run([sys.executable, *entry, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def run_in_process(capsys, *args) -> tuple[int, str]:
    """score.main in this process (same code path, no interpreter start-up): status and stderr."""
    status = score.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert captured.out == ""
    return status, captured.err


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def frame():
    frame = synthetic.generate(ROWS, seed=77)
    frame.insert(0, "customer", [f"c{i:05d}-{(i * 7919) % 1000}" for i in range(ROWS)])
    return frame


@pytest.fixture(scope="module")
def input_csv(tmp_path_factory, frame) -> Path:
    path = tmp_path_factory.mktemp("score_in") / "rows.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def expected(frame) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # the scaler was fitted on an array
        return PandasReference(MODEL_DIR).predict(synthetic.to_records(frame))


@pytest.fixture(scope="module")
def scored_by_id(input_csv, tmp_path_factory):
    """One run with --id-column customer and small chunks."""
    out = tmp_path_factory.mktemp("score_out") / "scores.csv"
    result = run_score(input_csv, "-o", out, "--id-column", "customer", "--chunk-rows", 700)
    assert result.returncode == 0, result.stderr
    return result, out


def assert_matches_reference(rows: list[dict[str, str]], expected: list[dict]) -> None:
    assert len(rows) == len(expected)
    for i, (got, want) in enumerate(zip(rows, expected)):
        assert int(got["business_outcome"]) == want["business_outcome"], i
        for key, value in want.items():
            assert math.isclose(float(got[key]), value, rel_tol=0, abs_tol=TOLERANCE), (i, key, got[key], value)


def test_scores_equal_the_reference_with_ids_in_input_order(scored_by_id, frame, expected):
    _, out = scored_by_id
    rows = read_csv(out)
    with open(out, newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["customer", *sorted(expected[0]), "model_version", "scored_at"]
    assert [r["customer"] for r in rows] == frame["customer"].tolist()
    assert_matches_reference(rows, expected)
    # The output gets the permissions any new file gets, not the private ones of a temporary file.
    plain = out.parent / "plain-file"
    plain.write_text("")
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_progress_and_speed_are_reported_on_stderr(scored_by_id):
    result, out = scored_by_id
    assert result.stdout == ""
    assert "rows/s" in result.stderr
    assert f"{ROWS / 1000:.2f}k/{ROWS / 1000:.2f}k" in result.stderr or f"{ROWS}/{ROWS}" in result.stderr
    assert "100%" in result.stderr
    assert f"scored {ROWS:,} rows" in result.stderr and str(out) in result.stderr


def test_chunk_size_does_not_change_the_output(input_csv, scored_by_id, tmp_path, capsys):
    _, small_chunks = scored_by_id
    one_chunk = tmp_path / "one.csv"
    status, stderr = run_in_process(capsys, input_csv, "-o", one_chunk, "--id-column", "customer",
                                    "--chunk-rows", ROWS * 2, "--no-progress")
    assert status == 0, stderr
    without_time = [[line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]
                    for path in (one_chunk, small_chunks)]
    assert without_time[0] == without_time[1]                # the same rows, but for when they were scored
    assert f"scored {ROWS:,} rows" in stderr and "rows/s" in stderr and "%|" not in stderr


def test_without_an_id_column_rows_are_numbered_and_python_m_works(tmp_path, frame, expected):
    source = tmp_path / "plain.csv"
    frame.head(250).drop(columns=["customer"]).to_csv(source, index=False)
    out = tmp_path / "nested" / "scores.csv"
    result = run_score(source, "-o", out, "--chunk-rows", 64, module=True)
    assert result.returncode == 0, result.stderr
    rows = read_csv(out)
    assert [r["row"] for r in rows] == [str(i) for i in range(1, 251)]
    assert_matches_reference(rows, expected[:250])


def test_a_bad_row_stops_the_run_with_exit_2_and_leaves_no_output(tmp_path, frame):
    bad = frame.copy()
    bad.loc[1999, "x12"] = "$12.34.56"           # data row 2000, file line 2001, in the third chunk
    source = tmp_path / "bad.csv"
    bad.to_csv(source, index=False)
    out = tmp_path / "scores.csv"
    result = run_score(source, "-o", out, "--chunk-rows", 900)
    assert result.returncode == 2
    assert "line 2001" in result.stderr and "data row 2000" in result.stderr
    assert "x12" in result.stderr and "'$12.34.56'" in result.stderr
    assert "expected a currency amount" in result.stderr
    assert "no output was written" in result.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_a_failed_run_keeps_an_earlier_output_untouched(tmp_path, frame, capsys):
    source = tmp_path / "bad.csv"
    bad = frame.head(20).copy()
    bad.loc[19, "x5"] = "someday"
    bad.to_csv(source, index=False)
    out = tmp_path / "scores.csv"
    out.write_text("earlier results\n")
    status, stderr = run_in_process(capsys, source, "-o", out)
    assert status == 2
    assert "line 21" in stderr and "x5" in stderr and "'someday'" in stderr
    assert out.read_text() == "earlier results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "scores.csv"]


@pytest.mark.parametrize("case", ["missing-column", "missing-id-column", "no-rows", "not-utf8", "no-file"])
def test_unusable_files_exit_2_with_a_reason(tmp_path, frame, case, capsys):
    source = tmp_path / "in.csv"
    args = []
    if case == "missing-column":
        frame.head(5).drop(columns=["x44", "x91"]).to_csv(source, index=False)
        reason = "x44, x91"
    elif case == "missing-id-column":
        frame.head(5).to_csv(source, index=False)
        args = ["--id-column", "account"]
        reason = "account"
    elif case == "no-rows":
        source.write_text(",".join(FIELDS) + "\n")
        reason = "no data rows"
    elif case == "not-utf8":
        frame.head(5).to_csv(source, index=False)
        lines = source.read_bytes().split(b"\n")
        lines[4] = lines[4].replace(b"day", b"d\xe4y", 1)
        source.write_bytes(b"\n".join(lines))
        reason = "line 5 is not valid UTF-8"
    else:
        source = tmp_path / "absent.csv"
        reason = "no such file"
    out = tmp_path / "out.csv"
    status, stderr = run_in_process(capsys, source, "-o", out, *args)
    assert status == 2, stderr
    assert reason in stderr and "no output was written" in stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".out.csv*"))


def test_many_bad_values_are_summarised(tmp_path, frame, capsys):
    bad = frame.head(30).copy()
    bad["x20"] = "n/a"
    source = tmp_path / "bad.csv"
    bad.to_csv(source, index=False)
    status, stderr = run_in_process(capsys, source, "-o", tmp_path / "out.csv")
    assert status == 2
    assert "line 2 (data row 1), field x20, value 'n/a'" in stderr
    assert "line 11 (data row 10)" in stderr and "line 12 (data row 11)" not in stderr
    assert "... and 20 more invalid value(s)" in stderr


def test_a_model_folder_that_cannot_be_loaded_exits_1(tmp_path, input_csv, capsys):
    status, stderr = run_in_process(capsys, input_csv, "-o", tmp_path / "out.csv", "--model-dir", tmp_path / "none")
    assert status == 1
    assert "cannot load the model" in stderr and "does not exist" in stderr
    assert not (tmp_path / "out.csv").exists()


def test_chunk_rows_must_be_positive(tmp_path, input_csv, capsys):
    with pytest.raises(SystemExit) as stopped:
        score.main([str(input_csv), "-o", str(tmp_path / "out.csv"), "--chunk-rows", "0"])
    assert stopped.value.code == 2
    assert "--chunk-rows must be at least 1" in capsys.readouterr().err
