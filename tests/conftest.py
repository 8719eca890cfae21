"""Shared fixtures for the test suite.

Fixtures are grouped by the part of the service they serve; add new groups below the
existing ones rather than mixing them in.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the package and the entry points live at the repository root
    sys.path.insert(0, str(REPO_ROOT))
# Apps the tests build record their decisions in a database of this run, never in the checkout's.
if "DATABASE_URL" not in os.environ:
    _DECISIONS_DIR = tempfile.mkdtemp(prefix="ad-purchase-tests-")
    atexit.register(shutil.rmtree, _DECISIONS_DIR, ignore_errors=True)
    os.environ["DATABASE_URL"] = "sqlite:///" + os.path.join(_DECISIONS_DIR, "decisions.sqlite3")


# =========================================================================== test tiers
#
# The quick tier (./run_tests.sh --quick, marker "quick"): everything that runs in this process
# without training a model, a server, a browser or a container.  A developer's check in under a
# minute; CI runs the whole suite.

QUICK_MODULES = {"test_schema.py", "test_parity.py", "test_api.py", "test_api_errors.py", "test_api_csv.py",
                 "test_csv_io.py", "test_synthetic.py", "test_repo_files.py", "test_readme.py", "test_settings.py",
                 "test_console_script.py", "test_auth.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in QUICK_MODULES:
            item.add_marker(pytest.mark.quick)


# =========================================================================== training fixtures
#
# `trained_dir` is a model trained by train.py on a small synthetic sample: the artifact folder
# the service loads.  It is built once per test session and must be treated as read-only.

TRAINED_ROWS = 3000
TRAINED_SEED = 5
TRAINED_VERSION = "0.0.1-test"


@dataclass(frozen=True)
class TrainedRun:
    """What the session's training run was given and where it wrote."""

    csv_path: Path        # the raw rows the model was trained on
    out_dir: Path         # the artifact folder (same as `trained_dir`)
    rows: int
    seed: int
    model_version: str


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path below `folder` (relative, '/'-separated) with its bytes; None for folders.
    An absent folder gives an empty dict."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {path.relative_to(folder).as_posix(): (None if path.is_dir() else path.read_bytes())
            for path in sorted(folder.rglob("*"))}


@pytest.fixture(scope="session")
def tree_snapshot():
    """The `snapshot` helper: a folder's listing and file contents, for before/after checks."""
    return snapshot


@pytest.fixture(scope="session")
def write_synthetic_csv():
    """A function writing `rows` generated rows (client's raw format) to `path`; returns it."""
    from ad_purchase.training import synthetic

    def write(path: Path, rows: int, seed: int) -> Path:
        synthetic.generate(rows, seed=seed).to_csv(path, index=False)
        return Path(path)

    return write


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, write_synthetic_csv) -> TrainedRun:
    """Train with train.py (in this process) on TRAINED_ROWS synthetic rows, report included."""
    from ad_purchase.cli import train

    base = tmp_path_factory.mktemp("trained")
    csv_path = write_synthetic_csv(base / "training_rows.csv", TRAINED_ROWS, TRAINED_SEED)
    out_dir = base / "model"
    status = train.main(["--data", str(csv_path), "--out", str(out_dir), "--seed", str(TRAINED_SEED),
                         "--version", TRAINED_VERSION])
    assert status == 0, "training the session's model failed"
    return TrainedRun(csv_path, out_dir, TRAINED_ROWS, TRAINED_SEED, TRAINED_VERSION)


@pytest.fixture(scope="session")
def trained_dir(trained_run) -> Path:
    """The folder holding the artifacts (and report/) of a freshly trained model."""
    return trained_run.out_dir


# =========================================================================== database fixtures
#
# `postgres` is a real PostgreSQL server (Debian's package) started once per session on a free
# loopback port with a throwaway data folder; `postgres.new_database()` gives each test an empty
# database.  Tests that take `database_url` run once on SQLite and once on PostgreSQL.

@pytest.fixture(scope="session")
def postgres():
    from postgres_server import PostgresServer

    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'decisions.sqlite3'}"
    return request.getfixturevalue("postgres").new_database()
