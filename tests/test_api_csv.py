"""CSV through the HTTP API: text/csv bodies, Accept: text/csv answers, CSV error rows."""
from __future__ import annotations

import csv
import io

import pytest
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from ad_purchase.serving.app import create_app
from api_support import MODEL_DIR, PROBLEM, example, result_keys
from ad_purchase.schema import FIELDS


@pytest.fixture(scope="module")
def client():
    return create_app({"MODEL_DIR": str(MODEL_DIR)}).test_client()


def _csv_body(records: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(FIELDS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in records)
    return out.getvalue()


def test_csv_body_scores_like_the_same_json_batch(client):
    batch = example("batch")
    as_json = client.post("/predict", json=batch).get_json()
    as_csv = client.post("/predict", data=_csv_body(batch), content_type="text/csv")
    assert as_csv.status_code == 200 and as_csv.mimetype == "application/json"
    assert as_csv.get_json() == as_json


@pytest.mark.parametrize("content_type", ["application/json", "text/csv"])
def test_accept_text_csv_gives_csv_with_the_json_numbers(client, content_type):
    batch = example("batch")
    body = _csv_body(batch) if content_type == "text/csv" else None
    response = client.post("/predict", data=body, json=None if body else batch, content_type=content_type,
                           headers={"Accept": "text/csv"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    expected = client.post("/predict", json=batch).get_json()
    assert list(rows[0]) == result_keys()
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected):
        assert int(row["business_outcome"]) == want["business_outcome"]
        assert all(float(row[k]) == want[k] for k in result_keys() if k != "business_outcome")


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json", "text/csv", "TEXT/CSV", "text/*",
                                    "application/*", "application/json;q=0.1, */*;q=0.9",
                                    "*/*;q=0.5, text/csv", "text/csv;q=0", "*/csv"])
def test_the_answer_type_follows_content_negotiation(client, accept):
    # What the Accept header asks for, read by werkzeug's parser itself; JSON when it names neither.
    preferred = parse_accept_header(accept, MIMEAccept).best_match(("application/json", "text/csv"))
    headers = {} if accept is None else {"Accept": accept}
    response = client.post("/predict", json=example("single"), headers=headers)
    assert response.status_code == 200
    assert response.mimetype == (preferred or "application/json")


def test_csv_errors_number_rows_as_data_lines(client):
    batch = example("batch")
    batch[2] = dict(batch[2], x5="funday")
    response = client.post("/predict", data=_csv_body(batch), content_type="text/csv")
    assert response.status_code == 422 and response.mimetype == PROBLEM
    errors = response.get_json()["errors"]
    assert errors == [{"row": 3, "field": "x5", "value": "funday", "message": errors[0]["message"]}]


def test_other_media_types_name_both_accepted_ones(client):
    response = client.post("/predict", data="x", content_type="text/plain")
    assert response.status_code == 415
    assert "application/json" in response.get_json()["detail"] and "text/csv" in response.get_json()["detail"]
