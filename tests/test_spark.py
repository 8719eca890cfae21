"""score.py --engine spark: the same scoring core as a Spark job, in local[2] mode.

The job must give the scores the local engine gives for the same rows (to 1e-12), set aside
the same rejects, stop on a bad value without --rejects, and say clearly what is wrong when
the model folder or the input cannot be used.  Every case runs score.main in this process, so
the Java gateway starts once for the module.
"""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from ad_purchase.cli import score

from api_support import MODEL_DIR, customers

pytestmark = pytest.mark.spark
try:
    import pyspark  # noqa: F401
except ImportError:
    pytest.fail("the Spark tests need PySpark: pip install -r requirements-dev.txt", pytrace=False)
if shutil.which("java") is None:
    pytest.fail("the Spark tests need a Java runtime on PATH (apt-get install openjdk-17-jre-headless)",
                pytrace=False)

ROWS = 400
MASTER = "local[2]"
TOLERANCE = 1e-12


def run(capsys, *args) -> tuple[int, str]:
    status = score.main([str(a) for a in args])
    return status, capsys.readouterr().err


def spark_args(source, out, *extra):
    return [source, "-o", out, "--engine", "spark", "--master", MASTER, "--no-progress", *extra]


def read_parts(folder) -> pa.Table:
    return pq.ParquetDataset(folder).read()


@pytest.fixture(scope="module")
def frame():
    return customers(ROWS, seed=5)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, frame):
    """Clean rows, and the same rows with three bad ones (data rows 8, 151 and 390)."""
    folder = tmp_path_factory.mktemp("spark_in")
    frame.to_csv(folder / "rows.csv", index=False)
    bad = frame.copy()
    bad.loc[7, "x12"] = "$1.234,56"
    bad.loc[150, "x5"] = "funday"
    bad.loc[150, "x20"] = "nan(1)"
    bad.loc[389, "x91"] = "1_000"
    bad.to_csv(folder / "bad.csv", index=False)
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), folder / "bad.parquet")
    return {"csv": folder / "rows.csv", "bad": folder / "bad.csv", "bad_parquet": folder / "bad.parquet"}


def by_row(table: pa.Table) -> pa.Table:
    return table.sort_by("row")


def test_scores_equal_the_local_engines(capsys, sources, tmp_path):
    local, spark = tmp_path / "local.parquet", tmp_path / "spark"
    assert run(capsys, sources["csv"], "-o", local, "--no-progress")[0] == 0
    status, err = run(capsys, *spark_args(sources["csv"], spark))
    assert status == 0, err
    assert f"scored {ROWS:,} rows" in err and "with Spark (local[2]" in err
    expected, got = pq.read_table(local), by_row(read_parts(spark))
    assert got.column_names == expected.column_names
    assert got.column("row").to_pylist() == list(range(1, ROWS + 1))
    assert got.column("business_outcome").to_pylist() == expected.column("business_outcome").to_pylist()
    assert got.column("model_version").to_pylist() == expected.column("model_version").to_pylist()
    for name in expected.column_names[2:-2]:
        np.testing.assert_allclose(got.column(name).to_numpy(), expected.column(name).to_numpy(),
                                   rtol=0, atol=TOLERANCE, err_msg=name)


@pytest.mark.parametrize("kind", ["bad", "bad_parquet"])
def test_rejects_come_out_as_the_local_engines(capsys, sources, tmp_path, kind):
    local_out, local_rejects = tmp_path / "local.parquet", tmp_path / "local-rejects.parquet"
    spark_out, spark_rejects = tmp_path / "spark", tmp_path / "spark-rejects"
    status, err = run(capsys, sources[kind], "-o", local_out, "--no-progress", "--id-column", "customer",
                      "--rejects", local_rejects)
    assert status == 0, err
    status, err = run(capsys, *spark_args(sources[kind], spark_out, "--id-column", "customer",
                                          "--rejects", spark_rejects))
    assert status == 0, err
    assert "set aside 3 row(s)" in err
    expected = pq.read_table(local_rejects).to_pylist()
    got = read_parts(spark_rejects).to_pylist()
    key = lambda r: (r["customer"], r["field"])                          # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)
    assert [(r["customer"], r["field"]) for r in expected] == [
        ("c00007", "x12"), ("c00150", "x5"), ("c00150", "x20"), ("c00389", "x91")]
    scored = read_parts(spark_out).sort_by("customer")
    assert scored.num_rows == ROWS - 3
    local_scored = pq.read_table(local_out)
    assert scored.column("customer").to_pylist() == local_scored.column("customer").to_pylist()
    np.testing.assert_allclose(scored.column("phat").to_numpy(), local_scored.column("phat").to_numpy(),
                               rtol=0, atol=TOLERANCE)


def test_a_bad_value_stops_the_job_and_nothing_is_written(capsys, sources, tmp_path):
    out = tmp_path / "spark"
    status, err = run(capsys, *spark_args(sources["bad"], out))
    assert status == score.EXIT_INVALID_INPUT
    assert "line 9 (data row 8), field x12, value '$1.234,56'" in err
    assert "no output was written" in err and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_missing_model_folder_is_a_clear_error(capsys, sources, tmp_path):
    status, err = run(capsys, *spark_args(sources["csv"], tmp_path / "out", "--model-dir", tmp_path / "nowhere"))
    assert status == 1
    assert "cannot load the model" in err and "nowhere" in err and "Traceback" not in err


def test_an_unreadable_input_is_a_clear_error(capsys, sources, tmp_path):
    status, err = run(capsys, *spark_args(tmp_path / "absent.csv", tmp_path / "out"))
    assert status == score.EXIT_INVALID_INPUT
    assert "absent.csv" in err and "does not exist" in err.lower() and "Traceback" not in err
    short = tmp_path / "short.csv"
    short.write_text("a,b\n1,2\n")
    status, err = run(capsys, *spark_args(short, tmp_path / "out"))
    assert status == score.EXIT_INVALID_INPUT
    assert "lacks 100 required column(s)" in err and not (tmp_path / "out").exists()


def test_typed_parquet_in_and_csv_text_give_the_same_scores(capsys, frame, sources, tmp_path):
    """A Parquet file with the plain numeric fields as doubles, as a data team keeps a table."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in ("x0", "x44", "x91"):
        text = table.column(name)
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pc.if_else(pc.equal(text, "nan"), None, text).cast(pa.float64()))
    source = tmp_path / "typed.parquet"
    pq.write_table(table, source)
    status, err = run(capsys, *spark_args(source, tmp_path / "typed-out"))
    assert status == 0, err
    status, err = run(capsys, sources["csv"], "-o", tmp_path / "local.csv", "--no-progress")
    assert status == 0, err
    expected = pacsv.read_csv(tmp_path / "local.csv")
    got = by_row(read_parts(tmp_path / "typed-out"))
    np.testing.assert_allclose(got.column("phat").to_numpy(), expected.column("phat").to_numpy(),
                               rtol=0, atol=TOLERANCE)


def test_the_task_function_numbers_scores_and_sets_aside_like_the_local_engine(capsys, sources, tmp_path):
    """score_share, what every task runs, called here in process on two shares of a CSV with a
    blank line: the parts hold the local engine's scores and rejects, the blank line is counted
    as a row but not scored, and the counts come back with the share."""
    from ad_purchase.batch import spark as engine
    from ad_purchase.batch.local import no_rejects, no_scores
    from ad_purchase.batch.shares import Share, count_lines, numbered
    from ad_purchase.batch.files import Part, Source
    from ad_purchase.core import PredictionService
    from ad_purchase.model import load_model

    local = tmp_path / "local.parquet"
    assert run(capsys, sources["bad"], "-o", local, "--no-progress", "--rejects", tmp_path / "rejects.csv")[0] == 0
    header, *lines = sources["bad"].read_text().splitlines()
    lines.insert(200, "")                                  # a blank line: data row 201
    source = tmp_path / "blank.csv"
    source.write_text("\n".join([header, *lines]) + "\n")
    model = load_model(MODEL_DIR)
    stamp = (("model_version", "v1"), ("scored_at", "now"))
    start, end = Source(source).header_bytes, source.stat().st_size
    two = [Share(0, str(source), Part(start=start, end=(start + end) // 2), None),
           Share(1, str(source), Part(start=(start + end) // 2, end=end), None)]
    shares = numbered(two, dict(count_lines(share) for share in two))
    (tmp_path / "scores").mkdir()
    (tmp_path / "rejects").mkdir()
    job = engine.Plan("in-process", str(MODEL_DIR), None,
                      scores=str(tmp_path / "scores"), scores_schema=no_scores(model, "row", dict(stamp)),
                      rejects=str(tmp_path / "rejects"), rejects_schema=no_rejects("row", pa.int64()), stamp=stamp)
    engine._SERVICES["in-process"] = PredictionService(model)
    try:
        reports = [engine.score_share(share, job) for share in shares]
    finally:
        del engine._SERVICES["in-process"]
    assert sum(r[1] for r in reports) == ROWS - 3 and sum(r[2] for r in reports) == 3
    assert sum(r[3] for r in reports) == 4 and all(r[1] for r in reports)
    rejects = read_parts(tmp_path / "rejects").sort_by("row")
    assert list(zip(rejects.column("row").to_pylist(), rejects.column("field").to_pylist())) == [
        (8, "x12"), (151, "x5"), (151, "x20"), (391, "x91")]
    out = by_row(read_parts(tmp_path / "scores"))
    expected = pq.read_table(local)
    shifted = [r if r <= 200 else r + 1 for r in expected.column("row").to_pylist()]
    assert out.column("row").to_pylist() == shifted
    np.testing.assert_allclose(out.column("phat").to_numpy(), expected.column("phat").to_numpy(),
                               rtol=0, atol=TOLERANCE)
    # Without rejects the first bad value stops the task: with its message when the share's rows
    # are numbered, else with the share alone (the driver numbers it), and no part is left.
    stopping = engine.Plan("in-process", str(MODEL_DIR), None, scores=str(tmp_path / "stopped"),
                           scores_schema=job.scores_schema, stamp=stamp)
    (tmp_path / "stopped").mkdir()
    engine._SERVICES["in-process"] = PredictionService(model)
    try:
        for share, message in ((shares[0], f"{source}: line 9 (data row 8), field x12"), (two[0], None)):
            with pytest.raises(RuntimeError) as stopped:
                engine.score_share(share, stopping)
            said = engine._stopped(stopped.value)
            assert said["share"] == 0
            assert said["message"].startswith(message) if message else said["message"] is None
    finally:
        del engine._SERVICES["in-process"]
    assert not list((tmp_path / "stopped").iterdir())


def test_a_typed_value_the_statistics_cannot_prove_is_refused_by_the_core_as_locally(capsys, frame, tmp_path):
    """Parquet doubles that are not model inputs are not read when the file's statistics prove
    them valid; an infinity (no finite maximum) is read and reaches the decoding core, which
    refuses it as the local engine does, and the row is set aside."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    values = [float("inf") if i == 4 else (None if i == 9 else float(i)) for i in range(ROWS)]
    table = table.set_column(table.schema.get_field_index("x0"), "x0", pa.array(values, type=pa.float64()))
    source = tmp_path / "typed.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("x1"), "x1", pa.array([1.5] * ROWS)), source)
    local_rejects, spark_rejects = tmp_path / "local-rejects.parquet", tmp_path / "spark-rejects"
    assert run(capsys, source, "-o", tmp_path / "local.parquet", "--no-progress", "--rejects", local_rejects)[0] == 0
    status, err = run(capsys, *spark_args(source, tmp_path / "spark", "--rejects", spark_rejects))
    assert status == 0, err
    assert "set aside 1 row(s)" in err
    expected = pq.read_table(local_rejects).to_pylist()
    assert read_parts(spark_rejects).to_pylist() == expected
    assert [(r["row"], r["field"]) for r in expected] == [(5, "x0")]
    got, local = by_row(read_parts(tmp_path / "spark")), pq.read_table(tmp_path / "local.parquet")
    assert got.column("row").to_pylist() == local.column("row").to_pylist()
    np.testing.assert_allclose(got.column("phat").to_numpy(), local.column("phat").to_numpy(), rtol=0, atol=TOLERANCE)


def test_a_file_cut_into_many_shares_loses_and_repeats_no_row(capsys, sources, tmp_path, monkeypatch):
    """Shares of 5,000 bytes (a few lines each, most cut mid-line) over a file with Windows line
    ends, blank lines and no line break at its end: the scores and rejects are the local
    engine's, row for row."""
    from ad_purchase.batch import shares
    monkeypatch.setattr(shares, "MIN_SHARE_BYTES", 1)
    monkeypatch.setattr(shares, "MAX_SHARE_BYTES", 5_000)
    header, *lines = sources["bad"].read_text().splitlines()
    lines[100:100] = ["", ""]
    source = tmp_path / "crlf.csv"
    source.write_bytes("\r\n".join([header, *lines]).encode())
    local_out, local_rejects = tmp_path / "local.parquet", tmp_path / "local-rejects.parquet"
    assert run(capsys, source, "-o", local_out, "--no-progress", "--rejects", local_rejects)[0] == 0
    status, err = run(capsys, *spark_args(source, tmp_path / "spark", "--rejects", tmp_path / "spark-rejects"))
    assert status == 0, err
    assert len(list((tmp_path / "spark").glob("part-*.parquet"))) > 50
    assert by_row(read_parts(tmp_path / "spark")).equals(pq.read_table(local_out).drop(["scored_at"]).append_column(
        "scored_at", by_row(read_parts(tmp_path / "spark")).column("scored_at")))
    key = lambda r: (r["row"], r["field"])                               # noqa: E731
    assert sorted(read_parts(tmp_path / "spark-rejects").to_pylist(), key=key) == \
        sorted(pq.read_table(local_rejects).to_pylist(), key=key)


def test_a_quoted_line_break_is_refused_where_shares_are_cut(capsys, frame, tmp_path, monkeypatch):
    from ad_purchase.batch import shares
    monkeypatch.setattr(shares, "MIN_SHARE_BYTES", 1)
    monkeypatch.setattr(shares, "MAX_SHARE_BYTES", 20_000)
    quoted = frame.copy()
    quoted.loc[120, "customer"] = "two\nlines"
    quoted.to_csv(tmp_path / "quoted.csv", index=False)
    status, err = run(capsys, *spark_args(tmp_path / "quoted.csv", tmp_path / "out"))
    assert status == score.EXIT_INVALID_INPUT
    assert "quoted value holds a line break" in err and "local engine" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_folder_of_files_is_scored_as_one_input_numbered_across_its_files(capsys, frame, sources, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    frame.head(150).to_csv(folder / "a.csv", index=False)
    frame.iloc[150:].to_csv(folder / "b.csv", index=False)
    (folder / "_SUCCESS").write_text("")                    # a writer's marker: not read
    status, err = run(capsys, *spark_args(folder, tmp_path / "out"))
    assert status == 0, err
    assert run(capsys, sources["csv"], "-o", tmp_path / "local.parquet", "--no-progress")[0] == 0
    got, expected = by_row(read_parts(tmp_path / "out")), pq.read_table(tmp_path / "local.parquet")
    assert got.column("row").to_pylist() == expected.column("row").to_pylist()
    np.testing.assert_allclose(got.column("phat").to_numpy(), expected.column("phat").to_numpy(), rtol=0,
                               atol=TOLERANCE)
    bad = frame.iloc[150:].copy()
    bad.loc[160, "x5"] = "funday"                         # the second file's 11th data row
    bad.to_csv(folder / "b.csv", index=False)
    status, err = run(capsys, *spark_args(folder, tmp_path / "out2"))
    assert status == score.EXIT_INVALID_INPUT
    assert f"{folder / 'b.csv'}: line 12 (data row 11), field x5, value 'funday'" in err


def test_a_task_that_fails_otherwise_is_named_in_one_line_and_nothing_is_written(capsys, sources, tmp_path,
                                                                               monkeypatch):
    """Not a bad value: a task's own error (here a part it cannot write) fails the job with the
    error's line, exit status 1, and no output."""
    from ad_purchase.batch import spark as engine

    def cannot_write(share, plan, cores=1):
        raise PermissionError(13, "Permission denied", f"part-{share.index:05d}.parquet")
    monkeypatch.setattr(engine, "score_share", cannot_write)     # shipped to the workers with the job
    status, err = run(capsys, *spark_args(sources["csv"], tmp_path / "out"))
    assert status == 1
    assert "error: the Spark job failed: PermissionError: [Errno 13] Permission denied: 'part-0000" in err
    assert "no output was written" in err and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_input_with_no_rows_to_score_is_named_and_every_row_set_aside_still_gives_the_columns(
        capsys, frame, tmp_path):
    (tmp_path / "empty").mkdir()
    status, err = run(capsys, *spark_args(tmp_path / "empty", tmp_path / "out"))
    assert status == score.EXIT_INVALID_INPUT and "the folder holds no files to score" in err
    frame.head(0).to_csv(tmp_path / "header.csv", index=False)
    status, err = run(capsys, *spark_args(tmp_path / "header.csv", tmp_path / "out"))
    assert status == score.EXIT_INVALID_INPUT and "header row but no data rows" in err
    assert not (tmp_path / "out").exists()
    bad = frame.head(5).copy()
    bad["x5"] = "funday"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    status, err = run(capsys, *spark_args(tmp_path / "bad.csv", tmp_path / "out", "--rejects", tmp_path / "rejects"))
    assert status == 0, err
    assert "scored 0 rows" in err and "set aside 5 row(s)" in err
    scored = read_parts(tmp_path / "out")
    assert scored.num_rows == 0 and scored.column_names[:3] == ["row", "business_outcome", "phat"]
    assert read_parts(tmp_path / "rejects").column("row").to_pylist() == [1, 2, 3, 4, 5]


def test_a_bad_value_with_an_id_column_still_names_its_data_row(capsys, sources, tmp_path):
    """With an id column the job numbers no rows; a stop numbers them then, to say where."""
    status, err = run(capsys, *spark_args(sources["bad"], tmp_path / "spark", "--id-column", "customer"))
    assert status == score.EXIT_INVALID_INPUT
    assert "line 9 (data row 8), field x12, value '$1.234,56'" in err and "Traceback" not in err


def test_a_small_input_gets_a_one_line_note_and_is_still_scored(capsys, sources, tmp_path):
    status, err = run(capsys, *spark_args(sources["csv"], tmp_path / "spark"))
    assert status == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "drop --engine spark" in notes[0]
    assert f"scored {ROWS:,} rows" in err


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_hostile_cells_are_set_aside_and_scored_as_a_json_request_reads_them(capsys, tmp_path, suffix):
    """The same unusual and hostile cells as tests/test_one_core.py, through a Spark job: each row
    is refused (same field, same message) or scored (same phat to 1e-12) as a JSON request alone
    reads it."""
    import json

    from ad_purchase.codecs import JsonDecoder
    from ad_purchase.core import PredictionService
    from ad_purchase.model import load_model
    from ad_purchase.schema import InputError
    from test_one_core import CELLS, cell_records, csv_text

    records = cell_records()
    source = tmp_path / f"cells{suffix}"
    if suffix == ".csv":
        source.write_text(csv_text(records))
    else:
        pq.write_table(pa.Table.from_pylist(records), source)
    status, err = run(capsys, *spark_args(source, tmp_path / "out", "--rejects", tmp_path / "rejects"))
    assert status == 0, err
    refused: dict[int, list] = {}
    for line in read_parts(tmp_path / "rejects").to_pylist():
        refused.setdefault(line["row"] - 1, []).append((line["field"], line["message"]))
    scored = dict(zip([r - 1 for r in read_parts(tmp_path / "out").column("row").to_pylist()],
                      read_parts(tmp_path / "out").column("phat").to_pylist()))
    service = PredictionService(load_model(MODEL_DIR))
    decoder = JsonDecoder(service.request_decoder, 10)
    for index, ((field, cell), record) in enumerate(zip(CELLS, records)):
        try:
            phat = float(service.predict(decoder.decode(json.dumps(record).encode())).scores.phat[0])
        except InputError as exc:
            assert sorted(refused.get(index, [])) == sorted((e["field"], e["message"]) for e in exc.errors), \
                (field, cell)
            assert index not in scored
            continue
        assert index not in refused, (field, cell, refused.get(index))
        assert abs(scored[index] - phat) <= TOLERANCE, (field, cell)
