"""The service scores exactly as the independent pandas implementation of the published steps does,
whichever of the decoder's two paths a request takes."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ad_purchase.core import PredictionService
from ad_purchase.core.decoding import Decoder
from ad_purchase.codecs import JsonDecoder, JsonEncoder
from ad_purchase.model import load_model
from ad_purchase.schema import CATEGORICAL_LEVELS, CURRENCY_FIELD, FIELDS, NUMERIC_FIELDS, PERCENT_FIELD, InputError, numeric_input_order
from ad_purchase.training import synthetic

from api_support import (MODEL_DIR, assert_matches, assert_result_shape, client, example, example_bytes, features,
                         predict_ok, reference_predict)

SEED = 20_261_126
ROWS = 500
# Missing markers the fast path reads as they are; any other marker sends a body down the careful path.
FAST_MISSING = [None, "nan", "NaN"]


@pytest.fixture(scope="module")
def http():
    return client()


@pytest.fixture
def careful_calls(monkeypatch):
    """Counts how often the decoder's careful path runs."""
    calls = []
    original = JsonDecoder._decode_as_sent

    def spy(self, body):
        calls.append(len(body))
        return original(self, body)

    monkeypatch.setattr(JsonDecoder, "_decode_as_sent", spy)
    return calls


def spell_case(rng: random.Random, level: str) -> str:
    style = rng.randrange(5)
    if style == 0:
        text = level.upper()
    elif style == 1:
        text = level.lower()
    elif style == 2:
        text = level.title()
    elif style == 3:
        text = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in level)
    else:
        text = level
    return " " * rng.randrange(3) + text + " " * rng.randrange(3)


def spell_amount(amount: float, style: int) -> str | float:
    """Every spelling of x12 the client uses, and a plain JSON number."""
    magnitude = f"{abs(amount):,.2f}"
    if amount >= 0:
        return (f"${magnitude}", f"${magnitude} ", f"{amount:.2f}", amount, f"${magnitude}")[style % 5]
    return (f"$-{magnitude}", f"(${magnitude})", f"{amount:.2f}", amount, f"(${magnitude})")[style % 5]


def variant_records(seed: int, rows: int = ROWS) -> list[dict]:
    """Synthetic client rows, respelled the many ways the contract allows."""
    records = synthetic.to_records(synthetic.generate(rows, seed=seed))
    rng = random.Random(seed)
    for i, item in enumerate(records):
        for field in CATEGORICAL_LEVELS:
            if rng.random() < 0.03:
                item[field] = rng.choice(FAST_MISSING + [""])
            elif item[field] != "nan":
                item[field] = spell_case(rng, item[field])
        amount = round(rng.gauss(0, 2500), 2)
        item[CURRENCY_FIELD] = rng.choice([None, "nan"]) if rng.random() < 0.02 else spell_amount(amount, i)
        percent = round(rng.uniform(0, 100), 2)
        item[PERCENT_FIELD] = (f"{percent:.2f}%", f"{percent:.2f}", percent)[i % 3]
        for field in FIELDS:
            value = item[field]
            if field in CATEGORICAL_LEVELS or field in (CURRENCY_FIELD, PERCENT_FIELD):
                continue
            if value == "nan":
                item[field] = rng.choice(FAST_MISSING)
            elif rng.random() < 0.3:
                item[field] = float(value)      # a JSON number instead of a numeric string
    return records


def test_variant_records_cover_every_spelling():
    records = variant_records(SEED)
    spellings = {item[CURRENCY_FIELD] for item in records}
    assert any(isinstance(v, str) and v.startswith("$") and "," in v and not v.endswith(" ") for v in spellings)
    assert any(isinstance(v, str) and v.endswith(" ") for v in spellings)
    assert any(isinstance(v, str) and v.startswith("$-") for v in spellings)
    assert any(isinstance(v, str) and v.startswith("($") for v in spellings)
    assert any(isinstance(v, str) and v[:1].isdigit() for v in spellings)
    assert any(isinstance(v, float) for v in spellings)
    assert any(isinstance(item[PERCENT_FIELD], str) and item[PERCENT_FIELD].endswith("%") for item in records)
    levels = {item["x5"] for item in records if isinstance(item["x5"], str)}
    assert any(v != v.strip() for v in levels) and any(v.isupper() for v in levels)
    assert any(item["x31"] is None for item in records)


@pytest.mark.parametrize("name", ["single", "batch"])
def test_user_examples_match_the_reference(http, name):
    result = predict_ok(http, body=example_bytes(name))
    payload = example(name)
    results = [result] if isinstance(payload, dict) else result
    assert_matches(results, reference_predict([payload] if isinstance(payload, dict) else payload))


def test_synthetic_batch_on_the_fast_path_matches_the_reference(http, careful_calls):
    records = variant_records(SEED)
    results = predict_ok(http, records)
    assert careful_calls == []          # the whole batch was decoded by the fast path
    for result in results:
        assert_result_shape(result)
    assert_matches(results, reference_predict(records))


def test_synthetic_batch_on_the_careful_path_matches_the_reference(http, careful_calls):
    records = variant_records(SEED + 1)
    records[len(records) // 2]["x0"] = "NA"      # a marker only the careful path reads
    results = predict_ok(http, records)
    assert len(careful_calls) == 1
    assert_matches(results, reference_predict(records))


@pytest.mark.parametrize("marker", ["NA", "na", "", " nan "])
def test_one_careful_marker_leaves_the_other_rows_unchanged(http, careful_calls, marker):
    records = variant_records(SEED + 2, rows=40)
    fast = predict_ok(http, records)
    assert careful_calls == []
    records[7]["x91"] = marker
    careful = predict_ok(http, records)
    assert len(careful_calls) == 1
    assert careful[:7] == fast[:7] and careful[8:] == fast[8:]
    assert_matches(careful, reference_predict(records))


def test_records_scored_one_by_one_match_the_reference(http):
    records = variant_records(SEED + 3, rows=25)
    results = [predict_ok(http, item) for item in records]
    assert_matches(results, reference_predict(records))


# ---------------------------------------------------------------- the decoder's two paths directly

@pytest.fixture(scope="module")
def decoder():
    return JsonDecoder(Decoder(load_model(MODEL_DIR).numeric_inputs), 10_000)


def assert_same_batch(left, right) -> None:
    """Same rows, same model inputs (either path may read further fields as well)."""
    assert (left.rows, left.single) == (right.rows, right.single)
    numeric_inputs = [name for name in features() if "_" not in name]
    for name in numeric_inputs:
        np.testing.assert_array_equal(left.column(name), right.column(name), err_msg=name)
    np.testing.assert_array_equal(left.codes, right.codes)


@pytest.mark.parametrize("seed", [SEED, SEED + 4])
def test_both_decoder_paths_read_the_same_columns(decoder, seed):
    body = json.dumps(variant_records(seed, rows=200)).encode()
    assert_same_batch(decoder._decode_typed(body), decoder._decode_as_sent(body))


@pytest.mark.parametrize("fields", [(), ("x1",), ("x12",), ("x63", "x2"), ("x99", "x1", "x63", "x12"),
                                    NUMERIC_FIELDS])
@pytest.mark.parametrize("rows", [1, 3, 200])
def test_fast_path_reads_any_set_of_numeric_inputs(fields, rows):
    """Whatever numeric inputs a model takes (none, one, some, all, x12/x63 among them), the fast
    path reads them as the careful path does, nulls and "nan" included."""
    decoder = JsonDecoder(Decoder(fields), max_rows=1000)
    assert decoder.decoder.numeric_fields == numeric_input_order(fields)
    records = synthetic.to_records(synthetic.generate(rows, seed=SEED + rows))
    for i, item in enumerate(records):
        for field in ("x1", "x2", "x99"):
            item[field] = (None, "nan", item[field], 1.5)[(i + len(field)) % 4]
    body = json.dumps(records if rows > 1 else records[0]).encode()
    fast = decoder._decode_typed(body)
    careful = decoder._decode_as_sent(body)
    assert fast.numeric.shape == (rows, len(fields))
    for field in fields:
        np.testing.assert_array_equal(fast.column(field), careful.column(field), err_msg=field)
    np.testing.assert_array_equal(fast.codes, careful.codes)


@pytest.mark.parametrize("rows", [1, 120, 450])
def test_the_fast_path_sample_for_monitoring_equals_the_careful_columns(rows):
    """Drift monitoring gets all 96 numeric fields of sampled rows; from the fast path's typed
    records they must be what the careful path reads from the same body, nulls included, row for
    row, whether one record came in or a batch larger than the sample."""
    model = load_model(MODEL_DIR)
    decoder = JsonDecoder(Decoder(model.numeric_inputs, sample=200), 1000)
    everything = JsonDecoder(Decoder(NUMERIC_FIELDS), 1000)
    records = variant_records(SEED + 6, rows=rows)
    for i, field in enumerate(("x1", CURRENCY_FIELD, PERCENT_FIELD, "x5", "x99")):
        records[(3 * i) % rows][field] = None
    body = json.dumps(records if rows > 1 else records[0]).encode()
    fast = decoder._decode_typed(body)
    careful = decoder._decode_as_sent(body)
    assert fast.numeric_fields != NUMERIC_FIELDS            # the model reads only its inputs
    picked = np.linspace(0, rows - 1, min(rows, 200)).astype(int)
    np.testing.assert_array_equal(fast.sample_rows, picked)
    np.testing.assert_array_equal(careful.sample_rows, picked)
    all_fields = everything._decode_as_sent(body)
    np.testing.assert_array_equal(fast.sample_numeric, all_fields.numeric[picked][:, [
        all_fields.numeric_fields.index(f) for f in NUMERIC_FIELDS]])
    np.testing.assert_array_equal(careful.sample_numeric, fast.sample_numeric)


def test_numeric_input_order_puts_the_formatted_fields_last():
    assert numeric_input_order(["x63", "x91", "x12", "x4"]) == ("x4", "x91", "x12", "x63")
    with pytest.raises(ValueError, match="x5"):
        numeric_input_order(["x4", "x5"])      # a categorical is not a numeric input


def test_both_decoder_paths_read_the_examples_alike(decoder):
    for name in ("single", "batch"):
        body = example_bytes(name)
        assert_same_batch(decoder._decode_typed(body), decoder._decode_as_sent(body))


tricky_values = st.sampled_from([
    None, "", " ", "nan", "NaN", "-nan", "+nan", "NA", "na", "null", "NULL", "None", "inf", "-Infinity", "1e999",
    "1e-400", "0", "-0", "+1.5", " 1.5 ", "1.", ".5", "1e5", "1E+5", "0x10", "1_0", "١٢", "$1,000.00", "($5.00)",
    "$-5", "12%", "12.5 %", "sunday", " SUNDAY ", "asia", "July", "male", "x", True, False, 0, -3, 2.5, 1e308,
    10**20, [], {},
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.dictionaries(st.sampled_from(FIELDS), tricky_values, max_size=4), min_size=1, max_size=3))
def test_decoder_paths_agree_on_any_values(decoder, changes):
    rows = []
    for change in changes:
        item = example("single")
        item.update(change)
        rows.append(item)
    body = json.dumps(rows).encode()
    try:
        careful = decoder._decode_as_sent(body)
    except InputError as expected:
        with pytest.raises(InputError) as raised:
            decoder.decode(body)
        assert (raised.value.kind, raised.value.errors) == (expected.kind, expected.errors)
        return
    assert_same_batch(decoder.decode(body), careful)


@pytest.mark.parametrize("rows", [1, 300])
def test_response_holds_each_model_input_as_a_json_float(rows):
    """Every input is written as a float (indicators as 0.0 and 1.0, never 0, 1 or true), equal to
    the matrix the model scored, under its own name."""
    model = load_model(MODEL_DIR)
    body = json.dumps(variant_records(SEED + 5, rows=rows)).encode()
    columns = JsonDecoder(Decoder(model.numeric_inputs), 10_000).decode(body)
    prediction = PredictionService(model).predict(columns)
    scores = prediction.scores
    results = json.loads(JsonEncoder(scores.names).encode(prediction))
    assert len(results) == rows
    for row, result in enumerate(results):
        assert type(result.pop("business_outcome")) is int
        assert result.pop("phat") == scores.phat[row]
        assert all(type(value) is float for value in result.values()), result
        assert result == {name: scores.inputs[row, i] for i, name in enumerate(model.plan.names)}
    if rows > 1:      # both indicator values occur
        indicators = [name for name in model.plan.names if "_" in name]
        assert {result[name] for result in results for name in indicators} == {0.0, 1.0}
