"""Every way a request can be wrong: the status, the problem document, and a service that keeps serving."""
from __future__ import annotations

import copy
import json
import logging
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ad_purchase.schema import FIELDS

from api_support import (JSON, ROOT, assert_problem, assert_result_shape, assert_safe_body, assert_still_serving,
                         client, example, example_bytes, make_app, post)

PLACEHOLDER = "__VALUE__"

http = client()                      # the shared app: default limits, shipped model
limited = client(MAX_BATCH_ROWS=5)   # a small row limit


def single_with(field: str, raw: bytes) -> bytes:
    """The single example with `field`'s value replaced by raw JSON bytes (valid or not)."""
    item = example("single")
    item[field] = PLACEHOLDER
    return json.dumps(item).encode().replace(f'"{PLACEHOLDER}"'.encode(), raw)


def single_with_key(raw_key: bytes) -> bytes:
    item = example("single")
    item[PLACEHOLDER] = "extra"
    return json.dumps(item).encode().replace(f'"{PLACEHOLDER}"'.encode(), b'"' + raw_key + b'"')


def record(**changes) -> dict:
    out = copy.deepcopy(example("single"))
    out.update(changes)
    return out


ABSENT = "<no value: the key is absent>"


def located(body: dict) -> list[tuple]:
    """(row, field, value) of each error; an absent key's error carries no value at all."""
    return [(e["row"], e["field"], e.get("value", ABSENT)) for e in body["errors"]]


SINGLE = example_bytes("single")
BATCH = example_bytes("batch")

MALFORMED = {
    "not-json": b"not json",
    "open-brace": b"{",
    "missing-value": b'{"x0": }',
    "single-quotes": b"{'x0': 1}",
    "truncated-single": SINGLE[:-10],
    "truncated-batch": BATCH[: len(BATCH) // 2],
    "truncated-string": SINGLE[: SINGLE.index(b"sunday") + 3],
    "empty-body": b"",
    "whitespace-only": b" \n\t ",
    "nan-literal": single_with("x0", b"NaN"),
    "infinity-literal": single_with("x0", b"Infinity"),
    "minus-infinity-literal": single_with("x91", b"-Infinity"),
    "nan-literal-in-currency": single_with("x12", b"NaN"),
    "deep-arrays": b"[" * 100_000,
    "deep-arrays-closed": b"[" * 100_000 + b"]" * 100_000,
    "deep-objects": b'{"a":' * 100_000,
    "deep-array-in-a-field": single_with("x0", b"[" * 100_000 + b"]" * 100_000),
    "deep-object-in-ignored-key": single_with_key(b"zz").replace(b'"extra"', b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    "invalid-utf8-body": b"\xff\xfe\xfd",
    "invalid-utf8-in-category": single_with("x5", b'"sun\xffday"'),
    "invalid-utf8-in-number": single_with("x0", b'"1.5\xff"'),
    "invalid-utf8-in-ignored-key": single_with_key(b"note\xc3"),
    "overlong-utf8": single_with("x5", b'"\xc0\xafsunday"'),
    "utf16-body": SINGLE.decode().encode("utf-16"),
    "lone-surrogate-escape": single_with("x5", b'"\\ud800"'),
    "top-level-string": b'"hello"',
    "top-level-number": b"42",
    "top-level-null": b"null",
    "top-level-true": b"true",
    "array-of-numbers": b"[1, 2, 3]",
    "array-with-a-non-object": b"[" + SINGLE + b", 1]",
    "array-with-null": b"[" + SINGLE + b", null]",
    "array-of-arrays": b"[[" + SINGLE + b"]]",
    "array-with-string": b'["' + b"x" * 10 + b'"]',
    "empty-array": b"[]",
    "trailing-garbage": SINGLE + b"x",
    "two-documents": SINGLE + SINGLE,
    "trailing-comma": b"[" + SINGLE + b",]",
}


# ---------------------------------------------------------------- 400

@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_body_is_400_and_the_service_keeps_serving(name):
    body = assert_problem(post(http, body=MALFORMED[name]), 400)
    assert "errors" not in body or body["errors"] == []
    assert_still_serving(http)


def test_non_object_rows_are_named():
    body = assert_problem(post(http, body=b"[" + SINGLE + b", 7, " + SINGLE + b', "x"]'), 400)
    assert "1" in body["detail"] and "3" in body["detail"]


# ---------------------------------------------------------------- 413

def test_batch_over_the_row_limit_is_413():
    rows = [example("single")] * 6
    body = assert_problem(post(limited, rows), 413)
    assert "5" in body["detail"] and "6" in body["detail"]
    assert_still_serving(limited)


def test_row_limit_is_checked_before_the_rows_are_validated():
    assert_problem(post(limited, [{}] * 1000), 413)
    assert_still_serving(limited)


def test_body_over_the_size_limit_is_413():
    small = client(MAX_CONTENT_LENGTH=len(SINGLE) + 100)
    assert post(small, body=SINGLE).status_code == 200
    assert_problem(post(small, body=BATCH), 413)
    assert_problem(post(small, body=SINGLE + b" " * 200), 413)
    assert_still_serving(small)


# ---------------------------------------------------------------- 415

@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "application/xml",
    "text/json", "application/problem+json", "application/octet-stream", None,
], ids=repr)
def test_other_media_types_are_415(content_type):
    body = assert_problem(post(http, body=SINGLE, content_type=content_type), 415)
    assert "application/json" in body["detail"]
    assert_still_serving(http)


def test_form_post_is_415():
    assert_problem(http.post("/predict", data={"x0": "1"}), 415)
    assert_still_serving(http)


# ---------------------------------------------------------------- 405 and 404

@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_on_predict_is_405_with_allow(method):
    response = http.open("/predict", method=method, data=SINGLE, headers={"Content-Type": JSON})
    assert_problem(response, 405)
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert "POST" in allowed and method not in allowed


@pytest.mark.parametrize("path", ["/health", "/ready", "/model"])
def test_post_on_read_only_endpoints_is_405(path):
    response = http.post(path, data=SINGLE, headers={"Content-Type": JSON})
    assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("path", ["/nope", "/predict/extra", "/predict/", "/v1/predict", "/apidocs/ui/missing.js",
                                  "/apidocs/ui/../../api.py", "/apidocs/ui/%2e%2e/%2e%2e/api.py", "/api.py",
                                  "/objs/metadata.json", "/.git/config"])
def test_unknown_path_is_a_404_problem(path):
    response = http.get(path)
    assert_problem(response, 404)
    text = response.get_data(as_text=True)
    assert "import " not in text and "sha256" not in text.lower()


# ---------------------------------------------------------------- 422

def test_every_problem_in_a_record_is_listed():
    item = record(x0="abc", x5="funday", x12=True, x63="%%")
    del item["x99"]
    body = assert_problem(post(http, item), 422)
    assert located(body) == [(0, "x0", "abc"), (0, "x5", "funday"), (0, "x12", True), (0, "x63", "%%"),
                             (0, "x99", ABSENT)]
    assert body["total_errors"] == 5
    assert all(isinstance(e["message"], str) and e["message"] for e in body["errors"])
    assert_still_serving(http)


def test_one_bad_row_fails_the_whole_batch_and_is_named():
    rows = example("batch")
    rows[2]["x31"] = "atlantis"
    body = assert_problem(post(http, rows), 422)
    assert located(body) == [(2, "x31", "atlantis")]
    assert "2" in body["detail"]
    assert_still_serving(http)


def test_rows_are_zero_based_array_indices():
    rows = example("batch")
    rows[0]["x0"] = "bad"
    rows[3]["x82"] = "bad"
    body = assert_problem(post(http, rows), 422)
    assert located(body) == [(0, "x0", "bad"), (3, "x82", "bad")]


def test_reported_errors_are_capped_and_counted():
    body = assert_problem(post(limited, [{}] * 5), 422)
    assert body["total_errors"] == 5 * len(FIELDS)
    assert located(body) == [(0, field, ABSENT) for field in FIELDS]
    assert_still_serving(limited)


def test_cap_spans_rows_in_order():
    bad = record(**{f: "bad" for f in FIELDS[:60]})
    body = assert_problem(post(limited, [bad, bad]), 422)
    assert body["total_errors"] == 120
    assert located(body) == [(0, f, "bad") for f in FIELDS[:60]] + [(1, f, "bad") for f in FIELDS[:40]]


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, [], {}, [[[["deep"]]]]], ids=repr)
def test_structured_values_are_field_errors(value):
    body = assert_problem(post(http, record(x0=value, x5=value)), 422)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, "x0"), (0, "x5")]
    assert all("value" in e for e in body["errors"])


def test_huge_integer_is_a_field_error():
    body = assert_problem(post(http, body=single_with("x91", b"9" * 400)), 422)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, "x91")]
    body = assert_problem(post(http, body=single_with("x12", b"-" + b"9" * 400)), 422)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, "x12")]
    assert_still_serving(http)


@pytest.mark.parametrize("literal", [b"1e400", b"-1e999", b"1" + b"0" * 400])
def test_a_number_beyond_the_float_range_is_a_422_however_it_is_written(literal):
    """1e400 is valid JSON like 10**400 written out: both are values that cannot be used."""
    body = assert_problem(post(http, body=single_with("x91", literal)), 422)
    [error] = body["errors"]
    assert (error["row"], error["field"]) == (0, "x91")
    assert error["message"].startswith("must be a finite number")
    assert_still_serving(http)


def test_a_json_body_may_start_with_a_byte_order_mark():
    plain = post(http, body=example_bytes("batch"))
    marked = post(http, body=b"\xef\xbb\xbf" + example_bytes("batch"))
    assert (marked.status_code, marked.get_data()) == (200, plain.get_data())


@pytest.mark.parametrize("key, payload", [("data", "batch"), ("instances", "batch"), ("input_data", "single"),
                                          ("inputs", "batch"), ("records", "single")])
def test_a_wrapped_body_is_a_400_naming_the_wrapper(key, payload):
    body = assert_problem(post(http, {key: example(payload)}), 400)
    assert f"not an object with key '{key}'" in body["detail"]
    assert "errors" not in body                      # not a hundred "required field is missing"
    body = assert_problem(post(http, [{key: example(payload)}]), 400)
    assert f"not an object with key '{key}'" in body["detail"] and "row 0" in body["detail"]


def test_an_object_without_fields_and_nothing_inside_is_still_a_422():
    body = assert_problem(post(http, {"note": "hello"}), 422)
    assert body["total_errors"] == len(FIELDS)


def test_a_long_value_is_echoed_cut_and_the_error_says_so():
    long_value = "7" * 20 + "x" * 50_000_000
    response = post(http, record(x4=long_value))
    body = assert_problem(response, 422)
    assert len(response.get_data()) < 64 * 1024
    [error] = body["errors"]
    assert error["value"] == long_value[:200]
    assert "first 200 of 50,000,020 characters" in error["message"]


def test_no_error_body_exceeds_64_kb():
    """A hundred errors whose values are all escapes would take 120 KB: fewer are listed."""
    bad = record(**{field: "\u0001" * 200 for field in FIELDS if field not in ("x5", "x31", "x81", "x82")})
    response = post(http, [bad, bad])
    body = assert_problem(response, 422)
    assert len(response.get_data()) <= 64 * 1024
    assert body["total_errors"] == 2 * 96
    assert 0 < len(body["errors"]) < 100 and f"The first {len(body['errors'])} are listed." in body["detail"]
    assert all(error["value"] == "\u0001" * 200 for error in body["errors"])


@pytest.mark.parametrize("value, explained", [("true", True), ("1", True), ("false", False), ("0", False)])
def test_explain_takes_the_documented_values(value, explained):
    response = http.post(f"/predict?explain={value}", data=example_bytes("single"), headers={"Content-Type": JSON})
    assert response.status_code == 200
    assert ("contributions" in response.get_json()) is explained


@pytest.mark.parametrize("value", ["null", "", "yes", "TRUE", "2", "true%20", "x" * 5000])
def test_any_other_explain_value_is_a_400_naming_the_parameter(value):
    response = http.post(f"/predict?explain={value}", data=example_bytes("single"), headers={"Content-Type": JSON})
    body = assert_problem(response, 400)
    assert body["parameter"] == "explain" and "explain must be one of true, false, 1, 0" in body["detail"]
    assert len(response.get_data()) < 2000


def test_escaped_infinity_is_still_rejected():
    for raw in (b'"\\u0069nf"', b'"In\\u0066inity"', b'"-\\u0069nf"'):
        body = assert_problem(post(http, body=single_with("x91", raw)), 422)
        assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, "x91")]


# ---------------------------------------------------------------- 500 and 503

def _fail(*args, **kwargs):
    raise RuntimeError(f"boom in {ROOT}/model_utils.py, line 3")


def test_unexpected_failure_in_a_view_is_a_generic_500_problem(caplog):
    app = make_app()
    app.add_url_rule("/failing", "failing", _fail)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/failing")
    body = assert_problem(response, 500)
    assert "boom" not in body["detail"]
    assert "boom" in caplog.text
    assert app.test_client().get("/ready").status_code == 200


def test_unexpected_failure_while_decoding_is_a_generic_500_problem(monkeypatch, caplog):
    app = make_app()
    monkeypatch.setattr(app.extensions["service"].json, "decode", _fail)
    with caplog.at_level(logging.ERROR):
        response = post(app.test_client(), body=SINGLE)
    body = assert_problem(response, 500)
    assert "boom" not in body["detail"]
    assert "boom" in caplog.text
    assert app.test_client().get("/ready").status_code == 200


# ---------------------------------------------------------------- no leaks anywhere

def test_no_response_leaks_internals():
    requests = [("GET", "/health"), ("GET", "/ready"), ("GET", "/model"), ("GET", "/apispec.json"),
                ("GET", "/predict"), ("DELETE", "/model"), ("GET", "/favicon.ico"), ("OPTIONS", "/predict"),
                ("HEAD", "/health"), ("GET", "/apidocs/ui/")]
    for method, path in requests:
        response = http.open(path, method=method)
        assert response.status_code < 500, (method, path)
        assert_safe_body(response)


# ---------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_break_the_service(body):
    response = post(http, body=body)
    assert response.status_code in (400, 422), response.get_data(as_text=True)[:300]
    assert_problem(response, response.status_code)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_never_breaks_the_service(value):
    response = post(http, body=json.dumps(value).encode())
    assert response.status_code in (400, 422), response.get_data(as_text=True)[:300]
    assert_problem(response, response.status_code)


field_values = (st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats()
                | st.sampled_from(["", "nan", "NA", " 1.5 ", "1e5", "inf", "-nan", "null", "$1,000.00", "(5)",
                                   "($5.00)", "12%", "SUNDAY", " asia", "july", "male", "x", "１２", "\u00a0"])
                | st.text(max_size=6))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), field_values, min_size=1, max_size=6))
def test_arbitrary_field_values_give_a_score_or_a_422_on_those_fields(changes):
    item = record(**changes)
    response = post(http, body=json.dumps(item, allow_nan=True).encode())
    if any(isinstance(v, float) and not math.isfinite(v) for v in changes.values()):   # NaN/Infinity: not JSON
        assert_problem(response, 400)
        return
    if response.status_code == 200:
        assert_result_shape(response.get_json())
        return
    body = assert_problem(response, 422)
    assert {e["field"] for e in body["errors"]} <= set(changes)
    assert all(e["row"] == 0 for e in body["errors"])


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("batch", [False, True])
def test_a_bare_nan_or_infinity_names_the_token_its_byte_and_null(token, batch):
    """What Python's json.dumps (and clients built on it) write for a missing or infinite value."""
    item = record(x44=float(token.replace("Infinity", "inf")))
    body = json.dumps([record(), item] if batch else item, allow_nan=True).encode()
    detail = assert_problem(post(http, body=body), 400)["detail"]
    at = body.index(token.encode())
    assert f"The token {token} at byte {at}" in detail, detail
    assert "send null" in detail


@pytest.mark.parametrize("payload", ["single", "batch"])
def test_a_body_encoded_twice_is_a_400_that_says_so(payload):
    twice = json.dumps(json.dumps(example(payload))).encode()
    detail = assert_problem(post(http, body=twice), 400)["detail"]
    assert "encoded twice" in detail and "got a string" in detail
    plain_string = assert_problem(post(http, body=b'"hello"'), 400)["detail"]
    assert "encoded twice" not in plain_string
    inside = assert_problem(post(http, body=json.dumps([json.dumps(example("single"))]).encode()), 400)["detail"]
    assert "encoded twice" in inside


def test_a_long_run_of_f_in_an_ignored_key_costs_what_any_other_letter_costs():
    """The typed reading's scan for spellings of infinity is one C-speed pass, not a Python loop
    per letter: a body full of "f" is answered about as fast as one full of "x" (it took over a
    hundred times as long when each "f" was looked at in Python)."""
    def seconds(letter: str) -> float:
        item = record()
        item["note"] = letter * 20_000_000
        body = json.dumps(item).encode()
        started = time.perf_counter()
        response = post(http, body=body)
        assert response.status_code == 200
        return time.perf_counter() - started
    plain = min(seconds("x") for _ in range(2))
    assert min(seconds("f") for _ in range(2)) < 3 * plain + 0.2
