"""score.py --engine spark on a real Spark standalone cluster: a master and two workers, each
its own JVM, started by deploy/spark/cluster.sh on loopback, the job sent by spark-submit with
the packed Python environment, as docs/operations.md shows.

The executors see neither this checkout nor its virtual environment: the package, the model and
the Python environment travel with the job.  The scores must equal the local engine's to 1e-12,
and both workers must have run tasks (each executor's log, in its worker's folder, says which).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from api_support import ROOT, customers
from gunicorn_support import free_port

pytestmark = [pytest.mark.spark, pytest.mark.slow]
if shutil.which("java") is None:
    pytest.fail("the Spark cluster test needs a Java runtime on PATH (apt-get install openjdk-17-jre-headless)",
                pytrace=False)

SCRIPT = ROOT / "deploy" / "spark" / "cluster.sh"
PYTHON = ROOT / ".venv" / "bin" / "python"
ROWS = 10_000          # about 12 MB of CSV: three partitions, so both one-core workers get tasks
TOLERANCE = 1e-12


def cluster(env: dict, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A master and two workers on free loopback ports, and the packed executor environment;
    stopped at the end whatever happens."""
    run_dir = tmp_path_factory.mktemp("spark-cluster")
    env = dict(os.environ, SPARK_RUN_DIR=str(run_dir), SPARK_MASTER_PORT=str(free_port()),
               SPARK_MASTER_UI=str(free_port()), PYTHON=str(PYTHON))
    packed = cluster(env, "pack")
    assert packed.returncode == 0, packed.stderr[-3000:]
    started = cluster(env, "start", "2", timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield env, run_dir, packed.stdout.strip().splitlines()[-1]
    finally:
        stopped = cluster(env, "stop", timeout=120)
        assert stopped.returncode == 0, stopped.stderr
    assert not list((run_dir / "pids").glob("*.pid"))


def test_status_names_the_master_and_both_workers(running):
    env, _, _ = running
    status = cluster(env, "status", timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "master: running" in status.stdout and "2 live worker(s)" in status.stdout
    assert "worker-1: running" in status.stdout and "worker-2: running" in status.stdout


def test_a_job_on_two_workers_gives_the_local_engines_scores(running, tmp_path):
    env, run_dir, archive = running
    source = tmp_path / "rows.csv"
    customers(ROWS, seed=11).to_csv(source, index=False)
    local = tmp_path / "local.parquet"
    done = subprocess.run([str(PYTHON), str(ROOT / "score.py"), str(source), "-o", str(local), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "scores"
    # From a folder that is not the checkout: the executors get everything with the job.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    submit = [str(ROOT / ".venv" / "bin" / "spark-submit"), "--master", f"spark://127.0.0.1:{env['SPARK_MASTER_PORT']}",
              "--archives", f"{archive}#environment",
              str(ROOT / "score.py"), str(source), "-o", str(out), "--engine", "spark", "--no-progress",
              "--model-dir", str(ROOT / "objs")]
    done = subprocess.run(submit, cwd=elsewhere, env=dict(env, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_DRIVER_PYTHON=str(PYTHON),
                                                     PYSPARK_PYTHON="./environment/bin/python"), capture_output=True,
                          text=True, timeout=600)
    said = done.stdout + done.stderr          # spark-submit passes on the driver's stderr as its stdout
    assert done.returncode == 0, said[-5000:]
    assert f"scored {ROWS:,} rows" in said and f"spark://127.0.0.1:{env['SPARK_MASTER_PORT']}" in said
    expected, got = pq.read_table(local), pq.ParquetDataset(out).read().sort_by("row")
    assert got.column_names == expected.column_names
    assert got.column("row").to_pylist() == list(range(1, ROWS + 1))
    for name in expected.column_names[1:-2]:             # the run's stamp (model version, time) last
        np.testing.assert_allclose(got.column(name).to_numpy(), expected.column(name).to_numpy(),
                                   rtol=0, atol=TOLERANCE, err_msg=name)
    # Each worker's executors write their log in the worker's folder: both ran tasks, and with
    # the packed interpreter rather than this checkout's.
    for worker in ("worker-1", "worker-2"):
        logs = [p.read_text(errors="replace") for p in (run_dir / "work" / worker).glob("app-*/*/stderr")]
        assert logs, f"{worker} started no executor"
        finished = sum(len(re.findall(r"Finished task \S+ in stage", log)) for log in logs)
        assert finished >= 1, f"{worker} ran no task"
        assert list((run_dir / "work" / worker).glob("app-*/*/environment/bin/python")), \
            f"{worker}'s executors did not unpack the packed environment"
