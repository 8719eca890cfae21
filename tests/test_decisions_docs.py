"""docs/decisions.md shows the service's real answers: the outcome examples are replayed against
an app and must come back exactly as printed."""
from __future__ import annotations

import json
import re

from api_support import JSON, ROOT, example_bytes, make_app

DOC = (ROOT / "docs" / "decisions.md").read_text()


def curl_data(marker: str) -> tuple[bytes, str]:
    """The --data of the curl command containing `marker`, and the output printed after it."""
    start = DOC.index(marker)
    line_end = DOC.index("\n", start)
    command = DOC[DOC.rindex("$ curl", 0, start):line_end]
    data = re.search(r"--data '(.*)'$", command).group(1).encode()
    shown = DOC[line_end + 1:DOC.index("```", line_end)].strip()
    return data, shown


def test_the_outcome_examples_are_real_answers(tmp_path):
    client = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'doc.sqlite3'}").test_client()
    assert client.post("/predict", data=example_bytes("batch"),
                       headers={"Content-Type": JSON, "X-Request-ID": "demo-7"}).status_code == 200
    data, shown = curl_data('"row": 2, "outcome": 0, "observed_at"')
    answer = client.post("/outcomes", data=data, headers={"Content-Type": JSON})
    assert answer.get_json() == json.loads(shown)
    data, shown = curl_data("X-Request-ID: demo-8")
    answer = client.post("/outcomes", data=data, headers={"Content-Type": JSON, "X-Request-ID": "demo-8"})
    assert answer.status_code == 422
    assert answer.get_json() == json.loads(shown.replace("\n", ""))


def test_the_settings_table_names_every_decision_setting():
    for name in ("DATABASE_URL", "DATABASE_URL_FILE", "DECISION_LOG", "DECISION_RETENTION_DAYS", "ID_FIELD"):
        assert f"| `{name}` |" in DOC, name


README = (ROOT / "README.md").read_text()


def test_the_readme_outcome_example_is_a_real_answer(tmp_path):
    client = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'readme.sqlite3'}").test_client()
    record = json.loads(example_bytes("single"))
    assert client.post("/predict", data=json.dumps({**record, "customer_id": "c-17"}),
                       headers={"Content-Type": JSON}).status_code == 200
    start = README.index("$ curl -s -X POST localhost:1313/outcomes")
    line_end = README.index("\n", start)
    data = re.search(r"--data '(.*)'$", README[start:line_end]).group(1).encode()
    shown = README[line_end + 1:README.index("\n", line_end + 1)]
    answer = client.post("/outcomes", data=data, headers={"Content-Type": JSON})
    assert answer.get_json() == json.loads(shown)
    assert '"realized": {"auc": 0.7992902089011928' in README and '"auc": 0.7992902089011928' in DOC
