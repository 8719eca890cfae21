"""What operators watch: Prometheus metrics (one process and two gunicorn workers), input drift
against the training profile, the JSON access log, and explanations that add up."""
from __future__ import annotations

import csv
import io
import json
import math
import threading
import uuid
from collections import Counter

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ad_purchase.serving.app import create_app
from ad_purchase.monitoring import drift as drift_module
from ad_purchase.monitoring.metrics import Metrics
from ad_purchase.training import synthetic
from ad_purchase.schema import FIELDS
from ad_purchase.resources import Profile

from api_support import MODEL_DIR, example, example_bytes, features, metadata
from gunicorn_support import running

pytestmark = pytest.mark.observability

JSON = {"Content-Type": "application/json"}


def make_app(monkeypatch, **config):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)   # one process: its own registry
    return create_app({"MODEL_DIR": str(MODEL_DIR), **config})


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} from a text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(parsed: dict, sample: str, **labels) -> float:
    return parsed.get((sample, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def phat_bin(phat: float) -> str:
    """The documented bins: 20 of width 0.05, labelled by their upper edge."""
    return f"{min(int(phat * 20), 19) / 20 + 0.05:.2f}"


# ------------------------------------------------------------------ metrics, one process


def test_metrics_count_requests_rows_failures_and_outcomes(monkeypatch):
    http = make_app(monkeypatch).test_client()
    scored = [http.post("/predict", data=example_bytes("single"), headers=JSON).get_json()]
    scored += http.post("/predict", data=example_bytes("batch"), headers=JSON).get_json()
    bad = {**example("single"), "x0": "abc", "x5": "someday"}
    assert http.post("/predict", data=json.dumps(bad), headers=JSON).status_code == 422
    assert http.post("/predict", data=json.dumps([bad, {**bad, "x0": 1}]), headers=JSON).status_code == 422
    assert http.get("/no-such-page").status_code == 404

    response = http.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    parsed = samples(response.get_data(as_text=True))
    assert value(parsed, "http_requests_total", route="/predict", method="POST", status="200") == 2
    assert value(parsed, "http_requests_total", route="/predict", method="POST", status="422") == 2
    assert value(parsed, "http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(parsed, "http_request_duration_seconds_count", route="/predict") == 4
    assert value(parsed, "http_request_duration_seconds_bucket", route="/predict", le="+Inf") == 4
    assert value(parsed, "http_request_duration_seconds_sum", route="/predict") > 0
    assert value(parsed, "predict_rows_total") == 5
    # x0 is invalid in the first request and in row 0 of the second; x5 in all three rows
    assert value(parsed, "predict_validation_failures_total", field="x0") == 2
    assert value(parsed, "predict_validation_failures_total", field="x5") == 3
    assert sum(v for (name, _), v in parsed.items() if name == "predict_validation_failures_total") == 5
    expected_bins = Counter(phat_bin(r["phat"]) for r in scored)
    for label, count in expected_bins.items():
        assert value(parsed, "predict_phat_bin_total", le=label) == count, label
    assert sum(v for (name, _), v in parsed.items() if name == "predict_phat_bin_total") == 5
    outcomes = Counter(r["business_outcome"] for r in scored)
    for outcome in (0, 1):
        assert value(parsed, "predict_business_outcome_total", outcome=outcome) == outcomes[outcome]
    meta = metadata()
    assert value(parsed, "model_info", name=meta["model_name"], version=meta["model_version"]) == 1
    psi = {dict(labels)["field"]: v for (name, labels), v in parsed.items() if name == "input_drift_psi"}
    assert set(psi) == set(FIELDS)
    assert all(v >= 0 and math.isfinite(v) for v in psi.values())


def test_one_row_at_a_time_counts_as_the_same_rows_in_one_batch():
    phat = np.array([0.0, 0.049, 0.05, 0.5, 0.74, 0.9999, 1.0])
    outcome = (phat >= 0.5).astype(int)
    one_by_one, together = Metrics("m", "v"), Metrics("m", "v")
    for i in range(len(phat)):
        one_by_one.observe_scores(phat[i:i + 1], outcome[i:i + 1])
    together.observe_scores(phat, outcome)
    counted = [{key: v for key, v in samples(generate_latest(m.registry).decode()).items()
                if key[0].endswith("_total")} for m in (one_by_one, together)]
    assert counted[0] == counted[1]
    assert value(counted[0], "predict_phat_bin_total", le="0.05") == 2           # 0.0 and 0.049
    assert value(counted[0], "predict_phat_bin_total", le="1.00") == 2           # 0.9999 and 1.0
    assert value(counted[0], "predict_business_outcome_total", outcome=1) == 4


# ------------------------------------------------------------------ drift

DRIFT_ROWS = 1000
CHUNK = 200         # DRIFT_SAMPLE_ROWS: every row of a chunk this size is counted
SHIFTED = ("x0", "x44", "x5")


def post_in_chunks(http, records: list[dict]) -> None:
    for start in range(0, len(records), CHUNK):
        response = http.post("/predict", data=json.dumps(records[start:start + CHUNK]), headers=JSON)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]


def shift(records: list[dict]) -> list[dict]:
    """x0 moved up by 3 standard deviations, every x5 a Monday, x44 ten times larger."""
    sd = math.sqrt(Profile.load().numeric_stats["x0"]["var"])
    out = []
    for record in records:
        changed = dict(record, x5="monday")
        if record["x0"] != "nan":
            changed["x0"] = repr(float(record["x0"]) + 3 * sd)
        if record["x44"] != "nan":
            changed["x44"] = repr(float(record["x44"]) * 10)
        out.append(changed)
    return out


def test_drift_keeps_a_uniform_sample_of_at_most_the_per_flush_cap(monkeypatch):
    monkeypatch.setattr(drift_module, "DRIFT_ROWS_PER_FLUSH", 2_000)     # enough rows to judge uniformity
    monitor = make_app(monkeypatch, DRIFT_FLUSH_SECONDS=3600).extensions["service"].drift
    monitor._random.seed(7)
    offered = 10 * drift_module.DRIFT_ROWS_PER_FLUSH
    for start in range(0, offered, 150):                    # as requests of 150 rows would offer them
        rows = np.arange(start, min(start + 150, offered))
        monitor.offer(rows[:, None].astype(float), np.zeros((len(rows), 4)))
    kept = [int(values[0]) for values, _ in monitor._pending]
    assert len(kept) == drift_module.DRIFT_ROWS_PER_FLUSH == len(set(kept))
    assert monitor._offered == offered
    # Uniform over everything offered: each tenth of the stream holds about a tenth of the sample.
    tenths = Counter(row * 10 // offered for row in kept)
    assert sorted(tenths) == list(range(10))
    expected = drift_module.DRIFT_ROWS_PER_FLUSH / 10
    assert all(abs(count - expected) < 0.25 * expected for count in tenths.values()), tenths


def test_a_flush_bins_at_most_the_cap_however_many_rows_came(monkeypatch):
    monkeypatch.setattr(drift_module, "DRIFT_ROWS_PER_FLUSH", 300)
    http = make_app(monkeypatch, DRIFT_FLUSH_SECONDS=3600).test_client()
    records = synthetic.to_records(synthetic.generate(1000, seed=5))
    post_in_chunks(http, records)                            # 1,000 rows offered, 300 kept
    fields = http.get("/model/drift").get_json()["fields"]
    assert fields["x5"]["rows"] == 300                       # a categorical: every kept row counts
    assert max(item["rows"] for item in fields.values()) == 300


def test_drift_counts_rows_from_both_decoder_paths_and_csv(monkeypatch):
    http = make_app(monkeypatch, DRIFT_FLUSH_SECONDS=3600).test_client()
    records = synthetic.to_records(synthetic.generate(30, seed=6))
    careful = [dict(r, x0="NA") for r in records[10:20]]    # an unusual missing spelling: careful path
    assert http.post("/predict", data=json.dumps(records[:10]), headers=JSON).status_code == 200
    assert http.post("/predict", data=json.dumps(careful), headers=JSON).status_code == 200
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(FIELDS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records[20:])
    assert http.post("/predict", data=table.getvalue(), headers={"Content-Type": "text/csv"}).status_code == 200
    fields = http.get("/model/drift").get_json()["fields"]
    assert fields["x5"]["rows"] == 30
    assert fields["x0"]["rows"] == 30 - 10 - sum(r["x0"] in (None, "nan") for r in records[:10] + records[20:])


def test_drift_stays_quiet_for_training_like_rows_and_flags_exactly_the_shifted_fields(monkeypatch):
    records = synthetic.to_records(synthetic.generate(DRIFT_ROWS, seed=21))

    steady = make_app(monkeypatch, DRIFT_FLUSH_SECONDS=0).test_client()
    post_in_chunks(steady, records)
    report = steady.get("/model/drift").get_json()
    assert report["thresholds"] == {"watch": 0.1, "alert": 0.2, "min_rows": 100}
    assert report["alerts"] == []
    assert set(report["fields"]) == set(FIELDS)
    for field, item in report["fields"].items():
        assert item["rows"] >= 0.95 * DRIFT_ROWS, (field, item)
        assert item["psi"] < 0.2 and item["status"] in ("ok", "watch"), (field, item)
    print("\nsteady rows, largest PSI:", sorted(((v["psi"], f) for f, v in report["fields"].items()))[-3:])

    drifted = make_app(monkeypatch, DRIFT_FLUSH_SECONDS=0).test_client()
    post_in_chunks(drifted, shift(records))
    report = drifted.get("/model/drift").get_json()
    print("shifted rows:", {f: report["fields"][f] for f in SHIFTED})
    assert report["alerts"] == sorted(SHIFTED)
    for field, item in report["fields"].items():
        if field in SHIFTED:
            assert item["psi"] > 0.2 and item["status"] == "alert", (field, item)
        else:
            assert item["psi"] < 0.2, (field, item)
    exposed = samples(drifted.get("/metrics").get_data(as_text=True))
    for field in SHIFTED:
        assert value(exposed, "input_drift_psi", field=field) == pytest.approx(report["fields"][field]["psi"], abs=1e-6)


def test_drift_reports_insufficient_data_before_enough_rows(monkeypatch):
    http = make_app(monkeypatch, DRIFT_FLUSH_SECONDS=0).test_client()
    http.post("/predict", data=example_bytes("batch"), headers=JSON)
    report = http.get("/model/drift").get_json()
    assert report["alerts"] == []
    assert {item["status"] for item in report["fields"].values()} == {"insufficient data"}


# ------------------------------------------------------------------ explanations


def test_contributions_add_up_to_the_log_odds_for_every_row(monkeypatch):
    http = make_app(monkeypatch).test_client()
    results = http.post("/predict?explain=true", data=example_bytes("batch"), headers=JSON).get_json()
    assert len(results) == len(example("batch"))
    for result in results:
        contributions = result["contributions"]
        assert sorted(contributions) == sorted(features())
        phat = result["phat"]
        assert abs(math.fsum(contributions.values()) - math.log(phat / (1 - phat))) <= 1e-9, result
        coefficients = metadata()["coefficients"]
        for name, part in contributions.items():
            coef = coefficients[name]["coef"] if isinstance(coefficients[name], dict) else coefficients[name]
            assert part == pytest.approx(coef * result[name], abs=1e-9), name
    plain = http.post("/predict", data=example_bytes("batch"), headers=JSON).get_json()
    assert all("contributions" not in r for r in plain)
    assert [r["phat"] for r in plain] == [r["phat"] for r in results]


# ------------------------------------------------------------------ two gunicorn workers

BATCH = example_bytes("batch")
SINGLE = example_bytes("single")


def test_metrics_add_up_over_workers_and_the_access_log_is_json(tmp_path):
    sent_rows, request_ids, lock = [], [], threading.Lock()

    def client(server, count: int) -> None:
        for i in range(count):
            rid = uuid.uuid4().hex
            body, rows = (BATCH, 4) if i % 2 else (SINGLE, 1)
            reply = server.post("/predict", body, headers={"X-Request-ID": rid})
            assert reply.status == 200 and reply.headers["x-request-id"] == rid
            with lock:
                sent_rows.append(rows)
                request_ids.append((rid, rows))

    with running(tmp_path) as server:
        workers = server.worker_pids()
        threads = [threading.Thread(target=client, args=(server, 30)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(t.is_alive() for t in threads) and len(sent_rows) == 120
        parsed = samples(server.get("/metrics").body.decode())
        metric_files = {p.name for p in (tmp_path / "metrics").iterdir()}
        invalid = server.post("/predict", b"{", headers={"X-Request-ID": "bad-json-1"})
        assert invalid.status == 400
        output = server.output()

    # Both workers counted something, and /metrics (served by one of them) adds both up.
    assert all(any(name.endswith(f"_{pid}.db") and name.startswith("counter") for name in metric_files)
               for pid in workers), (workers, metric_files)
    assert value(parsed, "predict_rows_total") == sum(sent_rows) == 300
    assert value(parsed, "http_requests_total", route="/predict", method="POST", status="200") == 120

    lines = {}
    for line in output.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            lines[entry["request_id"]] = entry
    for rid, rows in request_ids:
        entry = lines[rid]
        assert entry["route"] == "/predict" and entry["status"] == 200 and entry["rows"] == rows
        assert entry["method"] == "POST" and isinstance(entry["latency_ms"], (int, float)) and entry["latency_ms"] > 0
    failed = lines["bad-json-1"]
    assert failed["status"] == 400 and failed["rows"] == 0


def test_a_flush_starts_a_new_sample(monkeypatch):
    monitor = make_app(monkeypatch, DRIFT_FLUSH_SECONDS=3600).extensions["service"].drift
    monitor.offer(np.ones((3, 96)), np.zeros((3, 4)))
    assert len(monitor._pending) == 3 and monitor._offered == 3
    monitor.flush()
    assert monitor._pending == [] and monitor._offered == 0
    monitor.offer(np.ones((2, 96)), np.zeros((2, 4)))
    assert len(monitor._pending) == 2
