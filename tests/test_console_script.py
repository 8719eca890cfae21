"""The `ad-purchase` command: one name for serve, score, train and sample, declared in
pyproject.toml, and the venv step of the scripts that installs it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ad_purchase import HOME
from ad_purchase.cli import main as entry

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# --------------------------------------------------------------------------- the package

def test_the_console_script_is_declared_and_points_at_main():
    target = PYPROJECT["project"]["scripts"]["ad-purchase"]
    module, _, function = target.partition(":")
    assert getattr(import_module(module), function) is entry.main


def test_the_install_takes_only_the_package_and_the_runtime_pins():
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["ad_purchase", "ad_purchase.*"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    assert "dependencies" in PYPROJECT["project"]["dynamic"]


# --------------------------------------------------------------------------- dispatch

def test_without_a_command_it_prints_the_commands_and_exits_2(capsys):
    assert entry.main([]) == 2
    err = capsys.readouterr().err
    for command in ("serve", "score", "train", "sample"):
        assert f"ad-purchase {command}" in err


def test_help_lists_the_commands_and_exits_0(capsys):
    assert entry.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"ad-purchase {command}" in out for command in entry.COMMANDS)


def test_an_unknown_command_is_refused_in_one_line(capsys):
    assert entry.main(["predict"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'predict'" in err and "serve, score, train, sample" in err


def test_sample_and_score_run_under_their_command_names(tmp_path, capsys):
    rows, scores = tmp_path / "rows.parquet", tmp_path / "scores.csv"
    assert entry.main(["sample", "50", "-o", str(rows)]) == 0
    assert pq.read_metadata(rows).num_rows == 50
    assert entry.main(["score", str(rows), "-o", str(scores), "--no-progress"]) == 0
    assert "scored 50 rows" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        entry.main(["score", str(rows)])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("ad-purchase score: error:")


def test_train_runs_under_its_command_name(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "metadata.json").write_text("{}")
    assert entry.main(["train", "--synthetic", "200", "--out", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        entry.main(["train", "--out", str(out)])
    assert "ad-purchase train: error:" in capsys.readouterr().err


# --------------------------------------------------------------------------- serve

def record_exec(monkeypatch) -> list[tuple]:
    """os.execve and os.chdir recorded instead of done, until the test ends."""
    calls = []
    monkeypatch.setattr(entry.os, "chdir", lambda path: calls.append(("chdir", Path(path))))
    monkeypatch.setattr(entry.os, "execve", lambda path, argv, env: calls.append(("execve", path, argv, env)))
    return calls


@pytest.fixture
def exec_calls(monkeypatch):
    return record_exec(monkeypatch)


def test_serve_becomes_gunicorn_with_the_projects_config_from_the_project_folder(exec_calls, monkeypatch):
    monkeypatch.delenv("MODEL_DIR", raising=False)
    monkeypatch.setenv("PORT", "1313")
    entry.main(["serve", "--port", "8123"])
    assert exec_calls[0] == ("chdir", HOME)
    _, path, argv, env = exec_calls[1]
    assert path == sys.executable
    assert argv == [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "api:app"]
    assert (HOME / "gunicorn.conf.py").is_file() and (HOME / "api.py").is_file()
    assert env["PORT"] == "8123" and "MODEL_DIR" not in env


def test_serve_keeps_the_port_from_the_environment(exec_calls, monkeypatch):
    monkeypatch.setenv("PORT", "8200")
    entry.main(["serve"])
    assert exec_calls[1][3]["PORT"] == "8200"


def test_serve_reads_a_relative_model_dir_from_where_it_was_started(monkeypatch, tmp_path):
    (tmp_path / "models" / "candidate").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    exec_calls = record_exec(monkeypatch)
    monkeypatch.setenv("MODEL_DIR", "models/candidate")
    entry.main(["serve"])
    assert exec_calls[1][3]["MODEL_DIR"] == str(tmp_path / "models" / "candidate")


def test_serve_without_a_model_folder_stops_before_gunicorn(exec_calls, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "absent"))
    assert entry.main(["serve"]) == 1
    assert exec_calls == []
    err = capsys.readouterr().err
    assert err.startswith(f"error: MODEL_DIR {tmp_path / 'absent'} is not a folder") and err.count("\n") == 1


# --------------------------------------------------------------------------- the scripts' venv step

FAKE_PYTHON = """#!/bin/sh
# Stands in for .venv/bin/python: records what it is asked to run; "installing" makes the command.
echo "$*" >> "$(dirname "$0")/../calls.log"
case "$*" in *"--editable ."*) printf '#!/bin/sh\\n' > "$(dirname "$0")/ad-purchase"; chmod +x "$(dirname "$0")/ad-purchase";; esac
"""


def ensure_venv(folder: Path) -> list[str]:
    """Run scripts/venv.sh's ensure_venv in `folder`; the pip calls it made."""
    log = folder / ".venv" / "calls.log"
    log.unlink(missing_ok=True)
    subprocess.run(["bash", "-c", f"source {ROOT / 'scripts' / 'venv.sh'} && ensure_venv requirements.txt"],
                   cwd=folder, check=True, capture_output=True, timeout=60)
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def project(tmp_path):
    for name in ("requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def test_the_venv_step_installs_the_project_editable_once(project):
    calls = ensure_venv(project)
    assert calls[-1] == "-m pip install --quiet -r requirements.txt --editable ."
    assert os.access(project / ".venv" / "bin" / "ad-purchase", os.X_OK)
    assert ensure_venv(project) == []                               # the stamp matches: nothing to do


def test_the_venv_step_reinstalls_when_pyproject_changes(project):
    ensure_venv(project)
    with open(project / "pyproject.toml", "a") as handle:
        handle.write("\n# a new entry point\n")
    assert ensure_venv(project)[-1].endswith("--editable .")


def test_the_venv_step_reinstalls_when_the_command_is_gone(project):
    ensure_venv(project)
    (project / ".venv" / "bin" / "ad-purchase").unlink()
    assert ensure_venv(project)[-1].endswith("--editable .")
