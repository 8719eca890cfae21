"""The decision log over HTTP, in process: 3,000 decisions scored through /predict, outcomes
drawn from their phat sent back through /outcomes, /model/performance checked against figures
computed independently (sklearn) from the same values; on SQLite and on PostgreSQL."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, precision_score, roc_auc_score

from ad_purchase.serving.settings import Settings
from api_support import JSON, assert_problem, customers, make_app
from gunicorn_support import free_port

DECISIONS = 3000
PER_REQUEST = 100


def score_all(client, seed: int = 11) -> list[dict]:
    """Score DECISIONS synthetic customers in requests of PER_REQUEST; each decision with its
    request id, row, customer id and answer."""
    frame = customers(DECISIONS, seed).rename(columns={"customer": "customer_id"})
    records = json.loads(frame.to_json(orient="records"))
    scored = []
    for start in range(0, DECISIONS, PER_REQUEST):
        request_id = f"batch-{seed}-{start // PER_REQUEST:03d}"
        chunk = records[start:start + PER_REQUEST]
        response = client.post("/predict", data=json.dumps(chunk), headers={"Content-Type": JSON,
                                                                           "X-Request-ID": request_id})
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        for row, (record, answer) in enumerate(zip(chunk, response.get_json())):
            scored.append({"request_id": request_id, "row": row, "customer_id": record["customer_id"],
                           "phat": answer["phat"], "business_outcome": answer["business_outcome"]})
    return scored


def send(client, outcomes_list: list[dict]):
    response = client.post("/outcomes", data=json.dumps(outcomes_list), headers={"Content-Type": JSON})
    return response


@pytest.fixture
def app_client(database_url):
    return make_app(DATABASE_URL=database_url).test_client()


def test_realized_and_expected_figures_end_to_end(app_client):
    client = app_client
    scored = score_all(client)
    phat = np.array([d["phat"] for d in scored])
    chosen = np.array([d["business_outcome"] for d in scored])
    drawn = (np.random.default_rng(2).uniform(size=len(phat)) < phat).astype(int)
    reports = [{"customer_id": d["customer_id"], "outcome": int(y)} for d, y in zip(scored, drawn)]
    reports.append({"customer_id": "no-such-customer", "outcome": 1})
    first = send(client, reports)
    assert first.status_code == 200, first.get_data(as_text=True)
    answer = first.get_json()
    assert (answer["received"], answer["matched"], answer["recorded"]) == (DECISIONS + 1, DECISIONS, DECISIONS)
    assert answer["unmatched"] == [{"customer_id": "no-such-customer"}] and answer["unmatched_total"] == 1

    report = client.get("/model/performance").get_json()
    (entry,) = report["by_version"]
    assert (entry["decisions"], entry["with_outcome"]) == (DECISIONS, DECISIONS)
    realized, expected = entry["realized"], entry["expected"]
    assert realized["auc"] == pytest.approx(roc_auc_score(drawn, phat), abs=1e-6)
    assert realized["brier"] == pytest.approx(brier_score_loss(drawn, phat), abs=1e-6)
    assert realized["precision_at_cutoff"] == pytest.approx(precision_score(drawn, chosen), abs=1e-6)
    assert abs(expected["auc"] - realized["auc"]) < 0.05
    assert [b["count"] for b in realized["calibration"]] == list(np.bincount(np.minimum((phat * 10).astype(int), 9),
                                                                             minlength=10))

    again = send(client, reports).get_json()
    assert (again["recorded"], again["corrected"], again["unchanged"]) == (0, 0, DECISIONS)
    assert client.get("/model/performance").get_json()["by_version"] == report["by_version"]

    weekly = client.get("/model/performance?by=week").get_json()["by_version"][0]["weeks"]
    assert sum(week["decisions"] for week in weekly) == DECISIONS

    metrics = client.get("/metrics").get_data(as_text=True)
    line = f'model_performance{{basis="realized",figure="auc",version="{entry["version"]}"}}'
    assert line in metrics
    # The gauges come from the database's sums per fine bin of phat: the same figure to 1e-4.
    assert float(metrics.split(line)[1].split()[0]) == pytest.approx(realized["auc"], abs=1e-4)


def test_large_windows_are_reported_from_binned_sums(app_client, monkeypatch):
    from ad_purchase.serving import decision_routes

    client = app_client
    scored = score_all(client, seed=15)
    phat = np.array([d["phat"] for d in scored])
    drawn = (np.random.default_rng(6).uniform(size=len(phat)) < phat).astype(int)
    send(client, [{"customer_id": d["customer_id"], "outcome": int(y)} for d, y in zip(scored, drawn)])
    exact = client.get("/model/performance?by=week").get_json()
    monkeypatch.setattr(decision_routes, "EXACT_ROWS", 100)
    binned = client.get("/model/performance?by=week").get_json()
    assert (exact["method"], binned["method"]) == ("exact", "binned")
    one, other = exact["by_version"][0], binned["by_version"][0]
    assert (one["decisions"], one["with_outcome"]) == (other["decisions"], other["with_outcome"])
    for basis in ("realized", "expected"):
        for name in ("auc", "log_loss", "brier", "precision_at_cutoff", "recall_at_cutoff", "lift_at_cutoff"):
            assert other[basis][name] == pytest.approx(one[basis][name], abs=1e-5), (basis, name)
        assert [b["count"] for b in other[basis]["calibration"]] == [b["count"] for b in one[basis]["calibration"]]
    assert other["realized"]["brier"] == pytest.approx(brier_score_loss(drawn, phat), abs=1e-9)
    assert [w["decisions"] for w in other["weeks"]] == [w["decisions"] for w in one["weeks"]]


def test_outcomes_of_a_shifted_model_show_realized_below_expected(app_client):
    client = app_client
    scored = score_all(client, seed=12)
    phat = np.array([d["phat"] for d in scored])
    rng = np.random.default_rng(5)
    # The world changed: buying now follows a different score, only loosely related to this one.
    logit = np.log(phat / (1 - phat))
    shifted = 1 / (1 + np.exp(-(0.25 * logit + rng.normal(0, 1.5, len(phat)))))
    drawn = (rng.uniform(size=len(phat)) < shifted).astype(int)
    assert send(client, [{"request_id": d["request_id"], "row": d["row"], "outcome": int(y)}
                         for d, y in zip(scored, drawn)]).status_code == 200
    entry = client.get("/model/performance").get_json()["by_version"][0]
    assert entry["realized"]["auc"] < entry["expected"]["auc"] - 0.1, entry


def test_bad_outcomes_are_refused_whole_and_name_row_and_field(app_client):
    client = app_client
    scored = score_all(client, seed=13)[:2]
    response = send(client, [{"request_id": scored[0]["request_id"], "row": 0, "outcome": 1},
                             {"request_id": scored[1]["request_id"], "row": 1, "outcome": 7}])
    body = assert_problem(response, 422)
    assert body["errors"] == [{"row": 1, "field": "outcome", "value": 7, "message": "expected 0 or 1"}]
    entry = client.get("/model/performance").get_json()["by_version"][0]
    assert entry["with_outcome"] == 0                   # the good row was not stored either
    csv = client.post("/outcomes", data=b"request_id,row,outcome\n" + scored[0]["request_id"].encode() + b",0,1\n",
                      headers={"Content-Type": "text/csv"})
    assert csv.status_code == 200 and csv.get_json()["recorded"] == 1
    assert_problem(client.post("/outcomes", data=b"[1,", headers={"Content-Type": JSON}), 400)
    assert_problem(client.post("/outcomes", data=b"x", headers={"Content-Type": "text/plain"}), 415)
    assert_problem(client.get("/model/performance?since=yesterday"), 400)
    assert_problem(client.get("/model/performance?by=day"), 400)


def test_performance_window_and_version_filters(app_client):
    client = app_client
    score_all(client, seed=14)
    assert client.get("/model/performance?until=2000-01-01").get_json()["by_version"] == []
    assert client.get("/model/performance?version=no-such").get_json()["by_version"] == []
    entry = client.get("/model/performance?since=2000-01-01T00:00:00Z").get_json()["by_version"][0]
    assert entry["decisions"] == DECISIONS and entry["with_outcome"] == 0
    assert entry["realized"]["auc"] is None and entry["expected"]["auc"] > 0.5


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_database_down_answers_503_naming_the_cause(kind, tmp_path):
    if kind == "postgresql":
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/gone"
    else:
        (tmp_path / "file").write_text("not a folder")
        url = f"sqlite:///{tmp_path / 'file' / 'decisions.sqlite3'}"
    client = make_app(DATABASE_URL=url).test_client()
    body = assert_problem(client.post("/predict", data=open("examples/single.json", "rb").read(),
                                      headers={"Content-Type": JSON}), 503)
    assert body["type"].endswith("decision-log-unavailable")
    assert ("PostgreSQL database gone at 127.0.0.1" if kind == "postgresql" else "unable to open") in body["detail"]
    ready = assert_problem(client.get("/ready"), 503)
    assert ready["decision_log"]["state"] == "down" and ready["decision_log"]["error"]
    assert "decisions_unrecorded_total 1.0" in client.get("/metrics").get_data(as_text=True)

    lenient = make_app(DATABASE_URL=url, DECISION_LOG="best-effort").test_client()
    scored = lenient.post("/predict", data=open("examples/single.json", "rb").read(), headers={"Content-Type": JSON})
    assert scored.status_code == 200
    state = lenient.get("/ready")
    assert state.status_code == 200 and state.get_json()["decision_log"]["state"] == "down"
    assert "decisions_unrecorded_total 1.0" in lenient.get("/metrics").get_data(as_text=True)


def test_log_off_scores_without_a_database(tmp_path):
    client = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'x' / 'd.sqlite3'}", DECISION_LOG="off").test_client()
    assert client.post("/predict", data=open("examples/single.json", "rb").read(),
                       headers={"Content-Type": JSON}).status_code == 200
    assert client.get("/ready").get_json()["decision_log"] == {"state": "off"}
    assert_problem(client.post("/outcomes", data=b"[]", headers={"Content-Type": JSON}), 404)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name, value, allowed", [
    ("DECISION_LOG", "sometimes", "required, best-effort, off"),
    ("DATABASE_URL", "mysql://db/x", "sqlite:///PATH or postgresql://"),
    ("DECISION_RETENTION_DAYS", "0", "1 or more"),
    ("DECISION_RETENTION_DAYS", "ten", "whole number"),
    ("ID_FIELD", "x3", "x0..x99"),
])
def test_invalid_settings_stop_the_service_in_one_line(name, value, allowed):
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({name: value})
    message = str(stopped.value)
    assert "\n" not in message and name in message and allowed in message
    assert (value.split("://")[0] if "://" in value else value) in message


def test_database_url_from_a_mounted_secret_file(tmp_path):
    secret = tmp_path / "url"
    secret.write_text(f"sqlite:///{tmp_path / 'from-file.sqlite3'}\n")
    assert Settings.from_env({"DATABASE_URL": "sqlite:///elsewhere", "DATABASE_URL_FILE": str(secret)}).DATABASE_URL \
        == f"sqlite:///{tmp_path / 'from-file.sqlite3'}"
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"DATABASE_URL_FILE": str(tmp_path / "absent")})
    assert "DATABASE_URL_FILE" in str(stopped.value) and "absent" in str(stopped.value)


def test_an_id_scored_twice_over_http_gets_the_outcome_on_its_latest_decision(app_client, database_url):
    from sqlalchemy import create_engine, text

    from ad_purchase.decisions.store import normalize_url
    record = json.loads(open("examples/single.json").read())
    for request_id in ("first-time", "second-time"):
        answered = app_client.post("/predict", data=json.dumps({**record, "customer_id": "twice"}),
                                   headers={"Content-Type": JSON, "X-Request-ID": request_id})
        assert answered.status_code == 200
        assert "customer_id" not in answered.get_json()          # the answer body does not change
    assert send(app_client, [{"customer_id": "twice", "outcome": 1}]).get_json()["recorded"] == 1
    engine = create_engine(normalize_url(database_url))
    with engine.connect() as connection:
        found = connection.execute(text("SELECT d.request_id, d.record_id, o.outcome FROM decisions d "
                                        "LEFT JOIN outcomes o ON o.decision_id = d.id ORDER BY d.id")).all()
    engine.dispose()
    assert [tuple(row) for row in found] == [("first-time", "twice", None), ("second-time", "twice", 1)]


def test_with_access_control_the_caller_is_recorded_and_outcomes_need_their_scope(tmp_path):
    import hashlib

    from sqlalchemy import create_engine, text

    tokens = {"crm": ("score", "tok-crm-0123456789"), "feedback": ("outcomes", "tok-fb-0123456789"),
              "watch": ("ops", "tok-ops-0123456789")}
    path = tmp_path / "tokens.txt"
    path.write_text("".join(f"{name} {scopes} {hashlib.sha256(token.encode()).hexdigest()}\n"
                            for name, (scopes, token) in tokens.items()))
    url = f"sqlite:///{tmp_path / 'auth.sqlite3'}"
    client = make_app(DATABASE_URL=url, AUTH_TOKENS_FILE=str(path)).test_client()

    def bearer(name):
        return {"Authorization": f"Bearer {tokens[name][1]}"}

    scored = client.post("/predict", data=open("examples/single.json", "rb").read(),
                         headers={"Content-Type": JSON, "X-Request-ID": "auth-1", **bearer("crm")})
    assert scored.status_code == 200
    body = json.dumps([{"request_id": "auth-1", "row": 0, "outcome": 1}])
    assert_problem(client.post("/outcomes", data=body, headers={"Content-Type": JSON}), 401)
    assert_problem(client.post("/outcomes", data=body, headers={"Content-Type": JSON, **bearer("crm")}), 403)
    sent = client.post("/outcomes", data=body, headers={"Content-Type": JSON, **bearer("feedback")})
    assert sent.status_code == 200 and sent.get_json()["recorded"] == 1
    assert_problem(client.get("/model/performance", headers=bearer("feedback")), 403)
    assert client.get("/model/performance", headers=bearer("watch")).get_json()["by_version"][0]["with_outcome"] == 1
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT caller FROM decisions")).scalar() == "crm"
    engine.dispose()
