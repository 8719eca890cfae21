"""Every way in reads a cell alike: the same hostile and unusual values, sent as a JSON request,
an HTTP CSV request, a CSV file and a Parquet file for score.py, and a training file, are
accepted or refused alike (same field, same message) and score alike.  (Spark's executors run
the same file engine's core; tests/test_spark.py holds its share of this check.)

Also here: the single-record shortcut equals the batch path to the last bit, and the API and
score.py write the same CSV text for the same answer."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ad_purchase.batch.local import score_file
from ad_purchase.codecs import JsonDecoder, JsonEncoder, decode_csv
from ad_purchase.core import PredictionService
from ad_purchase.core.decoding import Decoder
from ad_purchase.model import load_model
from ad_purchase.schema import CATEGORICAL_FIELDS, FIELDS, FORMATTED_FIELDS, PLAIN_FIELDS, TARGET, InputError
from ad_purchase.training import data as training_data
from ad_purchase.training import synthetic

from api_support import JSON, MODEL_DIR, make_app

TOLERANCE = 1e-12

# (field, cell): a model input (x44), a plain field the model does not read (x7), the amount,
# the percentage and a level, each with spellings that are read and spellings that are refused.
CELLS = [
    ("x44", "1.5"), ("x44", " 2 "), ("x44", "1e-3"), ("x44", "+.5"), ("x44", "5."), ("x44", "NA"), ("x44", ""),
    ("x44", "nan"), ("x44", "-nan"), ("x44", " NaN "), ("x44", "null"), ("x44", "inf"), ("x44", "-Infinity"),
    ("x44", "1e999"), ("x44", "1_000"), ("x44", "0x10"), ("x44", "TRUE"), ("x44", "1,5"), ("x44", "1e301"),
    ("x44", "-2e300"), ("x44", "\u0661\u0662"), ("x44", "nan(1)"), ("x44", "1.5.5"),
    ("x7", "1e301"), ("x7", "inf"), ("x7", "abc"), ("x7", "NA"),
    ("x12", "$6,882.34"), ("x12", "($5,032.58)"), ("x12", "$-1,920.03"), ("x12", "-$1,920.03"), ("x12", "3709.93"),
    ("x12", "$ 1,000"), ("x12", "( $5.00 )"), ("x12", "- $ 5"), ("x12", "$1.234,56"), ("x12", "12,34"),
    ("x12", "$12.34.56"), ("x12", "$1e305"), ("x12", "(-5)"), ("x12", "NA"), ("x12", "dollars"),
    ("x63", "62.59%"), ("x63", "45.85"), ("x63", " 7 % "), ("x63", "%5"), ("x63", "abc%"), ("x63", "5%%"),
    ("x63", "nan"), ("x63", "1e999%"),
    ("x5", "monday"), ("x5", " SUNDAY "), ("x5", "Funday"), ("x5", "NA"), ("x5", "nan"), ("x5", "mon day"),
    ("x82", "female"), ("x82", "F"),
]


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL_DIR)


def cell_records() -> list[dict]:
    """One clean record per case, every value as text, with the case's cell in place (row i
    holds CELLS[i])."""
    base = synthetic.to_records(synthetic.generate(len(CELLS), seed=77))
    out = []
    for (field, cell), record in zip(CELLS, base):
        record = {name: ("" if record[name] is None else str(record[name])) for name in FIELDS}
        record[field] = cell
        out.append(record)
    return out


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return cell_records()


def csv_text(records: list[dict], extra: dict[str, list] | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = [*FIELDS, *(extra or {})]
    writer.writerow(columns)
    for i, record in enumerate(records):
        writer.writerow([record[c] for c in FIELDS] + [values[i] for values in (extra or {}).values()])
    return out.getvalue()


def verdict(read) -> tuple[list[tuple[str, str]], float | None]:
    """What a way in made of one record: its problems as (field, message), and phat when scored."""
    try:
        phat = read()
    except InputError as exc:
        return sorted((e["field"], e["message"]) for e in exc.errors), None
    return [], phat


@pytest.fixture(scope="module")
def per_record(model, records):
    """Each record alone through a JSON request and an HTTP CSV request (all or nothing each)."""
    service = PredictionService(model)
    json_decoder = JsonDecoder(service.request_decoder, 10)

    def by_json(record):
        return float(service.predict(json_decoder.decode(json.dumps(record).encode())).scores.phat[0])

    def by_csv(record):
        return float(service.predict(decode_csv(csv_text([record]), service.request_decoder, 10)).scores.phat[0])
    return [(verdict(lambda: by_json(r)), verdict(lambda: by_csv(r))) for r in records]


def test_the_cases_cover_both_outcomes_for_every_kind_of_field(per_record):
    for field in ("x44", "x7", "x12", "x63", "x5"):
        outcomes = {bool(from_json[0]) for (f, _), (from_json, _) in zip(CELLS, per_record) if f == field}
        assert outcomes == {True, False}, field


def test_json_and_csv_requests_accept_refuse_and_score_alike(per_record):
    for (field, cell), (from_json, from_csv) in zip(CELLS, per_record):
        assert from_json[0] == from_csv[0], (field, cell, from_json, from_csv)
        assert all(f == field for f, _ in from_json[0]), (field, cell, from_json)
        if from_json[1] is not None:
            assert math.isclose(from_json[1], from_csv[1], rel_tol=0, abs_tol=TOLERANCE), (field, cell)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_py_sets_aside_and_scores_as_the_requests_do(model, records, per_record, tmp_path, suffix):
    source = tmp_path / f"cells{suffix}"
    if suffix == ".csv":
        source.write_text(csv_text(records))
    else:
        pq.write_table(pa.Table.from_pylist(records), source)
    out, rejects = tmp_path / "scores.csv", tmp_path / "rejects.csv"
    score_file(source, out, model, rejects_path=rejects)
    refused = {}
    for line in pacsv.read_csv(rejects, convert_options=pacsv.ConvertOptions(strings_can_be_null=False,
                                                                             column_types={"value": pa.string()})
                               ).to_pylist():
        refused.setdefault(line["row"] - 1, []).append((line["field"], line["message"]))
    scored = {row - 1: phat for row, phat in zip(pacsv.read_csv(out).column("row").to_pylist(),
                                                  pacsv.read_csv(out).column("phat").to_pylist())}
    for index, ((field, cell), (from_json, _)) in enumerate(zip(CELLS, per_record)):
        assert sorted(refused.get(index, [])) == from_json[0], (field, cell)
        if from_json[1] is not None:
            assert math.isclose(scored[index], from_json[1], rel_tol=0, abs_tol=TOLERANCE), (field, cell)
        else:
            assert index not in scored


def test_training_refuses_what_the_requests_refuse(model, records, per_record, tmp_path):
    """A training file reads every numeric field as a candidate input: a cell a request refuses is
    refused there too, and a cell a request reads is read to the same number."""
    service = PredictionService(model)
    everything = JsonDecoder(Decoder(PLAIN_FIELDS + FORMATTED_FIELDS), 10)
    for index, ((field, cell), (from_json, _)) in enumerate(zip(CELLS, per_record)):
        path = tmp_path / f"train{index}.csv"
        clean = dict(records[index], **{field: ""})              # a missing value: read everywhere
        path.write_text(csv_text([records[index], clean], {TARGET: ["1", "0"]}))
        try:
            parsed = training_data.parse_raw(training_data.read_raw_csv(path))
        except training_data.TrainingDataError as exc:
            assert from_json[0] or field == "x7", (field, cell, str(exc))
            continue
        assert not from_json[0] or field == "x7", (field, cell)
        if field in CATEGORICAL_FIELDS:
            continue
        want = everything.decode(json.dumps(records[index]).encode()).column(field)[0]
        got = parsed.numeric[field].iat[0]
        assert (math.isnan(want) and math.isnan(got)) or got == want, (field, cell)
    assert service.model is model


def test_a_non_input_field_is_checked_by_the_rules_but_not_the_size_limit(per_record):
    by_cell = {cell: from_json for (field, cell), (from_json, _) in zip(CELLS, per_record) if field == "x7"}
    assert by_cell["1e301"][0] == [] and by_cell["NA"][0] == []
    assert by_cell["inf"][0] and by_cell["abc"][0]


# ---------------------------------------------------------------- the one-record shortcut

ODD_VALUES = st.sampled_from([None, "", "nan", "NA", " 1.5 ", "1e-3", "-0", "1e301", "inf", "x", True, 0, 2.5, 1e308,
                              "$6,882.34", "($5,032.58)", "62.59%", " 7 % ", "sunday", " SUNDAY ", "Male", "asia",
                              "May", "funday", [], {}])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), ODD_VALUES, max_size=5), explain=st.booleans())
def test_one_record_alone_answers_what_the_batch_path_answers_bit_for_bit(model, changes, explain):
    """decode_record, the one shortcut for one record, gives the batch path's columns, scores and
    answer bytes (an object alone, one element of an array), or leaves the record to it."""
    service = PredictionService(model)
    decoder = JsonDecoder(service.request_decoder, 10)
    record = synthetic.to_records(synthetic.generate(1, seed=len(changes)))[0]
    record.update(changes)
    body = json.dumps(record).encode()
    try:
        batch_columns = decoder._decode_as_sent(json.dumps([record]).encode())
    except InputError as expected:
        with pytest.raises(InputError) as raised:
            decoder.decode(body)
        assert raised.value.errors == expected.errors
        return
    alone = decoder.decode(body)
    assert alone.single
    np.testing.assert_array_equal(alone.numeric, batch_columns.numeric)
    np.testing.assert_array_equal(alone.codes, batch_columns.codes)
    np.testing.assert_array_equal(alone.sample_numeric, batch_columns.sample_numeric)
    encoder = JsonEncoder(model.plan.names)
    one = encoder.encode(service.predict(alone, explain))
    many = encoder.encode(service.predict(batch_columns, explain))
    assert b"[" + one + b"]" == many


# ---------------------------------------------------------------- the same CSV text

def test_the_api_and_score_py_write_the_same_csv_text(model, monkeypatch, tmp_path):
    frame = synthetic.generate(40, seed=8).drop(columns=[TARGET])
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "scores.csv"
    score_file(source, out, model)
    from_file = [line.rsplit(",", 2)[0] for line in out.read_text().splitlines()]   # less the model and time
    http = make_app().test_client()
    answer = http.post("/predict", data=source.read_bytes(), headers={"Content-Type": "text/csv",
                                                                       "Accept": "text/csv"})
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    from_api = answer.get_data(as_text=True).splitlines()
    assert from_file[0] == "row," + from_api[0]
    assert [line.split(",", 1)[1] for line in from_file[1:]] == from_api[1:]
    assert ",0,1," in from_api[1] + from_api[2] or ",1,0," in from_api[1] + from_api[2]


def test_a_csv_answer_with_explain_keeps_the_contributions(model, monkeypatch):
    http = make_app().test_client()
    frame = synthetic.generate(5, seed=3).drop(columns=[TARGET])
    body = frame.to_csv(index=False).encode()
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    explained = http.post("/predict?explain=true", data=body, headers=headers)
    plain = http.post("/predict", data=body, headers=headers)
    assert explained.status_code == plain.status_code == 200
    rows = list(csv.DictReader(io.StringIO(explained.get_data(as_text=True))))
    shares = [name for name in rows[0] if name.startswith("contribution_")]
    assert sorted(shares) == sorted(f"contribution_{name}" for name in model.plan.names)
    as_json = http.post("/predict?explain=true", data=json.dumps(synthetic.to_records(frame)), headers={
        "Content-Type": JSON}).get_json()
    for row, result in zip(rows, as_json):
        for name, value in result["contributions"].items():
            assert float(row[f"contribution_{name}"]) == value
        logit = sum(float(row[name]) for name in shares)
        assert math.isclose(logit, math.log(float(row["phat"]) / (1 - float(row["phat"]))), abs_tol=1e-9)
    plain_rows = list(csv.DictReader(io.StringIO(plain.get_data(as_text=True))))
    assert [{k: v for k, v in r.items() if not k.startswith("contribution_")} for r in rows] == plain_rows
