"""Batch scoring of files on this machine: CSV and Parquet in and out, the schema's rules cell by
cell, rejects set aside, the same scores as the API's JSON answers, nothing left behind."""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ad_purchase.batch import files
from ad_purchase.codecs import csv_codec
from ad_purchase.batch.local import Stopped, score_file
from ad_purchase.codecs import JsonDecoder
from ad_purchase.core.decoding import Decoder, fields_of
from ad_purchase.model import load_model
from ad_purchase.schema import PLAIN_FIELDS, InputError, numeric_input_order
from ad_purchase.serving.service import Service
from ad_purchase.serving.settings import Settings
from ad_purchase.training import synthetic

from api_support import MODEL_DIR, customers

ROWS = 2_500
TOLERANCE = 1e-12


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL_DIR)


@pytest.fixture(scope="module")
def service():
    return Service.start(Settings(MODEL_DIR=str(MODEL_DIR)))


@pytest.fixture(scope="module")
def frame():
    return customers(ROWS, seed=31)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, frame) -> dict[str, Path]:
    """The same rows as CSV and as Parquet (every column text, as the client writes it)."""
    folder = tmp_path_factory.mktemp("batch")
    frame.to_csv(folder / "rows.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "rows.parquet")
    return {"csv": folder / "rows.csv", "parquet": folder / "rows.parquet"}


def read_answers(path: Path, text: bool = False) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    options = pacsv.ConvertOptions(column_types={"customer": pa.string(), "value": pa.string()}) if text else None
    return pacsv.read_csv(path, convert_options=options)


def api_answers(service, frame) -> list[dict]:
    records = synthetic.to_records(frame)
    return json.loads(service.answer(service.predict(json.dumps(records).encode())))


@pytest.mark.parametrize("source, target", [("csv", "csv"), ("csv", "parquet"), ("parquet", "parquet"),
                                            ("parquet", "csv")])
def test_scores_equal_the_apis_json_answers(model, service, frame, sources, tmp_path, source, target):
    out = tmp_path / f"scores.{target}"
    outcome = score_file(sources[source], out, model, id_column="customer", chunk_rows=1_000)
    assert (outcome.rows_scored, outcome.rows_set_aside) == (ROWS, 0)
    table = read_answers(out)
    names = table.column_names
    assert names[0] == "customer" and names[1:-2] == list(service.encoder.result_fields)
    assert names[-2:] == ["model_version", "scored_at"]
    assert set(table.column("model_version").to_pylist()) == {model.version}
    scored_at = table.column("scored_at").to_pylist()
    assert len(set(scored_at)) == 1 and datetime.fromisoformat(str(scored_at[0])).tzinfo is not None
    assert table.column("customer").to_pylist() == list(frame["customer"])
    expected = api_answers(service, frame)
    got = table.to_pylist()
    for row, (answer, want) in enumerate(zip(got, expected)):
        assert answer["business_outcome"] == want["business_outcome"], row
        for key, value in want.items():
            assert math.isclose(answer[key], value, rel_tol=0, abs_tol=TOLERANCE), (row, key)
    assert not list(tmp_path.glob(".*partial"))


def test_without_an_id_column_rows_are_numbered_from_one(model, sources, tmp_path):
    out = tmp_path / "scores.parquet"
    score_file(sources["csv"], out, model)
    assert pq.read_table(out).column("row").to_pylist() == list(range(1, ROWS + 1))


def test_blank_lines_are_skipped_but_counted(model, frame, tmp_path):
    lines = frame.head(6).to_csv(index=False).splitlines()
    source = tmp_path / "gaps.csv"
    source.write_text("\n".join([lines[0], lines[1], "", lines[2], "", "", lines[3]]) + "\n")
    out = tmp_path / "out.csv"
    outcome = score_file(source, out, model)
    assert outcome.rows_scored == 3
    assert pacsv.read_csv(out).column("row").to_pylist() == [1, 3, 6]        # the file's line less one


def bad_frame(frame):
    """Rows 3, 700 and 1,900 (data rows 4, 701, 1,901) with bad values, one of them in two fields."""
    bad = frame.copy()
    bad.loc[3, "x12"] = "$1.234,56"
    bad.loc[700, "x5"] = "funday"
    bad.loc[700, "x20"] = "nan(1)"
    bad.loc[1900, "x91"] = "1_000"
    return bad


def test_a_bad_value_stops_the_run_and_nothing_is_written(model, frame, tmp_path):
    source = tmp_path / "bad.csv"
    bad_frame(frame).to_csv(source, index=False)
    out, rejects = tmp_path / "out.csv", tmp_path / "rejects.csv"
    with pytest.raises(Stopped) as stopped:
        score_file(source, out, model, id_column="customer")
    assert "line 5 (data row 4), field x12, value '$1.234,56'" in str(stopped.value)
    assert not out.exists() and not rejects.exists()
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_rejects_are_set_aside_with_their_reasons_and_the_rest_scored(model, service, frame, tmp_path, kind):
    bad = bad_frame(frame)
    source = tmp_path / f"bad.{kind}"
    if kind == "csv":
        bad.to_csv(source, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), source)
    out, rejects = tmp_path / f"out.{kind}", tmp_path / f"rejects.{kind}"
    outcome = score_file(source, out, model, id_column="customer", rejects_path=rejects, chunk_rows=600)
    assert (outcome.rows_scored, outcome.rows_set_aside, outcome.problems) == (ROWS - 3, 3, 4)
    set_aside = read_answers(rejects, text=True).to_pylist()
    assert [(r["customer"], r["field"], r["value"]) for r in set_aside] == [
        ("c00003", "x12", "$1.234,56"), ("c00700", "x5", "funday"), ("c00700", "x20", "nan(1)"),
        ("c01900", "x91", "1_000")]
    assert all(r["message"] for r in set_aside)
    scored = read_answers(out)
    assert scored.num_rows == ROWS - 3
    good = bad.drop(index=[3, 700, 1900])
    assert scored.column("customer").to_pylist() == list(good["customer"])
    expected = api_answers(service, good)
    np.testing.assert_allclose(scored.column("phat").to_numpy(), [e["phat"] for e in expected], rtol=0, atol=TOLERANCE)


def test_typed_reading_falls_back_to_text_for_the_values_it_cannot_vouch_for(model, frame, tmp_path, monkeypatch):
    """Pieces small enough that the file is read in many: a value only the schema can judge in a
    late piece ("nan(1)", "inf", padded missing markers) is read from its text, and every other
    row comes out as from a clean file."""
    monkeypatch.setattr(files, "CSV_BLOCK_BYTES", 64 * 1024)
    odd = frame.copy()
    odd.loc[2000, "x20"] = " NaN "                 # missing, padded: valid
    odd.loc[2100, "x91"] = "-0"
    odd.loc[2200, "x44"] = "inf"                   # invalid
    clean_out, odd_out, rejects = tmp_path / "clean.parquet", tmp_path / "odd.parquet", tmp_path / "rejects.csv"
    frame.to_csv(tmp_path / "clean.csv", index=False)
    odd.to_csv(tmp_path / "odd.csv", index=False)
    score_file(tmp_path / "clean.csv", clean_out, model, id_column="customer")
    score_file(tmp_path / "odd.csv", odd_out, model, id_column="customer", rejects_path=rejects)
    assert [(r["customer"], r["field"], r["value"]) for r in read_answers(rejects, text=True).to_pylist()] \
        == [("c02200", "x44", "inf")]
    clean, odd_scores = pq.read_table(clean_out).to_pandas(), pq.read_table(odd_out).to_pandas()
    same = clean[clean.customer != "c02200"].reset_index(drop=True)
    changed = odd_scores.customer.isin(["c02000", "c02100"])
    assert (odd_scores.customer == same.customer).all()
    answer = [name for name in same.columns if name not in ("customer", "scored_at")]
    assert (odd_scores[~changed][answer].values == same[~changed][answer].values).all()


def test_a_quoted_line_break_in_a_value_is_one_record(model, frame, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CSV_BLOCK_BYTES", 16 * 1024)
    monkeypatch.setattr(csv_codec, "PARSE_BLOCK_BYTES", 4 * 1024)      # a piece parsed in blocks
    quoted = frame.head(200).copy()
    quoted["customer"] = [f"c{i}\nsecond line, \"quoted\"" if i % 7 == 0 else f"c{i}" for i in range(200)]
    source = tmp_path / "quoted.csv"
    quoted.to_csv(source, index=False)
    out = tmp_path / "out.parquet"
    assert score_file(source, out, model, id_column="customer").rows_scored == 200
    assert pq.read_table(out).column("customer").to_pylist() == list(quoted["customer"])


def test_records_longer_than_a_piece_and_many_pieces_come_through_whole(model, frame, tmp_path, monkeypatch):
    """Pieces of 16 KB (the file is read in many, its buffers reused in turn) and two records of
    about 100 KB each, one of them quoted with line breaks inside.  Parse blocks of 4 KB: such a
    record straddles blocks, and its piece is parsed again as one block."""
    monkeypatch.setattr(files, "CSV_BLOCK_BYTES", 16 * 1024)
    monkeypatch.setattr(csv_codec, "PARSE_BLOCK_BYTES", 4 * 1024)
    rows = frame.head(300).copy()
    rows.loc[40, "customer"] = "long " * 20_000
    rows.loc[250, "customer"] = "quoted,\n" * 12_000
    source = tmp_path / "long.csv"
    rows.to_csv(source, index=False)
    out = tmp_path / "out.parquet"
    assert score_file(source, out, model, id_column="customer").rows_scored == 300
    assert pq.read_table(out).column("customer").to_pylist() == list(rows["customer"])


@pytest.mark.parametrize("odd_value", [None, "inf"])
def test_a_piece_parsed_in_blocks_is_the_batch_one_block_gives(model, sources, frame, tmp_path, monkeypatch, odd_value):
    """Small parse blocks (each with its own categorical dictionaries) joined into one batch equal
    the piece parsed whole, typed, or as text where a value sends the piece that way."""
    source = sources["csv"]
    if odd_value is not None:
        odd = frame.copy()
        odd.loc[1500, "x44"] = odd_value
        source = tmp_path / "odd.csv"
        odd.to_csv(source, index=False)
    reader = files.Source(source, "customer", inputs=model.numeric_inputs)
    with open(source, "rb", buffering=0) as handle:              # the whole file in one piece
        piece = next(files._pieces(handle, reader.header_bytes, size=16 << 20))
    monkeypatch.setattr(csv_codec, "PARSE_BLOCK_BYTES", 1 << 40)
    whole, whole_typed, _ = reader._read_piece(piece)
    monkeypatch.setattr(csv_codec, "PARSE_BLOCK_BYTES", 8 * 1024)
    blocks, blocks_typed, _ = reader._read_piece(piece)
    assert whole_typed == blocks_typed == (odd_value is None)
    assert blocks.num_rows == whole.num_rows == len(frame)
    assert blocks.equals(whole)


def test_a_row_with_the_wrong_number_of_cells_is_named(model, frame, tmp_path):
    lines = frame.head(40).to_csv(index=False).splitlines()
    lines[30] = lines[30].rsplit(",", 1)[0]                          # data row 30 loses a cell
    source = tmp_path / "short.csv"
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(Stopped) as stopped:
        score_file(source, tmp_path / "out.csv", model)
    assert "data row 30" in str(stopped.value) and "it has 100 cells; the header has 101" in str(stopped.value)


def test_a_file_that_is_not_utf8_names_the_line(model, frame, tmp_path):
    text = frame.head(10).to_csv(index=False).encode()
    lines = text.split(b"\n")
    lines[7] = lines[7].replace(b"day", b"d\xe4y", 1)
    source = tmp_path / "latin1.csv"
    source.write_bytes(b"\n".join(lines))
    with pytest.raises(Stopped, match="line 8 is not valid UTF-8"):
        score_file(source, tmp_path / "out.csv", model, rejects_path=tmp_path / "rejects.csv")
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "rejects.csv").exists()


def test_a_missing_column_and_an_unknown_extension_are_refused(model, frame, tmp_path):
    source = tmp_path / "short.csv"
    frame.drop(columns=["x7"]).head(3).to_csv(source, index=False)
    with pytest.raises(Stopped, match="lacks 1 required column"):
        score_file(source, tmp_path / "out.csv", model)
    with pytest.raises(InputError, match="extension"):
        files.Source(tmp_path / "rows.txt")


def typed_table(frame) -> pa.Table:
    """The rows as a data team keeps them in Parquet: plain numeric fields as doubles."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in PLAIN_FIELDS:
        text = table.column(name)
        missing = pc.is_in(pc.utf8_lower(text), value_set=pa.array(["nan", ""]))
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pc.if_else(missing, None, text).cast(pa.float64()))
    return table


@pytest.mark.parametrize("statistics", [True, False])
def test_a_typed_parquet_file_scores_as_its_text(model, service, frame, tmp_path, statistics):
    """Columns whose statistics prove them valid are not read, and an infinity in one that is
    not a model input is still found, with or without statistics in the file."""
    odd = frame.copy()
    odd.loc[1234, "x0"] = "inf"                    # x0 is not a model input
    source, out, rejects = tmp_path / "typed.parquet", tmp_path / "out.csv", tmp_path / "rejects.csv"
    pq.write_table(typed_table(odd), source, row_group_size=1_000, write_statistics=statistics)
    outcome = score_file(source, out, model, id_column="customer", rejects_path=rejects)
    assert (outcome.rows_scored, outcome.rows_set_aside) == (ROWS - 1, 1)
    assert [(r["customer"], r["field"], r["value"]) for r in read_answers(rejects, text=True).to_pylist()] == [
        ("c01234", "x0", "inf")]
    good = odd.drop(index=[1234])
    expected = api_answers(service, good)
    scored = read_answers(out)
    assert scored.column("customer").to_pylist() == list(good["customer"])
    np.testing.assert_allclose(scored.column("phat").to_numpy(), [e["phat"] for e in expected], rtol=0, atol=TOLERANCE)


def test_statistics_vouch_only_for_finite_plain_columns(frame, tmp_path):
    table = typed_table(frame.head(50))
    table = table.set_column(table.schema.get_field_index("x1"), "x1", pa.array([float("inf")] + [1.0] * 49))
    table = table.set_column(table.schema.get_field_index("x2"), "x2", pa.array(range(50), type=pa.int64()))
    pq.write_table(table, tmp_path / "t.parquet")
    group = pq.ParquetFile(tmp_path / "t.parquet").metadata.row_group(0)
    vouched = files._vouched_by_statistics(table.schema, group)
    assert "x1" not in vouched and "x12" not in vouched and "x5" not in vouched and "customer" not in vouched
    assert {"x0", "x2", "x3"} <= vouched


# ---------------------------------------------------------------- writing CSV

def test_a_csv_file_holds_any_column_type_as_pyarrows_writer_writes_it(tmp_path):
    batch = pa.RecordBatch.from_arrays([pa.array([True, None]), pa.array([1.5, 2.0]), pa.array(["a,b", None]),
                                        pa.array([0, 1], type=pa.int8())], names=["flag", "phat", "note", "x5_monday"])
    sink = files.Sink(tmp_path / "out.csv")
    sink.write(batch)
    sink.commit()
    assert (tmp_path / "out.csv").read_text() == 'flag,phat,note,x5_monday\ntrue,1.5,"a,b",0\n,2,,1\n'


# ---------------------------------------------------------------- the Arrow decoder and the schema

NUMBERISH = st.text(st.sampled_from(list("0123456789.eE+-%$,() nNaAiIfF_\t")), max_size=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(st.one_of(NUMBERISH, st.sampled_from(["nan(1)", "inf", " nan ", "NA", "-0", "1e400", "5%",
                                                                "$6,882.34", "($5.00)", "1,234.5", "12,34", "monday",
                                                                "$ 6,882.34", "- $ 5", "( $5.00 )", "$-5, 032.58",
                                                                " Sunday ", "asia", "May"])),
                       min_size=1, max_size=12),
       field=st.sampled_from(["x0", "x12", "x63", "x91", "x5", "x31"]))
def test_the_arrow_decoder_reads_text_as_the_json_careful_path_does(values, field):
    """Whatever the text, both accept or refuse each cell alike and read the same numbers."""
    base = synthetic.to_records(synthetic.generate(len(values), seed=9))
    for record, value in zip(base, values):
        record[field] = value
    table = pa.Table.from_pylist(base)
    inputs = ("x12", "x91", "x44")
    decoded = Decoder(inputs, cap=None).decode(fields_of(table.to_batches()[0]), len(values))
    careful = JsonDecoder(Decoder(inputs), 100)
    for row, record in enumerate(base):
        try:
            columns = careful.decode_values(json.loads(json.dumps(record)))
            refused = False
        except InputError:
            refused = True
        assert refused == (decoded.kept is not None and not decoded.kept[row]), (row, record[field])
        if not refused:
            kept_row = int(np.count_nonzero(decoded.kept[:row])) if decoded.kept is not None else row
            for name in numeric_input_order(inputs):
                np.testing.assert_array_equal(decoded.columns.column(name)[kept_row], columns.column(name)[0])
            np.testing.assert_array_equal(decoded.columns.codes[kept_row], columns.codes[0])


def test_a_row_of_empty_cells_is_scored_and_a_blank_line_is_skipped(model, frame, tmp_path):
    text = frame.head(3).to_csv(index=False).splitlines()
    empty_cells = "," * (len(text[0].split(",")) - 1)
    source = tmp_path / "holes.csv"
    source.write_text("\n".join([text[0], text[1], "", empty_cells, text[2], "\r", text[3]]) + "\n")
    out = tmp_path / "scores.csv"
    outcome = score_file(source, out, model, id_column="customer")
    assert outcome.rows_scored == 4
    scored = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    assert scored.column("customer").null_count == 1
