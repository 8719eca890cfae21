"""train.py as a command: bad inputs stop it with a clear message and leave --out untouched;
a folder holding a model is replaced only with --force; a good run prints its stages and writes
the artifacts.

Every case runs train.py in its own process.  The processes are started together (each one
spends most of its time importing the scientific stack) and the tests read their results.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from ad_purchase.training import synthetic
from ad_purchase.cli import train
from ad_purchase.model.artifacts import ARTIFACT_FILES, METADATA_FILE, MODEL_FILE

KEEP_FILES = {"KEEP.txt": b"an earlier model lives here\n", "old/weights.bin": bytes(range(256)) * 8}
# An earlier model's files, for the cases that find one in --out.
OLD_MODEL = {METADATA_FILE: b'{"model_version": "old"}\n', **{name: b"old " + name.encode() for name in ARTIFACT_FILES}}
SUCCESS_ARGS = ["--synthetic", "500", "--seed", "3", "--no-report"]
TIMEOUT = 300
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    out_dir: Path
    before: dict
    after: dict
    leftovers: list[str]


def _png_bytes() -> bytes:
    """A valid 1x1 grey PNG image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
            + chunk(b"IEND", b""))


def _rows(changes: dict | None = None) -> pd.DataFrame:
    """40 good rows, with single cells replaced: `changes` maps (row index, column) -> value."""
    frame = synthetic.generate(40, seed=9).astype(object)  # any cell may take any value
    for (row, column), value in (changes or {}).items():
        frame.loc[row, column] = value
    return frame


def _csv(changes: dict | None = None, drop: tuple[str, ...] = ()):
    return lambda path: _rows(changes).drop(columns=list(drop)).to_csv(path, index=False)


# Each case: how to write its input file (None: the file does not exist), and its file name.
FAILURES = {
    "missing_columns": ("rows.csv", _csv(drop=("x7", "x55"))),
    "target_not_binary": ("rows.csv", _csv({(4, "y"): 2})),
    "bad_currency": ("rows.csv", _csv({(2, "x12"): "$1,2x"})),
    "bad_percent": ("rows.csv", _csv({(6, "x63"): "abc%"})),
    "unknown_category": ("rows.csv", _csv({(3, "x5"): "funday"})),
    "empty_file": ("rows.csv", lambda path: path.write_bytes(b"")),
    "png_file": ("picture.png", lambda path: path.write_bytes(_png_bytes())),
    "json_file": ("rows.json", lambda path: path.write_text(json.dumps(synthetic.to_records(_rows().head(3))))),
    "nonexistent_file": ("missing.csv", None),
}


def _start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Runs that train on synthetic rows: what --out holds beforehand (beside KEEP_FILES) and the
# extra arguments.
TRAINING_RUNS = {
    "success": ({}, []),
    "model_there": (OLD_MODEL, []),
    "one_artifact_there": ({MODEL_FILE: OLD_MODEL[MODEL_FILE]}, []),
    "forced": (OLD_MODEL, ["--force"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tree_snapshot) -> dict[str, Run]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    started = {}
    try:
        for name, (file_name, write) in {**FAILURES, **dict.fromkeys(TRAINING_RUNS, (None, None))}.items():
            case_dir = tmp_path_factory.mktemp(name)
            out_dir = case_dir / "out"
            there = {**KEEP_FILES, **TRAINING_RUNS.get(name, ({}, []))[0]}
            for relative, data in there.items():
                (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                (out_dir / relative).write_bytes(data)
            if name in TRAINING_RUNS:
                args = [*SUCCESS_ARGS, "--out", str(out_dir), *TRAINING_RUNS[name][1]]
            else:
                data_path = case_dir / file_name
                if write is not None:
                    write(data_path)
                args = ["--data", str(data_path), "--out", str(out_dir)]
            started[name] = (out_dir, tree_snapshot(out_dir), _start(args, env))
        results = {}
        for name, (out_dir, before, process) in started.items():
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            results[name] = Run(process.returncode, stdout, stderr, out_dir, before, tree_snapshot(out_dir),
                                sorted(p.name for p in out_dir.parent.iterdir() if p.name.startswith(".")))
        return results
    finally:
        for _, _, process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


# --------------------------------------------------------------------------- failures

@pytest.mark.parametrize("case", sorted(FAILURES))
def test_failure_exits_non_zero_and_leaves_out_untouched(runs, case):
    run = runs[case]
    assert run.returncode != 0
    assert run.stderr.startswith("error: "), run.stderr
    assert "Traceback" not in run.stderr
    assert f"{run.out_dir} is unchanged" in run.stderr
    assert run.after == run.before
    assert set(run.after) == {"KEEP.txt", "old", "old/weights.bin"}
    assert run.leftovers == []


@pytest.mark.parametrize("case, expected", [
    ("missing_columns", ["required column(s)", "x7", "x55"]),
    ("target_not_binary", ["row 5 (line 6)", "y='2'", "0 or 1"]),
    ("bad_currency", ["row 3 (line 4)", "x12='$1,2x'", "currency"]),
    ("bad_percent", ["row 7 (line 8)", "x63='abc%'", "percentage"]),
    ("unknown_category", ["row 4 (line 5)", "x5='funday'", "expected one of", "monday"]),
    ("empty_file", ["rows.csv", "empty"]),
    ("png_file", ["picture.png", "not valid UTF-8"]),
    ("json_file", ["rows.json", "required column(s)"]),
    ("nonexistent_file", ["missing.csv", "no such file"]),
])
def test_failure_message_says_what_is_wrong(runs, case, expected):
    message = runs[case].stderr
    for part in expected:
        assert part in message, (part, message)


def test_bad_value_messages_name_only_the_bad_rows(runs):
    for case in ("bad_currency", "bad_percent", "unknown_category", "target_not_binary"):
        assert "1 bad value(s)" in runs[case].stderr, runs[case].stderr


# --------------------------------------------------------------------------- success

def test_synthetic_run_prints_its_stages_and_writes_artifacts(runs):
    run = runs["success"]
    assert run.returncode == 0, run.stderr
    stages = ["generating 500 synthetic rows (seed 3)", "checking and parsing 500 rows", "held-out AUC",
              "final model: fitting on all 500 rows", "of the 25 published features", "writing artifacts to",
              "done: model version"]
    positions = [run.stdout.find(stage) for stage in stages]
    assert all(p >= 0 for p in positions), run.stdout
    assert positions == sorted(positions), run.stdout
    assert all(line.startswith("[") for line in run.stdout.splitlines())
    assert {*ARTIFACT_FILES, METADATA_FILE} <= set(run.after)
    assert "report" not in run.after
    for relative, data in KEEP_FILES.items():
        assert run.after[relative] == data
    metadata = json.loads(run.after[METADATA_FILE])
    assert metadata["training_data"] == "synthetic:500:seed=3"
    assert metadata["rows"] == 500 and len(metadata["features"]) == 25
    assert run.leftovers == []
    # Without --version, the version identifies the artifacts: the hash of their SHA-256 sums.
    sums = {name: hashlib.sha256(run.after[name]).hexdigest() for name in ARTIFACT_FILES}
    assert metadata["artifacts"] == sums
    expected = hashlib.sha256("\n".join(f"{name} {sums[name]}" for name in ARTIFACT_FILES).encode()).hexdigest()[:12]
    assert metadata["model_version"] == expected
    assert f"done: model version {expected}," in run.stdout


# --------------------------------------------------------------------------- an existing model

@pytest.mark.parametrize("case", ["model_there", "one_artifact_there"])
def test_a_folder_holding_a_model_is_refused_without_force(runs, case):
    run = runs[case]
    assert run.returncode == 2
    assert run.stdout == ""                                        # refused before any work
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"error: {run.out_dir} already holds a model"), run.stderr
    assert "pass --force to replace it" in run.stderr
    assert run.after == run.before
    assert run.leftovers == []


def test_force_replaces_the_model_and_keeps_the_other_files(runs):
    run = runs["forced"]
    assert run.returncode == 0, run.stderr
    assert "done: model version" in run.stdout
    for name, old in OLD_MODEL.items():
        assert run.after[name] != old, name
    metadata = json.loads(run.after[METADATA_FILE])
    assert metadata["training_data"] == "synthetic:500:seed=3"
    assert metadata["artifacts"] == {name: hashlib.sha256(run.after[name]).hexdigest() for name in ARTIFACT_FILES}
    for relative, data in KEEP_FILES.items():
        assert run.after[relative] == data
    assert run.leftovers == []


def test_a_folder_without_a_model_needs_no_force(runs):
    assert set(KEEP_FILES) & set(runs["success"].before) and runs["success"].returncode == 0


# --------------------------------------------------------------------------- in-process checks

def test_main_returns_2_for_bad_data(tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert train.main(["--data", str(tmp_path / "absent.csv"), "--out", str(out_dir)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not out_dir.exists()


def test_main_reports_a_target_that_is_not_a_number(tmp_path, capsys):
    data_path, out_dir = tmp_path / "rows.csv", tmp_path / "out"
    _csv({(4, "y"): "yes"})(data_path)
    assert train.main(["--data", str(data_path), "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "row 5 (line 6), y='yes'" in err and "0 or 1" in err
    assert not out_dir.exists()


def test_too_few_synthetic_rows_is_refused(tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert train.main(["--synthetic", "50", "--out", str(out_dir)]) == 2
    assert "at least 100 rows" in capsys.readouterr().err
    assert not out_dir.exists()


@pytest.mark.parametrize("argv", [[], ["--synthetic", "500"], ["--data", "a.csv", "--synthetic", "500",
                                                                "--out", "x"]])
def test_argument_errors(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        train.parse_args(argv)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_main_refuses_a_model_folder_before_reading_the_data(tmp_path, capsys):
    out_dir = tmp_path / "objs"
    out_dir.mkdir()
    (out_dir / METADATA_FILE).write_text("{}")
    assert train.main(["--data", str(tmp_path / "absent.csv"), "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {out_dir} already holds a model ({METADATA_FILE}); pass --force to replace it\n"
    assert [p.name for p in out_dir.iterdir()] == [METADATA_FILE]


def test_force_still_stops_on_bad_data_with_the_model_untouched(tmp_path, capsys):
    out_dir = tmp_path / "objs"
    out_dir.mkdir()
    (out_dir / METADATA_FILE).write_text("{}")
    assert train.main(["--data", str(tmp_path / "absent.csv"), "--out", str(out_dir), "--force"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert (out_dir / METADATA_FILE).read_text() == "{}"
