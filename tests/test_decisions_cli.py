"""python -m ad_purchase.decisions: bulk outcome loads (CSV and Parquet) and their speed, the
report table and calibration plot, and a score.py-style file evaluated without the database."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from ad_purchase.decisions import DecisionLog, cli, store

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("decided_at", "model_version", "phat", "business_outcome", "request_id", "row", "caller", "record_id")


def seed_decisions(url: str, n: int, version: str = "v1", seed: int = 0) -> np.ndarray:
    """n decisions for customers c0..c{n-1}, written straight to the tables; their phat."""
    DecisionLog(url)                                        # migrations
    phat = np.random.default_rng(seed).uniform(size=n)
    engine = store.make_engine(url, writer=True)
    now = store.utcnow()
    with engine.begin() as connection:
        store.bulk_insert(connection, "decisions", COLUMNS,
                          [(now, version, float(p), int(p >= 0.7), "bulk", i, None, f"c{i}") for i, p in enumerate(phat)],
                          times=(0,))
    return phat


def test_bulk_load_from_parquet_is_fast_and_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'bulk.sqlite3'}"
    n = 100_000
    phat = seed_decisions(url, n)
    drawn = (np.random.default_rng(1).uniform(size=n) < phat).astype(int)
    path = tmp_path / "outcomes.parquet"
    pq.write_table(pa.table({"customer_id": [f"c{i}" for i in range(n)] + ["ghost"],
                             "outcome": np.append(drawn, 1)}), path)
    # The command as a user runs it, without the test run's coverage tracing (which slows Python
    # several times over).  Rows per CPU second: elapsed time on a shared machine says little.
    env = {key: value for key, value in os.environ.items() if not key.startswith("COV")}
    done = subprocess.run([sys.executable, "-m", "ad_purchase.decisions", "load-outcomes", str(path),
                           "--database-url", url], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    print(f"[decisions] {done.stdout.splitlines()[0]}")
    assert f"loaded {n + 1:,} outcomes" in done.stdout
    assert f"{n:,} matched ({n:,} new, 0 corrected, 0 unchanged), 1 unmatched" in done.stdout
    assert "{'customer_id': 'ghost'}" in done.stdout
    per_cpu = int(re.search(r"([\d,]+) per CPU second", done.stdout).group(1).replace(",", ""))
    assert per_cpu >= 50_000, done.stdout
    again, _, _ = cli.load_outcomes(path, url, "customer_id")
    assert (again.recorded, again.unchanged) == (0, n)


def test_load_outcomes_command_from_csv_names_bad_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'cmd.sqlite3'}"
    seed_decisions(url, 10)
    good = tmp_path / "good.csv"
    good.write_text("customer_id,outcome,observed_at\nc1,1,2099-01-01\nc2,0,\nzz,1,\n")
    done = subprocess.run([sys.executable, "-m", "ad_purchase.decisions", "load-outcomes", str(good),
                           "--database-url", url], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 matched (2 new" in done.stdout and "1 unmatched" in done.stdout and "'zz'" in done.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,outcome\nc3,1\nc4,maybe\n")
    refused = subprocess.run([sys.executable, "-m", "ad_purchase.decisions", "load-outcomes", str(bad),
                              "--database-url", url], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "row 2, outcome" in refused.stderr and "maybe" in refused.stderr


def test_report_prints_a_table_and_writes_a_calibration_plot(tmp_path):
    url = f"sqlite:///{tmp_path / 'report.sqlite3'}"
    phat = seed_decisions(url, 2000, version="model-a")
    drawn = (np.random.default_rng(4).uniform(size=len(phat)) < phat).astype(int)
    path = tmp_path / "o.csv"
    pcsv.write_csv(pa.table({"customer_id": [f"c{i}" for i in range(len(phat))], "outcome": drawn}), path)
    cli.load_outcomes(path, url, "customer_id")
    plot = tmp_path / "calibration.png"
    done = subprocess.run([sys.executable, "-m", "ad_purchase.decisions", "report", "--database-url", url, "--by",
                           "week", "--plot", str(plot)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["version", "week", "decisions", "outcomes"]
    row = next(line for line in lines if line.startswith("model-a"))
    assert "2,000" in row and f"{roc_auc_score(drawn, phat):.4f}" in row
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_evaluate_a_scored_file_against_outcomes_without_the_database(tmp_path):
    rng = np.random.default_rng(8)
    n = 3000
    phat = rng.uniform(size=n)
    start = datetime(2026, 11, 2, 9)
    scores = tmp_path / "scores.csv"
    pcsv.write_csv(pa.table({"customer_id": [f"k{i}" for i in range(n)], "phat": phat,
                             "business_outcome": (phat >= 0.7).astype(int), "model_version": ["2.0.0"] * n,
                             "scored_at": [(start + timedelta(seconds=i)).isoformat() + "Z" for i in range(n)]}), scores)
    drawn = (rng.uniform(size=n) < phat).astype(int)
    reported = tmp_path / "outcomes.parquet"
    pq.write_table(pa.table({"customer_id": [f"k{i}" for i in range(n)], "outcome": drawn}), reported)
    done = subprocess.run([sys.executable, "-m", "ad_purchase.decisions", "evaluate", str(scores), str(reported),
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import json
    report = json.loads(done.stdout)
    (entry,) = report["by_version"]
    assert entry["version"] == "2.0.0" and entry["with_outcome"] == n
    assert entry["realized"]["auc"] == pytest.approx(roc_auc_score(drawn, phat), abs=1e-9)
    assert entry["realized"]["brier"] == pytest.approx(brier_score_loss(drawn, phat), abs=1e-9)
    assert report["outcomes"] == {"received": n, "matched": n, "unmatched_total": 0}
    missing = tmp_path / "old.csv"
    missing.write_text("customer_id,phat\nk1,0.5\n")
    refused = subprocess.run([sys.executable, "-m", "ad_purchase.decisions", "evaluate", str(missing),
                              str(reported)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "model_version" in refused.stderr
