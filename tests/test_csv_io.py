"""CSV bodies: the same rows give the same batch and the same scores as the JSON body, every
malformed or invalid CSV is refused with the right status and a precise message, and scores
written as CSV read back exactly."""
from __future__ import annotations

import csv
import io
import json
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ad_purchase.training import synthetic
from ad_purchase.codecs import JsonDecoder, JsonEncoder
from ad_purchase.core.decoding import Decoder
from ad_purchase.serving.problems import STATUS
from ad_purchase.codecs.csv_codec import decode_csv, encode_csv
from ad_purchase.model import Scores, load_model
from ad_purchase.schema import MAX_REPORTED_ERRORS, InputError
from pandas_reference import PandasReference
from ad_purchase.schema import CATEGORICAL_FIELDS, FIELDS, NUMERIC_FIELDS
from ad_purchase.core.decoding import FieldError, numeric_parser, parse_level, parse_number

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "objs"
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL_DIR)


@pytest.fixture(scope="module")
def reference():
    return PandasReference(MODEL_DIR)


@pytest.fixture(scope="module")
def frame():
    return synthetic.generate(400, seed=21)


def csv_text(records: list[dict], columns: list[str] | None = None) -> str:
    """Records written as CSV the way any spreadsheet or pandas would (quoting when needed)."""
    columns = columns or list(FIELDS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([record[c] for c in columns])
    return out.getvalue()


def json_batch(model, records: list[dict]):
    """The JSON decoder's batch for the same records: the path CSV must agree with."""
    return JsonDecoder(Decoder(model.numeric_inputs), 10_000).decode(json.dumps(records).encode())


def assert_same_batch(actual, expected) -> None:
    """The CSV batch holds the same fields as the JSON batch and agrees with it value for value."""
    assert actual.rows == expected.rows
    assert actual.numeric_fields == expected.numeric_fields
    assert actual.numeric.shape == (actual.rows, len(actual.numeric_fields)) and actual.numeric.dtype == np.float64
    for field in expected.numeric_fields:
        np.testing.assert_array_equal(actual.column(field), expected.column(field), err_msg=field)
    assert actual.codes.shape == expected.codes.shape == (actual.rows, len(CATEGORICAL_FIELDS))
    np.testing.assert_array_equal(actual.codes, expected.codes)


def read_x7(text: str) -> np.ndarray:
    """Field x7 of every row of a CSV, read where it is no model input (only the reading rules
    apply, no size limit): from the sample every numeric field is kept in for monitoring."""
    columns = decode_csv(text, Decoder([], sample=10_000), 100)
    return columns.sample_numeric[:, NUMERIC_FIELDS.index("x7")]


def reference_results(reference, records: list[dict]) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # the scaler was fitted on an array
        return reference.predict(records)


def odd_records() -> list[dict]:
    """Rows using every spelling the schema accepts besides the plain one."""
    base = synthetic.to_records(synthetic.generate(12, seed=4))
    spellings = [
        {"x0": " 1.5 ", "x12": "$6,882.34 ", "x63": "62.59%", "x5": " MONDAY ", "x31": "Asia", "x81": "january ",
         "x82": "female"},
        {"x0": "1e-3", "x12": "($5,032.58)", "x63": "45.85", "x5": "Sunday", "x31": "", "x81": "DECEMBER",
         "x82": " Male"},
        {"x0": "+.5", "x12": "$-5,032.58", "x63": " 3.11 % ", "x5": "", "x31": "NaN", "x81": "nan", "x82": "NA"},
        {"x0": "5.", "x12": "3709.93", "x63": "", "x5": "nA", "x31": "japan", "x81": "May", "x82": "null"},
        {"x0": "", "x12": "", "x63": "NA", "x44": "", "x53": "NA", "x56": "null", "x58": "-nan", "x62": " NaN "},
        {"x0": "NA", "x12": "nan", "x63": "null", "x44": "nA", "x53": "+nan", "x91": "NULL"},
        {"x0": "-0", "x12": "$0.00", "x63": "0%", "x44": "1E+2", "x53": "-.25e-1", "x91": "00012.50"},
        {"x0": "\t1.5\t", "x44": "0012", "x12": "$ 1,000", "x63": "7 %"},
    ]
    out = []
    for record, changes in zip(base, spellings):
        record = dict(record)
        record.update(changes)
        out.append(record)
    return out


# ---------------------------------------------------------------- same answers as the JSON path

def test_synthetic_rows_give_the_json_paths_batch_and_the_references_scores(model, reference, frame):
    records = synthetic.to_records(frame)
    text = frame.to_csv(index=False)          # pandas' own CSV, with the y column as an extra column
    batch = decode_csv(text, Decoder(model.numeric_inputs), 10_000)
    assert_same_batch(batch, json_batch(model, records))
    assert batch.single is False

    scores = model.score(batch)
    np.testing.assert_array_equal(scores.phat, model.score(json_batch(model, records)).phat)
    expected = reference_results(reference, records)
    for row, want in enumerate(expected):
        assert scores.outcome[row] == want["business_outcome"]
        assert math.isclose(scores.phat[row], want["phat"], rel_tol=0, abs_tol=TOLERANCE)
        for i, name in enumerate(model.plan.names):
            assert math.isclose(scores.inputs[row, i], want[name], rel_tol=0, abs_tol=TOLERANCE), (row, name)


def test_bytes_and_text_bodies_agree(model, frame):
    text = frame.to_csv(index=False)
    from_text = decode_csv(text, Decoder(model.numeric_inputs), 10_000)
    from_bytes = decode_csv(text.encode(), Decoder(model.numeric_inputs), 10_000)
    with_bom = decode_csv(b"\xef\xbb\xbf" + text.encode(), Decoder(model.numeric_inputs), 10_000)
    crlf = decode_csv(text.replace("\n", "\r\n").encode(), Decoder(model.numeric_inputs), 10_000)
    for other in (from_bytes, with_bom, crlf):
        assert_same_batch(other, from_text)


def test_odd_spellings_read_as_the_json_path_reads_them(model):
    records = odd_records()
    everything = list(NUMERIC_FIELDS)
    batch = decode_csv(csv_text(records), Decoder(everything), 100)
    assert_same_batch(batch, JsonDecoder(Decoder(everything), 100).decode(json.dumps(records).encode()))
    # And each cell is what the schema's own reader says, field by field.
    for row, record in enumerate(records):
        for field in NUMERIC_FIELDS:
            want = numeric_parser(field)(record[field])
            got = batch.column(field)[row]
            assert (math.isnan(want) and math.isnan(got)) or got == want, (row, field, record[field])
    spot = {(0, "x0"): 1.5, (1, "x12"): -5032.58, (2, "x63"): 3.11, (7, "x44"): 12.0, (7, "x12"): 1000.0}
    for (row, field), value in spot.items():
        assert batch.column(field)[row] == value


def test_odd_spellings_score_like_the_json_body(model):
    records = odd_records()
    from_csv = model.score(decode_csv(csv_text(records), Decoder(model.numeric_inputs), 100))
    from_json = model.score(json_batch(model, records))
    np.testing.assert_array_equal(from_csv.inputs, from_json.inputs)
    np.testing.assert_array_equal(from_csv.phat, from_json.phat)


def test_column_order_extra_columns_and_an_id_column_do_not_matter(model, frame):
    records = synthetic.to_records(frame.head(50))
    columns = list(FIELDS)
    random.Random(3).shuffle(columns)
    with_extras = [dict(r, id=f"cust_{i}", note="a, quoted \"note\"") for i, r in enumerate(records)]
    shuffled = decode_csv(csv_text(with_extras, ["id", *columns[:50], "note", *columns[50:]]),
                          Decoder(model.numeric_inputs), 100)
    assert_same_batch(shuffled, decode_csv(csv_text(records), Decoder(model.numeric_inputs), 100))


def test_exactly_max_rows_is_accepted(model, frame):
    records = synthetic.to_records(frame.head(3))
    assert decode_csv(csv_text(records), Decoder(model.numeric_inputs), 3).rows == 3


def test_blank_lines_are_skipped_and_still_counted_in_row_numbers(model, frame):
    records = synthetic.to_records(frame.head(3))
    lines = csv_text(records).split("\n")
    with_blanks = "\n".join([lines[0], lines[1], "", lines[2], "", lines[3], ""])
    batch = decode_csv(with_blanks, Decoder(model.numeric_inputs), 10)
    assert_same_batch(batch, json_batch(model, records))

    records[2]["x12"] = "twelve"
    lines = csv_text(records).split("\n")
    with pytest.raises(InputError) as caught:
        decode_csv("\n".join([lines[0], lines[1], "", lines[2], "", lines[3]]), Decoder(model.numeric_inputs), 10)
    # data lines: 1 = first record, 2 = blank, 3 = second record, 4 = blank, 5 = third record
    assert [(e["row"], e["field"], e["value"]) for e in caught.value.errors] == [(5, "x12", "twelve")]


def test_invalid_values_are_reported_as_the_json_path_reports_them(model, frame):
    """Same fields, values and messages; CSV rows count data lines from 1, JSON rows from 0."""
    records = [dict(r) for r in synthetic.to_records(frame.head(8))]
    bad = {(0, "x12"): "12$", (1, "x5"): "Caturday", (2, "x44"): "1e301", (2, "x0"): "1e301", (3, "x63"): "%",
           (4, "x91"): "-2e300", (5, "x12"): "$1e305", (6, "x81"): "Smarch", (7, "x7"): "inf", (7, "x8"): "1_0"}
    for (row, field), value in bad.items():
        records[row][field] = value
    with pytest.raises(InputError) as from_json:
        json_batch(model, records)
    with pytest.raises(InputError) as from_csv:
        decode_csv(csv_text(records), Decoder(model.numeric_inputs), 100)
    shifted = [dict(e, row=e["row"] + 1) for e in from_json.value.errors]
    assert from_csv.value.errors == shifted
    assert (STATUS[from_csv.value.kind], from_csv.value.kind) == (422, from_json.value.kind)
    assert from_csv.value.total_errors == from_json.value.total_errors == len(shifted)
    # x0 is not a model input: a huge value there is read, not refused, on both paths.
    assert ("x0" not in model.numeric_inputs) and all(e["field"] != "x0" for e in shifted)
    assert any(e["message"].startswith("must be at most") for e in shifted)


# A cell for a plain numeric field, built from the characters that make numbers, missing markers
# and the spellings float() accepts but the schema does not.
NUMERIC_CELL = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f" {v:.6g}"),
    st.sampled_from(["", "NA", "na", "null", "nan", "-nan", " NaN ", "inf", "-Infinity", "1e999", "1_000",
                     "0x10", "1e5", ".5", "5.", "\u0661.5", "TRUE", "1,5"]),
    st.text(alphabet="0123456789.eE+-_ naNfiIty%$,()\u0661\u00a0\t", max_size=8),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(NUMERIC_CELL, min_size=1, max_size=12))
def test_any_numeric_cell_reads_exactly_as_the_schema_reads_it(frame, cells):
    # numeric_fields=[]: x7 is no model input here, so only the reading rules apply (no size limit).
    records = [dict(r) for r in synthetic.to_records(frame.head(len(cells)))]
    expected, bad = [], []
    for row, (record, cell) in enumerate(zip(records, cells), start=1):
        record["x7"] = cell
        try:
            expected.append(parse_number(cell))
        except FieldError as exc:
            expected.append(None)
            bad.append({"row": row, "field": "x7", "value": cell, "message": str(exc)})
    text = csv_text(records)
    if bad:
        with pytest.raises(InputError) as caught:
            decode_csv(text, Decoder([]), 100)
        assert STATUS[caught.value.kind] == 422
        assert caught.value.errors == bad
        assert caught.value.total_errors == len(bad)
    else:
        got = read_x7(text)
        np.testing.assert_array_equal(got, np.array(expected, dtype=float))


@pytest.mark.parametrize("cell", ["inf", "-Infinity", "1e999", "1_000", "TRUE", "0x10", "1,5", "1.5.", "--1",
                                  "\u0661\u0662", "\u00a03", "1.5\x1c", " ", "NA", "", "null", "-nan", "+1.5e3"])
def test_one_unusual_cell_in_an_otherwise_clean_file(frame, cell):
    """Bulk conversion must not accept what the schema refuses, nor refuse what it accepts
    (numeric_fields=[]: only the reading rules apply, not the size limit on model inputs)."""
    records = [dict(r) for r in synthetic.to_records(frame.head(5))]
    records[3]["x7"] = cell
    text = csv_text(records)
    try:
        want = parse_number(cell)
    except FieldError as exc:
        with pytest.raises(InputError) as caught:
            decode_csv(text, Decoder([]), 100)
        assert caught.value.errors == [{"row": 4, "field": "x7", "value": cell, "message": str(exc)}]
    else:
        got = read_x7(text)
        assert (math.isnan(want) and math.isnan(got[3])) or got[3] == want
        np.testing.assert_array_equal(np.delete(got, 3), [float(r["x7"]) for i, r in enumerate(records) if i != 3])


# ---------------------------------------------------------------- refusals

def refusal(data, status: int, max_rows: int = 100) -> InputError:
    with pytest.raises(InputError) as caught:
        decode_csv(data, Decoder(["x12", "x44"]), max_rows)
    assert STATUS[caught.value.kind] == status, (STATUS[caught.value.kind], caught.value.detail)
    return caught.value


def test_missing_header_columns_are_named(frame):
    columns = [c for c in FIELDS if c not in ("x3", "x77", "x82")]
    error = refusal(csv_text(synthetic.to_records(frame.head(2)), columns), 400)
    assert "x3, x77, x82" in error.detail and "3 required column" in error.detail
    assert error.errors == []


def test_a_header_without_any_field_is_refused():
    error = refusal("a,b,c\n1,2,3\n", 400)
    assert "100 required column" in error.detail and "x0, x1" in error.detail and "x99" in error.detail


def test_a_repeated_field_column_is_refused(frame):
    records = synthetic.to_records(frame.head(2))
    error = refusal(csv_text(records, [*FIELDS, "x12"]), 400)
    assert "more than once" in error.detail and "x12" in error.detail


def test_an_unreadable_header_is_refused():
    error = refusal('x0,"x1\n', 400)
    assert "header row cannot be read as CSV" in error.detail


@pytest.mark.parametrize("data", [b"", "", "\n\n", "\r\n"], ids=["empty-bytes", "empty-text", "blank", "crlf"])
def test_an_empty_body_is_refused(data):
    error = refusal(data, 400)
    assert "empty" in error.detail


def test_a_header_without_rows_is_refused():
    error = refusal(",".join(FIELDS) + "\n", 400)
    assert "no data rows" in error.detail
    assert refusal(",".join(FIELDS), 400).detail == error.detail


def test_text_that_is_not_utf8_is_refused(frame):
    text = csv_text(synthetic.to_records(frame.head(3)))
    data = text.encode().replace(b"monday", b"mon\xe9day").replace(b"sunday", b"sun\xe9day")
    data = data if data != text.encode() else text.encode() + b"\xff\n"
    error = refusal(data, 400)
    assert "UTF-8" in error.detail
    latin1 = refusal(",".join(FIELDS).encode() + b"\n" + "é".encode("latin-1") * 3, 400)
    assert "UTF-8" in latin1.detail and "line 2" in latin1.detail


def test_more_rows_than_the_limit_is_refused(frame):
    error = refusal(csv_text(synthetic.to_records(frame.head(4))), 413, max_rows=3)
    assert "3" in error.detail and "limit" in error.detail


def test_a_row_with_the_wrong_number_of_cells_is_refused(frame):
    text = csv_text(synthetic.to_records(frame.head(3)))
    lines = text.split("\n")
    lines[2] += ",extra"
    error = refusal("\n".join(lines), 400)
    assert "Row 2 (line 3)" in error.detail and "101 cells" in error.detail and "header has 100" in error.detail


def test_an_unterminated_quote_is_refused(frame):
    text = csv_text(synthetic.to_records(frame.head(2)))
    error = refusal(text + '1,"2\n', 400)
    assert "cannot be read as CSV" in error.detail


def test_a_bad_value_names_its_row_field_and_value(frame):
    records = [dict(r) for r in synthetic.to_records(frame.head(6))]
    records[2]["x12"] = "$12.3.4"
    records[4]["x5"] = "funday"
    records[4]["x63"] = "ten %"
    records[5]["x70"] = "inf"
    error = refusal(csv_text(records), 422)
    assert error.kind.title == "Invalid field values"
    expected = []
    for row, field in ((3, "x12"), (5, "x5"), (5, "x63"), (6, "x70")):
        value = records[row - 1][field]
        with pytest.raises(FieldError) as why:
            parse_level(field, value) if field in CATEGORICAL_FIELDS else numeric_parser(field)(value)
        expected.append({"row": row, "field": field, "value": value, "message": str(why.value)})
    assert error.errors == expected
    assert error.total_errors == 4
    assert "row(s) 3, 5, 6" in error.detail


def test_reported_errors_are_capped_and_all_are_counted(frame):
    records = [dict(r) for r in synthetic.to_records(frame.head(150))]
    for record in records:
        record["x1"], record["x0"], record["x82"] = "?", "??", "other"
    error = refusal(csv_text(records), 422, max_rows=1000)
    assert error.total_errors == 450
    assert len(error.errors) == MAX_REPORTED_ERRORS
    keys = [(e["row"], FIELDS.index(e["field"])) for e in error.errors]
    assert keys == sorted(keys)
    assert keys[:4] == [(1, 0), (1, 1), (1, 82), (2, 0)]
    assert error.detail.startswith("450 invalid value(s)")


# ---------------------------------------------------------------- writing scores

def test_encode_csv_header_and_exact_round_trip(model, frame):
    batch = decode_csv(frame.to_csv(index=False), Decoder(model.numeric_inputs), 10_000)
    scores = model.score(batch)
    text = encode_csv(scores).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(JsonEncoder(model.plan.names).result_fields)
    assert rows[0][:2] == ["business_outcome", "phat"] and rows[0] == sorted(rows[0])
    assert len(rows) == batch.rows + 1
    position = {name: i for i, name in enumerate(model.plan.names)}
    for i, row in enumerate(rows[1:]):
        cells = dict(zip(rows[0], row))
        assert cells["business_outcome"] == str(int(scores.outcome[i]))
        assert float(cells["phat"]) == scores.phat[i]           # bit for bit
        for name in model.features:
            assert float(cells[name]) == scores.inputs[i, position[name]], (i, name)


def test_encode_csv_refuses_inputs_that_would_sort_first(model, frame):
    scores = model.score(decode_csv(frame.head(3).to_csv(index=False), Decoder(model.numeric_inputs), 10))
    with pytest.raises(ValueError):      # inputs whose names would sort before the outcome
        encode_csv(Scores(("a_first",), scores.inputs[:, :1], scores.phat, scores.outcome))


def test_encode_csv_writes_non_finite_values_as_text_that_reads_back(model, frame):
    scores = model.score(decode_csv(frame.head(4).to_csv(index=False), Decoder(model.numeric_inputs), 10))
    inputs = scores.inputs.copy()
    inputs[1, 0], inputs[2, 3] = np.nan, -np.inf
    odd = Scores(scores.names, inputs, scores.phat, scores.outcome)
    rows = list(csv.reader(io.StringIO(encode_csv(odd).decode())))
    position = {name: i for i, name in enumerate(model.plan.names)}
    for i, row in enumerate(rows[1:]):
        cells = dict(zip(rows[0], row))
        assert float(cells["phat"]) == scores.phat[i]
        for name in model.features:
            np.testing.assert_array_equal(float(cells[name]), inputs[i, position[name]], err_msg=name)
    assert "nan" in rows[2] and "-inf" in rows[3]


def test_an_empty_score_set_writes_only_the_header(model, frame):
    scores = model.score(decode_csv(frame.head(2).to_csv(index=False), Decoder(model.numeric_inputs), 10))
    empty = Scores(scores.names, scores.inputs[:0], scores.phat[:0], scores.outcome[:0])
    assert encode_csv(empty).decode() == ",".join(JsonEncoder(model.plan.names).result_fields) + "\n"


def test_a_row_of_empty_cells_is_a_record_of_missing_values_and_a_blank_line_is_not(model, frame):
    """",,,...": every field missing, which the model scores from the training means; an empty line
    between records is skipped but counted in the row numbers."""
    records = synthetic.to_records(frame.head(2))
    lines = csv_text(records).split("\n")
    empty_cells = "," * (len(FIELDS) - 1)
    text = "\n".join([lines[0], lines[1], empty_cells, "", '"",' + empty_cells[1:], lines[2], ""])
    batch = decode_csv(text, Decoder(model.numeric_inputs), 10)
    assert batch.rows == 4
    assert np.isnan(batch.numeric[1]).all() and np.isnan(batch.numeric[2]).all()
    assert (batch.codes[1] == -1).all()
    records[1]["x12"] = "twelve"
    lines = csv_text(records).split("\n")
    with pytest.raises(InputError) as caught:
        decode_csv("\n".join([lines[0], lines[1], empty_cells, "", lines[2]]), Decoder(model.numeric_inputs), 10)
    assert [(e["row"], e["field"]) for e in caught.value.errors] == [(4, "x12")]
