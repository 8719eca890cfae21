"""The README is the user's manual: its examples are the service's real answers to the files it
names, and it stays short enough to read."""
from __future__ import annotations

import json
import re

from api_support import ROOT, client

README = (ROOT / "README.md").read_text()
http = client()


def shown_after(command: str) -> str:
    """The output the README prints after a shell command (the lines up to the closing fence)."""
    start = README.index(command) + len(command)
    return README[start:README.index("```", start)].strip()


def test_the_readme_is_a_manual_not_a_notebook():
    assert len(README.encode()) < 15_000           # design notes and sizing live in docs/
    headings = re.findall(r"^## (.+)$", README, flags=re.M)
    assert headings[:2] == ["Quickstart", "The API"]


def test_every_file_the_readme_uses_is_shipped():
    for name in set(re.findall(r"@(examples/[\w.]+)", README)):
        assert (ROOT / name).is_file(), name


def test_the_single_record_answer_is_the_one_shown():
    command = "$ curl -s -X POST localhost:1313/predict -H 'Content-Type: application/json' --data @examples/single.json\n"
    shown = json.loads(shown_after(command).replace("\n", ""))
    answer = http.post("/predict", data=(ROOT / "examples/single.json").read_bytes(),
                       headers={"Content-Type": "application/json"})
    assert answer.get_json() == shown
    assert list(answer.get_json()) == list(shown)            # same key order


def test_the_csv_answer_starts_as_shown():
    shown = [line.rstrip(".").rstrip(",") for line in shown_after("--data-binary @examples/rows.csv\n").splitlines()]
    answer = http.post("/predict", data=(ROOT / "examples/rows.csv").read_bytes(),
                       headers={"Content-Type": "text/csv", "Accept": "text/csv"}).get_data(as_text=True).splitlines()
    assert len(answer) == 5                                   # the header and the four records
    for shown_line, line in zip(shown, answer):
        assert line.startswith(shown_line), (shown_line, line)


def test_the_error_example_is_the_one_shown():
    answer = http.post("/predict", data=(ROOT / "examples/bad.json").read_bytes(),
                       headers={"Content-Type": "application/json", "X-Request-ID": "demo-2"})
    body = answer.get_json()
    assert answer.status_code == 422 and body["request_id"] == "demo-2"
    assert body["detail"] == "3 invalid value(s) in row(s) 1; nothing was scored."
    assert [(e["row"], e["field"], e["value"]) for e in body["errors"]] == \
        [(1, "x5", "funday"), (1, "x7", True), (1, "x12", "12 dollars")]
    shown = shown_after("--data @examples/bad.json\n")
    for error in body["errors"]:
        assert json.dumps(error["value"]) in shown and error["message"][:30] in shown


def test_the_input_table_states_the_schemas_levels_and_missing_spellings():
    """The README's input section is written from the schema: every level and every missing
    spelling it lists is the schema's, and none is left out."""
    from ad_purchase.schema import CATEGORICAL_LEVELS, MISSING_STRINGS
    section = README[README.index("### Input"):README.index("### Output")]
    for field, levels in CATEGORICAL_LEVELS.items():
        listed = set(re.findall(r"`(\w+)`", section[section.index(f"`{field}`"):]))
        assert levels[0] in section and levels[-1] in section, field
        assert set(levels) <= listed | {level for level in levels if f"{levels[0]}`…`{levels[-1]}" in section}, field
    sentence = section[section.index("A missing"):section.index("in any case:")]
    listed = {word.lower() for word in re.findall(r'`"([^"`]*)"`', sentence)}
    assert listed == set(MISSING_STRINGS), (listed, MISSING_STRINGS)
