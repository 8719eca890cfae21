"""Property tests of request parsing and validation.

Whatever JSON a client posts, /predict answers 200 with results in the contract's shape or a 4xx
problem document, never a 5xx; which of the two is decided by the schema's published rules
(its parsers), used here as the oracle.  The schema parsers themselves either read a
value or raise FieldError, and the decoder's fast path never disagrees with its careful path.
"""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import msgspec

from ad_purchase.core import PredictionService
from ad_purchase.core.decoding import Decoder
from ad_purchase.codecs import JsonDecoder, JsonEncoder, json_codec
from ad_purchase.model import load_model
from ad_purchase.schema import CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, CURRENCY_FIELD, FIELDS, MAX_MAGNITUDE, NUMERIC_FIELDS, PERCENT_FIELD, Columns, InputError, Problem
from ad_purchase.core.decoding import FieldError, is_missing, numeric_parser, parse_currency, parse_level, parse_number, parse_percent
from ad_purchase.serving.app import create_app

from api_support import MODEL_DIR, assert_result_shape, assert_safe_body, example

pytestmark = pytest.mark.properties

SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

APP = create_app({"MODEL_DIR": str(MODEL_DIR)})
CLIENT = APP.test_client()
MAX_ROWS = APP.extensions["service"].settings.MAX_BATCH_ROWS
MODEL = load_model(MODEL_DIR)
SERVICE = PredictionService(MODEL)
DECODER = JsonDecoder(SERVICE.request_decoder, MAX_ROWS)
ENCODER = JsonEncoder(MODEL.plan.names)
SINGLE = example("single")

# ------------------------------------------------------------------ strategies

# Text without lone surrogates: JSON cannot carry them as UTF-8, so they are not a value a client sends.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
# Text close to the spellings the parsers look for: digits (ASCII and other decimal digits), signs,
# exponents, currency and percent marks, missing markers, "inf", whitespace of several kinds.
NUMBERISH = st.text(st.sampled_from(list("0123456789.eE+-%$,() nNaAiIfFlLuU_\t\u00a0\u0663\uff11x")), max_size=14)

ANY_FINITE = st.floats(allow_nan=False, allow_infinity=False)
# For valid batches: finite floats within the magnitude the decoder accepts for model inputs.
ACCEPTED_FLOATS = st.floats(min_value=-MAX_MAGNITUDE, max_value=MAX_MAGNITUDE,
                            allow_nan=False, allow_infinity=False)


def json_values(floats=ANY_FINITE):
    scalars = st.none() | st.booleans() | st.integers() | floats | TEXT
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(TEXT, inner, max_size=4), max_leaves=8)


@st.composite
def level_spelling(draw, field: str) -> str:
    """A level of `field` with random letter case and surrounding whitespace."""
    level = draw(st.sampled_from(CATEGORICAL_LEVELS[field]))
    flips = draw(st.lists(st.booleans(), min_size=len(level), max_size=len(level)))
    cased = "".join(c.upper() if up else c.lower() for c, up in zip(level, flips))
    pad = st.sampled_from(["", " ", "  ", "\t", " \n"])
    return draw(pad) + cased + draw(pad)


@st.composite
def mutated_record(draw) -> dict:
    """The single example with a few fields replaced by arbitrary JSON or text, levels re-spelled,
    maybe a field dropped and maybe an extra key."""
    record = dict(SINGLE)
    for field in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=4)):
        record[field] = draw(json_values() | TEXT | NUMBERISH)
    for field in draw(st.lists(st.sampled_from(CATEGORICAL_FIELDS), unique=True)):
        record[field] = draw(level_spelling(field))
    if draw(st.integers(0, 9)) == 0:
        del record[draw(st.sampled_from(FIELDS))]
    if draw(st.booleans()):
        record[draw(TEXT)] = draw(json_values())
    return record


# ------------------------------------------------------------------ the oracle


def field_valid(field: str, value) -> bool:
    """The schema's reading of the value, plus the decoder's documented bound on model inputs
    (larger ones would overflow once standardised)."""
    try:
        if field in CATEGORICAL_LEVELS:
            parse_level(field, value)
            return True
        number = numeric_parser(field)(value)
    except FieldError:
        return False
    return not (field in DECODER.decoder.numeric_fields and abs(number) > MAX_MAGNITUDE)


def looks_wrapped(record: dict) -> bool:
    """An object holding records rather than being one: none of the fields, and an object or an
    array under some key ({"data": [...]})."""
    return not any(field in record for field in FIELDS) and any(isinstance(v, (dict, list)) for v in record.values())


def expected_status(payload) -> int:
    """What the published rules say about a payload: 400 for the wrong shape (a wrapped body
    included), 422 for any invalid or missing field, else 200."""
    if isinstance(payload, dict):
        records = [payload]
    elif isinstance(payload, list) and payload and all(isinstance(r, dict) for r in payload):
        records = payload
    else:
        return 400
    if len(records) > MAX_ROWS:
        return 413
    if looks_wrapped(records[0]):
        return 400
    ok = all(f in r and field_valid(f, r[f]) for r in records for f in FIELDS)
    return 200 if ok else 422


def post(payload, query: str = ""):
    return CLIENT.post("/predict" + query, data=json.dumps(payload).encode(),
                       headers={"Content-Type": "application/json"})


def check_answer(payload, response) -> None:
    status = response.status_code
    want = expected_status(payload)
    event(f"status {status}")
    assert status < 500, (status, response.get_data(as_text=True)[:300])
    assert status == want, (status, want, response.get_data(as_text=True)[:300])
    assert_safe_body(response)
    if status == 200:
        assert response.mimetype == "application/json"
        body = response.get_json()
        results = [body] if isinstance(payload, dict) else body
        assert isinstance(body, dict if isinstance(payload, dict) else list)
        assert len(results) == (1 if isinstance(payload, dict) else len(payload))
        for result in results:
            assert_result_shape(result)
        return
    assert response.mimetype == "application/problem+json"
    problem = json.loads(response.get_data())
    assert problem["status"] == status
    assert all(isinstance(problem[k], str) and problem[k] for k in ("type", "title", "detail"))
    assert problem["request_id"] == response.headers["X-Request-ID"]
    if status == 422:
        rows = len(payload) if isinstance(payload, list) else 1
        assert problem["errors"] and problem["total_errors"] >= len(problem["errors"])
        for error in problem["errors"]:
            assert 0 <= error["row"] < rows and error["field"] in FIELDS and error["message"]


# ------------------------------------------------------------------ the HTTP contract


@SETTINGS
@given(payload=json_values())
def test_any_json_value_gets_a_result_or_a_client_error(payload):
    check_answer(payload, post(payload))


@SETTINGS
@given(payload=mutated_record() | st.lists(mutated_record(), min_size=1, max_size=3))
def test_mutated_records_get_a_result_or_a_client_error(payload):
    check_answer(payload, post(payload))


@settings(SETTINGS, max_examples=100)
@given(data=st.data())
def test_level_case_and_spaces_do_not_change_the_score(data):
    record = dict(SINGLE)
    for field in CATEGORICAL_FIELDS:
        record[field] = data.draw(level_spelling(field), label=field)
    canonical = {**record, **{f: parse_level(f, record[f]) for f in CATEGORICAL_FIELDS}}
    respelled, reference = post(record), post(canonical)
    assert respelled.status_code == 200 == reference.status_code, respelled.get_data(as_text=True)[:300]
    assert respelled.get_json() == reference.get_json()


# Finite values whose model inputs would overflow when scaled ((value - mean) / scale with scale < 1)
# and could cancel into a NaN log-odds: a 422 naming them, or (if ever accepted) finite results.
HUGE_INPUTS = {
    "one-overflowing-input": ({"x91": "1e308"}, ""),
    "two-overflowing-inputs": ({"x91": "1e308", "x44": "1e308"}, ""),
    "as-json-numbers": ({"x91": 1.7e308, "x53": -1.7e308}, ""),
    "explained": ({"x91": "1e308"}, "?explain=true"),
}


@pytest.mark.parametrize("case", sorted(HUGE_INPUTS))
def test_huge_model_inputs_keep_the_contract(case):
    changes, query = HUGE_INPUTS[case]
    for payload in ({**SINGLE, **changes}, [SINGLE, {**SINGLE, **changes}]):
        response = post(payload, query)
        assert response.status_code in (200, 422), (response.status_code, response.get_data(as_text=True)[:300])
        if response.status_code == 422:
            assert {e["field"] for e in response.get_json()["errors"]} <= set(changes)
            continue
        body = response.get_json()
        for result in [body] if isinstance(body, dict) else body:
            if query:
                contributions = result.pop("contributions")
                assert all(math.isfinite(v) for v in contributions.values()), contributions
            assert_result_shape(result)


# ------------------------------------------------------------------ the schema's parsers

ANY_INPUT = (json_values() | TEXT | NUMBERISH | st.floats() | st.integers(min_value=-(10 ** 400), max_value=10 ** 400)
             | st.binary(max_size=8) | st.tuples(st.integers()) | st.just(object()))


@SETTINGS
@given(value=ANY_INPUT, parser=st.sampled_from([parse_number, parse_currency, parse_percent]))
def test_numeric_parsers_return_a_float_or_raise_field_error(value, parser):
    try:
        number = parser(value)
    except FieldError as exc:
        assert str(exc)
        return
    assert type(number) is float
    assert math.isfinite(number) or (math.isnan(number) and is_missing(value))


@SETTINGS
@given(value=ANY_INPUT, field=st.sampled_from(CATEGORICAL_FIELDS))
def test_parse_level_returns_a_level_or_raises_field_error(value, field):
    try:
        level = parse_level(field, value)
    except FieldError as exc:
        assert str(exc)
        return
    assert level in CATEGORICAL_LEVELS[field] or (level is None and is_missing(value))


@SETTINGS
@given(value=st.one_of(st.sampled_from(CATEGORICAL_FIELDS).flatmap(level_spelling)))
def test_parse_level_reads_any_case_and_surrounding_space(value):
    matches = [(f, lvl) for f, levels in CATEGORICAL_LEVELS.items() for lvl in levels
               if lvl.lower() == value.strip().lower()]
    assert matches
    for field, level in matches:
        assert parse_level(field, value) == level


AMOUNTS = st.floats(min_value=0, max_value=1e9, allow_nan=False)


@SETTINGS
@given(amount=AMOUNTS, style=st.sampled_from(["plain", "parens", "minus"]), pad=st.sampled_from(["", " ", "  "]))
def test_formatted_currency_round_trips(amount, style, pad):
    text, sign = {"plain": (f"${amount:,.2f}", 1), "parens": (f"(${amount:,.2f})", -1),
                  "minus": (f"$-{amount:,.2f}", -1)}[style]
    parsed = parse_currency(pad + text + pad)
    assert abs(parsed - sign * amount) <= 0.005 + 1e-9, (text, parsed)


@SETTINGS
@given(amount=st.floats(min_value=-1e9, max_value=1e9, allow_nan=False))
def test_signed_plain_currency_round_trips(amount):
    assert abs(parse_currency(f"${amount:,.2f}") - amount) <= 0.005 + 1e-9


# ------------------------------------------------------------------ fast and careful decoding agree

MISSING_MARKERS = [None, "nan", "NaN", "NA", "na", "", " nan ", "null"]
MISSING = st.sampled_from(MISSING_MARKERS)


def number_spelling(values=ACCEPTED_FLOATS):
    return (values | values.map(repr) | values.map(lambda v: f"{v:.10g}")
            | st.integers(-10 ** 15, 10 ** 15) | st.integers(-10 ** 15, 10 ** 15).map(str))


# Spellings the fast path decodes by itself (what clean client data looks like), and the rest,
# which send a body to the careful path.  Bodies are built mostly clean so that the property
# compares the two paths rather than the careful path with itself.
CLEAN_MISSING = [None, "nan"]


def _respell(rng: random.Random, level: str, clean: bool) -> str:
    cased = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in level)
    pads = ["", " ", "  "] if clean else ["", " ", "\t", "\n "]
    return rng.choice(pads) + cased + rng.choice(pads)


def _random_value(rng: random.Random, field: str, clean: bool):
    """A valid value of `field` in one of the spellings the client uses, from a seeded generator
    (drawing all 100 fields through hypothesis one by one is too slow for a batch property)."""
    if rng.random() < 0.05:
        return rng.choice(CLEAN_MISSING if clean else MISSING_MARKERS)
    if field in CATEGORICAL_LEVELS:
        return _respell(rng, rng.choice(CATEGORICAL_LEVELS[field]), clean)
    number = rng.gauss(0, 1) * 10 ** rng.randint(-6, 9)
    if field == CURRENCY_FIELD:
        amount = abs(round(number, 2))
        return rng.choice([f"${amount:,.2f}", f"(${amount:,.2f})", f"$-{amount:,.2f}", f"{amount:.2f}",
                           f"${amount:,.2f} ", amount, -amount])
    if field == PERCENT_FIELD:
        share = abs(number) % 100
        return rng.choice([f"{share:.2f}%", f"{share:.2f}", repr(share), share])
    spellings = [number, repr(number), f"{number:.10g}", int(number), str(int(number)), f"{number:.3e}"]
    return rng.choice(spellings if clean else [*spellings, f" {number:.4f} ", f"+{abs(number)!r}"])


@st.composite
def valid_record(draw, numeric=None) -> dict:
    """Every field valid: most from a seeded generator, a few drawn by hypothesis (so they shrink)."""
    rng = random.Random(draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    clean = draw(st.integers(0, 3), label="clean") > 0
    record = {field: _random_value(rng, field, clean) for field in FIELDS}
    spelling = number_spelling() if numeric is None else numeric
    missing = st.sampled_from(CLEAN_MISSING) if clean else MISSING
    for field in draw(st.lists(st.sampled_from(NUMERIC_FIELDS), unique=True, max_size=6)):
        record[field] = draw(spelling | missing)
    for field in draw(st.lists(st.sampled_from(CATEGORICAL_FIELDS), unique=True, max_size=2)):
        record[field] = draw(level_spelling(field) | missing)
    return record


def assert_same_columns(left: Columns, right: Columns) -> None:
    assert (left.rows, left.single) == (right.rows, right.single)
    for field in DECODER.decoder.numeric_fields:
        a, b = left.column(field), right.column(field)
        assert np.array_equal(np.isnan(a), np.isnan(b)), field
        assert np.array_equal(a[~np.isnan(a)], b[~np.isnan(b)]), field
    for field in CATEGORICAL_FIELDS:
        assert np.array_equal(left.column(field), right.column(field)), field


def encode(records: list[dict], single: bool) -> bytes:
    return json.dumps(records[0] if single else records).encode()


@SETTINGS
@given(records=st.lists(valid_record(), min_size=1, max_size=4), single=st.booleans())
def test_fast_and_careful_decoding_agree_on_valid_batches(records, single):
    body = encode(records, single)
    decoded = DECODER.decode(body)
    try:
        DECODER._decode_typed(body)
        event("typed path")
    except (msgspec.DecodeError, json_codec._ReadAsSent):
        event("read as sent")
    assert_same_columns(decoded, DECODER._decode_as_sent(body))


@SETTINGS
@given(records=st.lists(valid_record(numeric=number_spelling() | NUMBERISH), min_size=1, max_size=3),
       single=st.booleans())
def test_fast_path_accepts_nothing_the_careful_path_rejects(records, single):
    """Number-like text in the numeric fields: whenever the fast path takes a body on its own,
    the careful path (the schema's rules, field by field) takes it too and reads the same values."""
    body = encode(records, single)
    try:
        fast = DECODER._decode_typed(body)
    except (msgspec.DecodeError, FieldError, RecursionError, json_codec._ReadAsSent):
        event("fast path declined")
        return
    event("fast path decoded")
    assert_same_columns(fast, DECODER._decode_as_sent(body))


def test_a_clean_synthetic_batch_takes_the_fast_path():
    """The agreement above matters because clean client data is decoded by the fast path."""
    from ad_purchase.training import synthetic
    body = json.dumps(synthetic.to_records(synthetic.generate(50, seed=11))).encode()
    batch = DECODER._decode_typed(body)            # raises when the typed path declines
    assert batch.rows == 50
    assert_same_columns(batch, DECODER._decode_as_sent(body))


@SETTINGS
@given(records=st.lists(valid_record(), min_size=2, max_size=5))
def test_a_row_scores_the_same_bits_alone_as_inside_a_batch(records):
    """One row takes its own scoring and encoding paths; they must give exactly the batch paths'
    inputs, phat and answer bytes."""
    batch = MODEL.score(DECODER.decode(encode(records, single=False)))
    answers = ENCODER.records(batch)
    for row, record in enumerate(records):
        prediction = SERVICE.predict(DECODER.decode(encode([record], single=True)))
        alone = prediction.scores
        assert ENCODER.encode(prediction) == msgspec.json.encode(answers[row]), row
        assert alone.inputs.dtype == batch.inputs.dtype and alone.phat.dtype == batch.phat.dtype
        assert alone.inputs.tobytes() == batch.inputs[row:row + 1].tobytes(), row
        assert alone.phat.tobytes() == batch.phat[row:row + 1].tobytes(), row
        assert alone.outcome.tolist() == batch.outcome[row:row + 1].tolist(), row


def test_the_row_limit_holds_for_a_single_record_too():
    """A one-record body has its own decoding path; the batch limit applies to it all the same."""
    decoder = JsonDecoder(Decoder(MODEL.numeric_inputs), max_rows=0)
    for single in (True, False):
        with pytest.raises(InputError) as caught:
            decoder.decode(encode([SINGLE], single))
        assert caught.value.kind is Problem.TOO_MANY_ROWS
