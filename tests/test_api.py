"""The service's HTTP contract for valid requests, its model and readiness endpoints, and its docs."""
from __future__ import annotations

import copy
import json
import logging
import pickle
import re
import shutil
import warnings

import pytest
from statsmodels.iolib.smpickle import load_pickle

from ad_purchase.serving.app import create_app
from ad_purchase.training import synthetic
from ad_purchase.schema import CATEGORICAL_LEVELS, FIELDS, MISSING_STRINGS, NUMERIC_FIELDS
from ad_purchase.core.decoding import is_missing

from api_support import (JSON, MODEL_DIR, ROOT, assert_matches, assert_problem, assert_result_shape,
                         assert_safe_body, client, example, example_bytes, features, file_sha256,
                         metadata, post, predict_ok, reference_predict)

# The contract's missing markers in several spellings, plus any further marker the schema defines.
CONTRACT_MARKERS = [None, "", "nan", "NaN", "NAN", "nA", "NA", "na", " NaN ", " na"]
MISSING_MARKERS = CONTRACT_MARKERS + sorted(
    {variant for word in MISSING_STRINGS for variant in (word, word.upper(), f" {word.title()} ")}
    - set(CONTRACT_MARKERS))


@pytest.fixture(scope="module")
def http():
    return client()


@pytest.fixture(scope="module")
def artifacts():
    """The fitted numbers, read straight from the pickles."""
    with open(MODEL_DIR / "imputer.pkl", "rb") as handle:
        imputer = pickle.load(handle)
    with open(MODEL_DIR / "std_scaler.pkl", "rb") as handle:
        scaler = pickle.load(handle)
    return imputer, scaler


def scaled(artifacts, field: str, raw: float | None) -> float:
    """A numeric field as the model sees it: mean-imputed when missing, then standardised."""
    imputer, scaler = artifacts
    i = list(NUMERIC_FIELDS).index(field)
    value = imputer.statistics_[i] if raw is None else raw
    return float((value - scaler.mean_[i]) / scaler.scale_[i])


def record(**changes) -> dict:
    """The single example with some fields replaced."""
    out = copy.deepcopy(example("single"))
    out.update(changes)
    return out


def numeric_model_fields() -> list[str]:
    return [name for name in features() if "_" not in name]


# ---------------------------------------------------------------- liveness, readiness, model facts

def test_health(http):
    response = http.get("/health")
    assert response.status_code == 200
    assert response.mimetype == JSON
    assert response.get_json()["status"] == "ok"


def test_ready_names_the_model(http):
    response = http.get("/ready")
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"] == metadata()["model_name"]
    assert body["version"] == metadata()["model_version"]


def test_model_endpoint_reports_the_shipped_artifacts(http):
    response = http.get("/model")
    assert response.status_code == 200
    body = response.get_json()
    meta = metadata()
    assert body["model_name"] == meta["model_name"]
    assert body["model_version"] == meta["model_version"]
    assert body["trained_at"] == meta["trained_at"]
    assert body["features"] == list(features())
    assert len(body["features"]) == 25
    params = load_pickle(str(MODEL_DIR / "ad_purchase_model.pickle")).params
    assert set(body["coefficients"]) == set(features())
    for name in features():
        assert body["coefficients"][name]["coef"] == pytest.approx(float(params[name]), abs=1e-12)
    assert body["cutoff"] == meta["cutoff"]
    assert 0.0 < body["cutoff"] < 1.0
    assert body["auc"] == meta["auc"]
    assert all(0.5 < value <= 1.0 for value in body["auc"].values())
    expected_files = {"imputer.pkl", "std_scaler.pkl", "variables.pickle", "ad_purchase_model.pickle"}
    assert set(body["artifacts"]) == expected_files
    for name, digest in body["artifacts"].items():
        assert digest == file_sha256(MODEL_DIR / name), name


# ---------------------------------------------------------------- shapes and values

def test_single_example_scores_like_the_reference(http):
    result = predict_ok(http, body=example_bytes("single"))
    assert_result_shape(result)
    assert_matches([result], reference_predict([example("single")]))


def test_batch_example_scores_in_order_like_the_reference(http):
    results = predict_ok(http, body=example_bytes("batch"))
    assert isinstance(results, list) and len(results) == len(example("batch"))
    for result in results:
        assert_result_shape(result)
    assert_matches(results, reference_predict(example("batch")))


def test_single_record_in_an_array_gives_an_array_of_one(http):
    results = predict_ok(http, [example("single")])
    assert isinstance(results, list) and len(results) == 1
    assert results[0] == predict_ok(http, example("single"))


def test_record_alone_and_inside_a_batch_score_identically(http):
    records = synthetic.to_records(synthetic.generate(60, seed=11)) + example("batch")
    batch = predict_ok(http, records)
    for row, item in enumerate(records):
        assert predict_ok(http, item) == batch[row], row


def test_batch_order_follows_the_request(http):
    records = example("batch")
    forward = predict_ok(http, records)
    backward = predict_ok(http, records[::-1])
    assert backward == forward[::-1]


def test_batch_of_exactly_the_row_limit_is_accepted():
    limited = client(MAX_BATCH_ROWS=5)
    records = synthetic.to_records(synthetic.generate(5, seed=2))
    results = predict_ok(limited, records)
    assert len(results) == 5
    assert_matches(results, reference_predict(records))


def test_business_outcome_is_phat_at_or_above_the_cutoff(http):
    records = synthetic.to_records(synthetic.generate(300, seed=5))
    results = predict_ok(http, records)
    cutoff = metadata()["cutoff"]
    outcomes = [r["business_outcome"] for r in results]
    assert outcomes == [int(r["phat"] >= cutoff) for r in results]
    assert set(outcomes) == {0, 1}   # the cutoff is the 75th percentile: both classes occur


def test_charset_parameter_on_json_is_accepted(http):
    response = post(http, body=example_bytes("single"), content_type="application/json; charset=utf-8")
    assert response.status_code == 200
    assert response.get_json() == predict_ok(http, body=example_bytes("single"))


# ---------------------------------------------------------------- missing values

@pytest.mark.parametrize("marker", MISSING_MARKERS, ids=repr)
def test_missing_numeric_is_mean_imputed(http, artifacts, marker):
    fields = numeric_model_fields()
    result = predict_ok(http, record(**{f: marker for f in fields}))
    for field in fields:
        assert result[field] == pytest.approx(scaled(artifacts, field, None), abs=1e-12), field
    assert result == predict_ok(http, record(**{f: None for f in fields}))


def test_contract_missing_markers_are_schema_markers():
    assert {"", "nan", "na"} <= MISSING_STRINGS
    assert all(is_missing(marker) for marker in MISSING_MARKERS)


@pytest.mark.parametrize("field", ["x0", "x12", "x31", "x5", "x63", "x91"])
def test_missing_values_score_like_the_reference(http, field):
    items = [record(**{field: marker}) for marker in CONTRACT_MARKERS]
    assert_matches(predict_ok(http, items), reference_predict(items))


@pytest.mark.parametrize("marker", MISSING_MARKERS, ids=repr)
def test_missing_currency_and_percentage_are_imputed(http, artifacts, marker):
    result = predict_ok(http, record(x12=marker, x63=marker))
    assert result["x12"] == pytest.approx(scaled(artifacts, "x12", None), abs=1e-12)
    assert result == predict_ok(http, record(x12=None, x63=None))


@pytest.mark.parametrize("field", sorted(CATEGORICAL_LEVELS))
@pytest.mark.parametrize("marker", MISSING_MARKERS, ids=repr)
def test_missing_category_sets_no_level_indicator(http, field, marker):
    result = predict_ok(http, record(**{field: marker}))
    # x82 has no indicator among the model's inputs; the others do.
    indicators = [name for name in features() if name.startswith(field + "_")]
    assert bool(indicators) == (field != "x82"), field
    for name in indicators:
        # A missing level is the "<field>_nan" column when the model kept it, otherwise no level at all.
        assert result[name] == (1.0 if name == f"{field}_nan" else 0.0), name
    assert result == predict_ok(http, record(**{field: None}))


def test_missing_category_differs_from_a_present_level(http):
    present = predict_ok(http, record(x31="asia"))
    missing = predict_ok(http, record(x31=None))
    assert present["x31_asia"] == 1.0 and missing["x31_asia"] == 0.0


@pytest.mark.parametrize("field", ["x0", "x5", "x12", "x31", "x63", "x91", "x99"])
def test_absent_key_is_a_422_naming_the_field(http, field):
    item = record()
    del item[field]
    body = assert_problem(post(http, item), 422)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, field)]
    assert "value" not in body["errors"][0]         # null would read like the missing marker
    assert "missing" in body["errors"][0]["message"]
    assert body["total_errors"] == 1


def test_keys_beyond_the_schema_are_ignored(http):
    plain = predict_ok(http, record())
    extra = record(x100="anything", X0="ignored", y=1, notes={"a": [1, 2]}, x5_sunday=7)
    assert predict_ok(http, extra) == plain


def test_non_ascii_text_and_escapes_are_read_as_json(http):
    plain = predict_ok(http, record())
    text = json.dumps(record(note="café ☕", x5="sunday"), ensure_ascii=False).encode()
    assert predict_ok(http, body=text) == plain
    escaped = json.dumps(record(x5="sunday")).encode().replace(b'"sunday"', b'"\\u0073unday"')
    assert b"\\u0073" in escaped
    assert predict_ok(http, body=escaped) == plain


# ---------------------------------------------------------------- numbers

def test_numbers_and_numeric_strings_score_the_same(http):
    base = record()
    as_numbers = {k: (float(v) if k in NUMERIC_FIELDS and k not in ("x12", "x63") and v != "nan" else v)
                  for k, v in base.items()}
    assert any(isinstance(v, float) for v in as_numbers.values())
    assert predict_ok(http, as_numbers) == predict_ok(http, base)


def test_integers_and_padded_numeric_strings_are_numbers(http, artifacts):
    field = numeric_model_fields()[0]
    results = [predict_ok(http, record(**{field: value})) for value in (3, 3.0, "3", " 3 ", "3.0", "+3", "3e0")]
    assert all(r == results[0] for r in results)
    assert results[0][field] == pytest.approx(scaled(artifacts, field, 3.0), abs=1e-12)


def test_numeric_model_inputs_are_standardised_values(http, artifacts):
    item = record()
    result = predict_ok(http, item)
    for field in numeric_model_fields():
        raw = item[field]
        if field == "x12":
            continue
        expected = scaled(artifacts, field, None if raw == "nan" else float(raw))
        assert result[field] == pytest.approx(expected, abs=1e-12), field


@pytest.mark.parametrize("field", ["x0", "x12", "x63", "x91"])
@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_numbers(http, field, value):
    body = assert_problem(post(http, record(**{field: value})), 422)
    assert [(e["row"], e["field"], e["value"]) for e in body["errors"]] == [(0, field, value)]


@pytest.mark.parametrize("field", ["x0", "x12", "x63", "x91"])
@pytest.mark.parametrize("value", ["inf", "Infinity", "-inf", "-Infinity", "+inf", "INF", "1e999", "-1e999",
                                   "$1e999", "1e999%"])
def test_non_finite_strings_are_rejected(http, field, value):
    body = assert_problem(post(http, record(**{field: value})), 422)
    assert [(e["row"], e["field"], e["value"]) for e in body["errors"]] == [(0, field, value)]


@pytest.mark.parametrize("value", [v for v in ["null", "NULL", "-nan", "+nan", "None", "n/a", "abc", "1,5", "0x10",
                                                 "1_000", "--1", "1e", ".", "nan nan", "1 2"] if not is_missing(v)])
def test_text_that_is_neither_number_nor_missing_marker_is_rejected(http, value):
    field = numeric_model_fields()[0]
    body = assert_problem(post(http, record(**{field: value})), 422)
    assert [(e["row"], e["field"], e["value"]) for e in body["errors"]] == [(0, field, value)]


@pytest.mark.parametrize("field", ["x91", "x53", "x12", "x0", "x63"])
@pytest.mark.parametrize("value", [1e308, -1e308, "1.7e308", 1e300, -1e300, 10**305])
def test_huge_finite_numbers_never_give_non_numeric_results(http, field, value):
    """A value too large for the model is either refused for its field or scores to plain floats,
    the same way whichever decoding path the request takes."""
    alone = post(http, record(**{field: value}))
    in_careful_batch = post(http, [record(**{field: value}), record(x91="NA")])
    if alone.status_code == 200:
        assert_result_shape(alone.get_json())
        assert in_careful_batch.status_code == 200
        assert in_careful_batch.get_json()[0] == alone.get_json()
    else:
        body = assert_problem(alone, 422)
        assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, field)]
        body = assert_problem(in_careful_batch, 422)
        assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, field)]


@pytest.mark.parametrize("value", [1000, -1000, 1e200, -1e200])
def test_extreme_log_odds_score_cleanly(http, value):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = predict_ok(http, record(x91=value))
    assert_result_shape(result)
    assert result["phat"] == (1.0 if value > 0 else 0.0)


# ---------------------------------------------------------------- x12 and x63 spellings

CURRENCY_SPELLINGS = [
    ("$6,882.34", 6882.34), ("$6,882.34 ", 6882.34), (" $6,882.34", 6882.34), ("$-5,032.58", -5032.58),
    ("($5,032.58)", -5032.58), ("3709.93", 3709.93), ("$66.55", 66.55), ("-12.5", -12.5), ("$0.00", 0.0),
]


@pytest.mark.parametrize("text,amount", CURRENCY_SPELLINGS)
def test_currency_spellings_equal_the_plain_amount(http, artifacts, text, amount):
    spelled = predict_ok(http, record(x12=text))
    assert spelled == predict_ok(http, record(x12=amount))
    assert spelled["x12"] == pytest.approx(scaled(artifacts, "x12", amount), abs=1e-12)


def test_currency_spellings_score_like_the_reference(http):
    items = [record(x12=text) for text, _ in CURRENCY_SPELLINGS]
    assert_matches(predict_ok(http, items), reference_predict(items))


def test_parenthesised_amount_equals_the_negative_number(http):
    assert predict_ok(http, record(x12="($5,032.58)")) == predict_ok(http, record(x12=-5032.58))
    assert predict_ok(http, record(x12="($5,032.58)")) != predict_ok(http, record(x12=5032.58))


@pytest.mark.parametrize("value", ["$abc", "5,032.58$x", "($-5)", "$$", "()", "12.3.4", "€5"])
def test_unreadable_currency_is_rejected(http, value):
    body = assert_problem(post(http, record(x12=value)), 422)
    assert [(e["row"], e["field"], e["value"]) for e in body["errors"]] == [(0, "x12", value)]


def test_percentage_spellings_are_equal(http):
    results = [predict_ok(http, record(x63=v)) for v in ("45.85%", "45.85", 45.85, " 45.85% ")]
    assert all(r == results[0] for r in results)
    assert_matches([results[0]], reference_predict([record(x63="45.85%")]))


@pytest.mark.parametrize("value", ["62.59%%", "%", "abc%", "%12"])
def test_unreadable_percentage_is_rejected(http, value):
    body = assert_problem(post(http, record(x63=value)), 422)
    assert [(e["row"], e["field"], e["value"]) for e in body["errors"]] == [(0, "x63", value)]


# ---------------------------------------------------------------- categories

@pytest.mark.parametrize("field,variant,canonical", [
    ("x5", " SUNDAY ", "sunday"), ("x5", "Saturday", "saturday"), ("x31", "ASIA", "asia"),
    ("x31", " Japan", "japan"), ("x81", " july", "July"), ("x81", "DECEMBER ", "December"),
    ("x82", "MALE ", "Male"), ("x82", "female", "Female"),
])
def test_category_matching_ignores_case_and_spaces(http, field, variant, canonical):
    result = predict_ok(http, record(**{field: variant}))
    assert result == predict_ok(http, record(**{field: canonical}))
    indicator = f"{field}_{canonical}"
    if indicator in features():
        assert result[indicator] == 1.0


@pytest.mark.parametrize("field", sorted(CATEGORICAL_LEVELS))
def test_every_level_is_accepted_and_sets_its_indicator(http, field):
    items = [record(**{field: level}) for level in CATEGORICAL_LEVELS[field]]
    results = predict_ok(http, items)
    for level, result in zip(CATEGORICAL_LEVELS[field], results):
        for name in features():
            if name.startswith(field + "_"):
                assert result[name] == (1.0 if name == f"{field}_{level}" else 0.0), (level, name)
    assert_matches(results, reference_predict(items))


@pytest.mark.parametrize("field,value", [("x5", "funday"), ("x31", "france"), ("x81", "Jan"), ("x82", "other"),
                                         ("x5", "sun day"), ("x31", 3), ("x82", True)])
def test_unknown_level_is_a_422_with_row_field_and_value(http, field, value):
    items = example("batch")
    items[2][field] = value
    body = assert_problem(post(http, items), 422)
    assert [(e["row"], e["field"], e["value"]) for e in body["errors"]] == [(2, field, value)]
    assert body["errors"][0]["message"]


# ---------------------------------------------------------------- readiness with a broken model folder

@pytest.fixture
def model_copy(tmp_path):
    target = tmp_path / "objs"
    shutil.copytree(MODEL_DIR, target)
    return target


def assert_not_ready(app) -> None:
    http_client = app.test_client()
    body = assert_problem(http_client.get("/ready"), 503)
    assert str(ROOT) not in body["detail"]
    assert_problem(post(http_client, body=example_bytes("single")), 503)
    assert_problem(http_client.get("/model"), 503)
    assert http_client.get("/health").status_code == 200


def test_tampered_artifact_makes_the_service_unready(model_copy, caplog):
    path = model_copy / "std_scaler.pkl"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        app = create_app({"MODEL_DIR": str(model_copy)})
    assert_not_ready(app)
    assert "std_scaler.pkl" in caplog.text
    assert "SHA-256" in caplog.text or "sha-256" in caplog.text.lower()


def test_intact_copy_of_the_model_is_ready(model_copy):
    http_client = create_app({"MODEL_DIR": str(model_copy)}).test_client()
    assert http_client.get("/ready").status_code == 200
    assert predict_ok(http_client, body=example_bytes("single")) == predict_ok(client(), body=example_bytes("single"))


@pytest.mark.parametrize("name", ["imputer.pkl", "variables.pickle", "ad_purchase_model.pickle", "metadata.json"])
def test_missing_file_makes_the_service_unready(model_copy, caplog, name):
    (model_copy / name).unlink()
    with caplog.at_level(logging.ERROR):
        app = create_app({"MODEL_DIR": str(model_copy)})
    assert_not_ready(app)
    assert name in caplog.text


@pytest.mark.parametrize("text", [
    "{not json", '{"model_name": "ad_purchase_model",', "", "[]", "null", "{}", "\udcff",
])
def test_unreadable_metadata_makes_the_service_unready(model_copy, text):
    (model_copy / "metadata.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    assert_not_ready(create_app({"MODEL_DIR": str(model_copy)}))


@pytest.mark.parametrize("change", [
    lambda meta: meta.pop("cutoff"), lambda meta: meta.__setitem__("cutoff", "high"),
    lambda meta: meta.__setitem__("cutoff", 7.5), lambda meta: meta.pop("model_name"),
    lambda meta: meta.pop("artifacts"), lambda meta: meta.__setitem__("artifacts", []),
    lambda meta: meta["artifacts"].pop("std_scaler.pkl"), lambda meta: meta.pop("auc"),
], ids=["no-cutoff", "text-cutoff", "cutoff-above-1", "no-name", "no-artifacts", "artifacts-list",
        "artifact-unlisted", "no-auc"])
def test_incomplete_metadata_makes_the_service_unready(model_copy, change):
    path = model_copy / "metadata.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    assert_not_ready(create_app({"MODEL_DIR": str(model_copy)}))


def test_nonexistent_model_dir_stops_startup(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(SystemExit) as stopped:
        create_app({"MODEL_DIR": str(missing)})
    message = str(stopped.value.code)
    assert "MODEL_DIR" in message and str(missing) in message


def test_non_numeric_limit_stops_startup():
    with pytest.raises(SystemExit) as stopped:
        create_app({"MODEL_DIR": str(MODEL_DIR), "MAX_BATCH_ROWS": "many"})
    assert "MAX_BATCH_ROWS" in str(stopped.value.code)


# ---------------------------------------------------------------- documentation

@pytest.fixture(scope="module")
def spec(http):
    response = http.get("/apispec.json")
    assert response.status_code == 200
    assert response.mimetype == JSON
    return response.get_json()


def test_swagger_ui_page_loads_the_served_bundle(http):
    response = http.get("/apidocs/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "/apidocs/ui/swagger-ui-bundle.js" in page
    assert "/apispec.json" in page
    assert "Traceback" not in page and str(ROOT) not in page
    # Values handed to the page's script must be JavaScript, not Python literals.
    script = page[page.index("SwaggerUIBundle("):]
    assert not re.search(r"[=(:,]\s*(None|True|False)\b", script)
    for asset in re.findall(r'(?:src|href)="(/apidocs/ui/[^"]+)"', page):
        assert http.get(asset).status_code == 200, asset


def test_swagger_ui_bundle_is_version_4_or_newer(http):
    response = http.get("/apidocs/ui/swagger-ui-bundle.js")
    assert response.status_code == 200
    bundle = response.get_data(as_text=True)
    assert "SwaggerUIBundle" in bundle
    # Swagger UI builds record their own release in their build info.
    versions = re.findall(r'PACKAGE_VERSION:\s*"(\d+)\.(\d+)\.(\d+)"', bundle)
    assert len(versions) == 1, versions
    assert int(versions[0][0]) >= 4, versions


def test_spec_is_openapi_3_with_every_field_required(spec):
    assert spec["openapi"].startswith("3.")
    record_schema = spec["components"]["schemas"]["Record"]
    assert record_schema["required"] == list(FIELDS)
    assert set(record_schema["properties"]) == set(FIELDS)
    assert len(record_schema["required"]) == 100


def test_spec_lists_the_category_levels(spec):
    properties = spec["components"]["schemas"]["Record"]["properties"]
    for field, levels in CATEGORICAL_LEVELS.items():
        pattern = re.compile(properties[field]["pattern"])
        for level in levels:
            for spelling in (level, level.upper(), level.lower(), f" {level.title()}\t"):
                assert pattern.search(spelling), (field, spelling)
        assert not pattern.search("funday") and not pattern.search(levels[0] + "x"), field


def test_spec_result_schema_lists_the_model_features(spec):
    result = spec["components"]["schemas"]["Result"]
    assert sorted(result["required"]) == sorted(result_keys_for_spec())
    assert set(result_keys_for_spec()) <= set(result["properties"])


def result_keys_for_spec() -> list[str]:
    return ["business_outcome", "phat", *features()]


def test_spec_request_examples_are_the_users_payloads(spec):
    examples = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert examples["single"]["value"] == example("single")
    assert examples["batch"]["value"] == example("batch")


def test_spec_response_examples_are_what_the_service_answers(http, spec):
    examples = spec["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["examples"]
    assert examples["single"]["value"] == predict_ok(http, body=example_bytes("single"))
    assert examples["batch"]["value"] == predict_ok(http, body=example_bytes("batch"))


def test_spec_states_the_configured_row_limit():
    spec_doc = client(MAX_BATCH_ROWS=7).get("/apispec.json").get_json()
    batch_schema = spec_doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    arrays = [s for s in batch_schema["oneOf"] if s.get("type") == "array"]
    assert arrays and arrays[0]["maxItems"] == 7


def test_json_endpoints_never_answer_html(http):
    for path in ("/health", "/ready", "/model", "/apispec.json"):
        response = http.get(path)
        assert response.status_code == 200
        assert_safe_body(response)
