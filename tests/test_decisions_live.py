"""The decision log under a real gunicorn (gevent workers, as in production), on SQLite and on
PostgreSQL: under load, a worker killed with SIGKILL and then the whole server stopped with
SIGTERM leave every answered decision in the database; a restart on the same database reports
the same figures."""
from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ad_purchase.decisions.store import normalize_url
from gunicorn_support import call, running, stop

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parent.parent
SINGLE = (ROOT / "examples" / "single.json").read_bytes()
CLIENTS = 8


class Load:
    """CLIENTS threads sending single records with their own request ids until stopped; what was
    answered 200, with the phat of each."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port, self.prefix = port, prefix
        self.answered: dict[str, float] = {}
        self.failed = 0
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(n,)) for n in range(CLIENTS)]

    def _client(self, number: int) -> None:
        sent = 0
        while not self.stopping.is_set() and sent < 5000:
            request_id = f"{self.prefix}-{number}-{sent}"
            sent += 1
            try:
                reply = call(self.port, "POST", "/predict", SINGLE, headers={"X-Request-ID": request_id}, timeout=10)
            except (OSError, http.client.HTTPException):   # a worker killed mid-answer: not answered
                self.failed += 1
                continue
            if reply.status == 200:
                self.answered[request_id] = reply.json()["phat"]
            else:
                self.failed += 1

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)


def recorded(url: str) -> dict[str, float]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            return {r[0]: r[1] for r in connection.execute(text("SELECT request_id, phat FROM decisions"))}
    finally:
        engine.dispose()


def assert_all_recorded(answered: dict[str, float], url: str) -> None:
    found = recorded(url)
    missing = [rid for rid in answered if rid not in found]
    assert not missing, f"{len(missing)} of {len(answered)} answered decisions are not in the database: {missing[:5]}"
    assert all(found[rid] == phat for rid, phat in answered.items())


@pytest.fixture(params=["sqlite", "postgresql"])
def live_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'live.sqlite3'}"
    return request.getfixturevalue("postgres").new_database()


def test_kill_9_and_sigterm_under_load_lose_no_answered_decision(live_url, tmp_path):
    settings = {"DATABASE_URL": live_url, "GRACEFUL_TIMEOUT": "20"}
    with running(tmp_path / "first", workers=2, **settings) as server:
        with Load(server.port, "k") as load:
            time.sleep(1.5)
            victim = sorted(server.worker_pids())[0]
            os.kill(victim, signal.SIGKILL)
            server.wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, 30,
                            "a replacement worker")
            time.sleep(1.5)
        killed_phase = dict(load.answered)
        metrics = server.get("/metrics").body.decode()
        assert "decision_log_database_up 1.0" in metrics
        recorded_total = float(metrics.split("\ndecisions_recorded_total ")[1].split()[0])
        assert recorded_total >= len(killed_phase)      # every worker's count, the killed one's too
        assert len(killed_phase) > 50, f"only {len(killed_phase)} answers under load"
        assert_all_recorded(killed_phase, live_url)
        print(f"[decisions] kill -9 phase: {len(killed_phase)} answered, {load.failed} not answered, all recorded")

        # Outcomes for what was answered, then the figures before the restart.
        reports = [{"request_id": rid, "row": 0, "outcome": int(i % 3 == 0)} for i, rid in enumerate(killed_phase)]
        sent = server.post("/outcomes", json.dumps(reports).encode())
        assert sent.status == 200 and sent.json()["matched"] == len(reports), sent.body[:300]
        before = server.get("/model/performance").json()

        with Load(server.port, "t") as load:
            time.sleep(1.0)
            assert stop(server) == 0
        assert len(load.answered) > 10
        assert_all_recorded(load.answered, live_url)
        print(f"[decisions] SIGTERM phase: {len(load.answered)} answered, all recorded")

    with running(tmp_path / "second", workers=1, **settings) as restarted:
        after = restarted.get("/model/performance").json()
    window = [entry for entry in after["by_version"]]
    assert window[0]["with_outcome"] == before["by_version"][0]["with_outcome"]
    assert window[0]["realized"] == before["by_version"][0]["realized"]
    assert window[0]["decisions"] >= before["by_version"][0]["decisions"] + len(load.answered)


def test_postgresql_stopped_under_a_live_server_gives_503_then_recovers(tmp_path):
    """The database goes away under a running gunicorn: /predict answers 503 naming it, /ready
    says so, the up gauge reads 0; once it is back, the same server answers and records again."""
    from postgres_server import PostgresServer

    database = PostgresServer.start()
    try:
        url = database.new_database()
        with running(tmp_path / "down", workers=1, DATABASE_URL=url) as server:
            assert server.post("/predict", SINGLE, headers={"X-Request-ID": "up-1"}).status == 200
            database.pg_ctl("stop")
            refused = server.post("/predict", SINGLE, headers={"X-Request-ID": "down-1"})
            assert refused.status == 503
            problem = refused.json()
            assert problem["type"].endswith("decision-log-unavailable")
            assert "PostgreSQL database" in problem["detail"] and "127.0.0.1" in problem["detail"]
            ready = server.get("/ready")
            assert ready.status == 503 and ready.json()["decision_log"]["state"] == "down"
            assert "decision_log_database_up 0.0" in server.get("/metrics").body.decode()
            database.pg_ctl("start")
            assert server.post("/predict", SINGLE, headers={"X-Request-ID": "up-2"}).status == 200
            assert server.get("/ready").status == 200
            assert "decision_log_database_up 1.0" in server.get("/metrics").body.decode()
        assert set(recorded(url)) == {"up-1", "up-2"}
    finally:
        database.stop()


def test_gthread_workers_record_every_answered_decision(tmp_path):
    """Without gevent (gunicorn's thread worker) requests wait on plain threading events."""
    url = f"sqlite:///{tmp_path / 'gthread.sqlite3'}"
    with running(tmp_path / "gthread", workers=2, DATABASE_URL=url, WORKER_CLASS="gthread", THREADS="4") as server:
        with Load(server.port, "g") as load:
            time.sleep(2.0)
        assert len(load.answered) > 20 and load.failed == 0
        assert_all_recorded(load.answered, url)
        assert server.get("/ready").json()["decision_log"]["state"] == "up"
