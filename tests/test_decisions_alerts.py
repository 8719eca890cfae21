"""The Prometheus alert rules: valid for promtool, firing on the series they are meant for
(promtool's own rule tests), and naming only metrics the service really exports."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from api_support import JSON, example_bytes, make_app

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return found


def test_promtool_checks_the_rules():
    done = subprocess.run([promtool(), "check", "rules", str(RULES / "alerts.yaml")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_each_alert_fires_when_it_should():
    done = subprocess.run([promtool(), "test", "rules", "alerts-test.yaml"], cwd=RULES, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_name_metrics_the_service_exports(tmp_path):
    client = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'alerts.sqlite3'}").test_client()
    answered = client.post("/predict", data=example_bytes("batch"), headers={"Content-Type": JSON,
                                                                             "X-Request-ID": "alerts-1"})
    assert answered.status_code == 200
    rows = len(answered.get_json())
    sent = client.post("/outcomes", data=json.dumps([{"request_id": "alerts-1", "row": i, "outcome": i % 2}
                                                     for i in range(rows)]), headers={"Content-Type": JSON})
    assert sent.status_code == 200
    exported = set(re.findall(r"^([a-z_]+)(?:\{| )", client.get("/metrics").get_data(as_text=True), re.M))
    rules = yaml.safe_load((RULES / "alerts.yaml").read_text())["groups"][0]["rules"]
    named = set()
    for rule in rules:
        bare = re.sub(r"\{[^}]*\}", "", rule["expr"])          # label matchers out
        named |= set(re.findall(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b(?!\s*\()", bare))
    assert {"model_performance", "model_decisions", "input_drift_psi", "http_requests_total",
            "decision_log_database_up", "decisions_unrecorded_total"} <= named, named
    missing = {name for name in named if name not in exported and f"{name}_total" not in exported
               and name.removesuffix("_total") not in exported}
    assert not missing, f"the rules name metrics the service does not export: {missing}"
