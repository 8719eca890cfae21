"""The decision log as a library, on SQLite and on a real PostgreSQL server: tables and
migrations, group commit, what happens when the database is down, retention, outcomes and the
matching rule, and the performance figures against an independent computation."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score, roc_auc_score
from sqlalchemy import func, inspect, select

from ad_purchase.decisions import DecisionLog, DecisionLogUnavailable, outcomes, performance, store
from gunicorn_support import free_port

ROOT = Path(__file__).resolve().parent.parent


def rows(log: DecisionLog) -> list[dict]:
    with log.read_engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(store.decisions).order_by(store.decisions.c.id))]


def count(log: DecisionLog, table) -> int:
    with log.read_engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar()


def test_migrations_make_the_tables_and_store_no_input_field(database_url):
    log = DecisionLog(database_url)
    names = set(inspect(log.read_engine).get_table_names())
    assert {"decisions", "outcomes", "outcome_history", "alembic_version"} <= names
    columns = {c["name"] for c in inspect(log.read_engine).get_columns("decisions")}
    assert columns == {"id", "decided_at", "model_version", "phat", "business_outcome", "request_id", "row",
                       "caller", "record_id"}
    store.migrate(log.write_engine)            # at head already: nothing to do, no error
    with log.read_engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
    if database_url.startswith("sqlite"):
        with log.read_engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2      # FULL


def test_record_writes_every_row_with_its_request_and_id(database_url):
    log = DecisionLog(database_url)
    log.record("v7", "req-1", "crm", ["c1", None, 17], np.array([0.1, 0.8, 0.5]), np.array([0, 1, 0]))
    log.record("v7", "req-2", None, None, [0.9], [1])
    found = rows(log)
    assert [(r["request_id"], r["row"], r["record_id"], r["caller"], r["business_outcome"]) for r in found] == [
        ("req-1", 0, "c1", "crm", 0), ("req-1", 1, None, "crm", 1), ("req-1", 2, "17", "crm", 0),
        ("req-2", 0, None, None, 1)]
    assert [r["phat"] for r in found] == [0.1, 0.8, 0.5, 0.9]
    assert {r["model_version"] for r in found} == {"v7"}
    assert all(abs((datetime.utcnow() - r["decided_at"]).total_seconds()) < 60 for r in found)
    log.close()


def test_concurrent_requests_share_commits(database_url):
    log = DecisionLog(database_url, batch_wait=0.005)
    threads = [threading.Thread(target=lambda i=i: [log.record("v", f"t{i}-{k}", None, None, [0.5], [0])
                                                      for k in range(20)]) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert count(log, store.decisions) == 16 * 20
    commits = log.batch_size.collect()[0]
    batches = [s.value for s in commits.samples if s.name.endswith("_count")][0]
    assert batches < 16 * 20 / 2, f"{batches} commits for 320 requests: they were not grouped"
    log.close()


def down_url(kind: str, tmp_path: Path) -> str:
    if kind == "postgresql":
        return f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database's folder should be")
    return f"sqlite:///{blocker / 'decisions.sqlite3'}"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_required_mode_raises_naming_the_cause(kind, tmp_path):
    log = DecisionLog(down_url(kind, tmp_path), mode="required")
    assert log.health.up is False and log.health.error
    with pytest.raises(DecisionLogUnavailable) as caught:
        log.record("v", "r", None, None, [0.2], [0])
    cause = caught.value.cause
    assert ("refused" in cause.lower() or "connect" in cause.lower()) if kind == "postgresql" else "open" in cause
    assert log.check().up is False
    assert log.unrecorded._value.get() == 1
    log.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_best_effort_answers_and_counts(kind, tmp_path, caplog):
    log = DecisionLog(down_url(kind, tmp_path), mode="best-effort")
    log.record("v", "lost-request", None, None, [0.2, 0.3], [0, 0])         # no exception
    assert log.unrecorded._value.get() == 2
    assert "lost-request" in caplog.text and "not recorded" in caplog.text
    log.close()


def test_off_mode_touches_no_database(tmp_path):
    log = DecisionLog(f"sqlite:///{tmp_path / 'sub' / 'never.sqlite3'}", mode="off")
    log.record("v", "r", None, None, [0.2], [0])
    assert not (tmp_path / "sub").exists()
    assert log.read_engine is None


def test_close_flushes_what_is_queued(tmp_path):
    log = DecisionLog(f"sqlite:///{tmp_path / 'd.sqlite3'}", mode="best-effort", batch_wait=0.05)
    log.record("v", "first", None, None, [0.2], [0])
    # A row queued without waiting for it (as a request cut short would leave it): close commits it.
    from ad_purchase.decisions.log import _Item, _NoWaiter
    log._queue.put(_Item(_NoWaiter(), time.monotonic(), 1, (store.utcnow(), "v", "queued", None, None, [0.4], [0])))
    log.close()
    assert [r["request_id"] for r in rows(log)] == ["first", "queued"]


def test_retention_removes_old_decisions_and_their_outcomes(database_url):
    log = DecisionLog(database_url, retention_days=30)
    log.record("v", "old", None, ["a"], [0.2], [0])
    log.record("v", "new", None, ["b"], [0.3], [0])
    with log.write_engine.begin() as connection:
        connection.execute(store.decisions.update().where(store.decisions.c.request_id == "old")
                           .values(decided_at=store.utcnow() - timedelta(days=31)))
    items = outcomes.parse_json(b'[{"customer_id": "a", "outcome": 1}, {"customer_id": "b", "outcome": 0}]',
                                "customer_id", 100)
    assert outcomes.submit(log.write_engine, items).matched == 2
    assert store.purge(log.write_engine, 30) == 1
    assert [r["request_id"] for r in rows(log)] == ["new"]
    fix = outcomes.parse_json(b'[{"customer_id": "b", "outcome": 1}]', "customer_id", 100)
    assert outcomes.submit(log.write_engine, fix).corrected == 1
    assert count(log, store.outcomes) == 1 and count(log, store.outcome_history) == 1
    log.close()


def test_an_id_scored_twice_takes_the_latest_decision_before_the_outcome(database_url):
    log = DecisionLog(database_url)
    log.record("v1", "early", None, ["c9"], [0.2], [0])
    log.record("v2", "late", None, ["c9"], [0.7], [0])
    with log.write_engine.begin() as connection:
        for request, when in (("early", datetime(2026, 10, 1, 12)), ("late", datetime(2026, 11, 1, 12))):
            connection.execute(store.decisions.update().where(store.decisions.c.request_id == request)
                               .values(decided_at=when))

    def attached() -> dict:
        with log.read_engine.connect() as connection:
            query = (select(store.decisions.c.request_id, store.outcomes.c.outcome, store.outcomes.c.corrections)
                     .join(store.outcomes, store.outcomes.c.decision_id == store.decisions.c.id))
            return {r[0]: (r[1], r[2]) for r in connection.execute(query)}

    between = outcomes.parse_json(b'[{"customer_id": "c9", "outcome": 1, "observed_at": "2026-10-15T00:00:00Z"}]',
                                  "customer_id", 10)
    assert outcomes.submit(log.write_engine, between).recorded == 1
    assert attached() == {"early": (1, 0)}
    undated = outcomes.parse_json(b'[{"customer_id": "c9", "outcome": 0}]', "customer_id", 10)
    assert outcomes.submit(log.write_engine, undated).recorded == 1
    assert attached() == {"early": (1, 0), "late": (0, 0)}
    before_all = outcomes.parse_json(b'[{"customer_id": "c9", "outcome": 1, "observed_at": "2026-09-01"}]',
                                     "customer_id", 10)
    result = outcomes.submit(log.write_engine, before_all)
    assert result.matched == 0 and result.answer(before_all, "customer_id")["unmatched"] == [{"customer_id": "c9"}]
    log.close()


def test_outcomes_are_idempotent_and_corrections_keep_their_history(database_url):
    log = DecisionLog(database_url)
    log.record("v", "req", None, ["a", "b", None], [0.2, 0.6, 0.9], [0, 0, 1])
    body = b'[{"customer_id": "a", "outcome": 1}, {"customer_id": "b", "outcome": 0}, ' \
           b'{"request_id": "req", "row": 2, "outcome": 1}, {"customer_id": "nobody", "outcome": 1}]'
    first = outcomes.submit(log.write_engine, outcomes.parse_json(body, "customer_id", 10))
    assert (first.matched, first.recorded, first.unchanged, first.corrected) == (3, 3, 0, 0)
    again = outcomes.submit(log.write_engine, outcomes.parse_json(body, "customer_id", 10))
    assert (again.matched, again.recorded, again.unchanged, again.corrected) == (3, 0, 3, 0)
    assert count(log, store.outcome_history) == 0
    fix = outcomes.parse_json(b'[{"customer_id": "a", "outcome": 0, "observed_at": "2099-12-01T10:00:00+01:00"}, '
                              b'{"customer_id": "a", "outcome": 1}]', "customer_id", 10)
    fixed = outcomes.submit(log.write_engine, fix)
    assert (fixed.corrected, fixed.unchanged) == (2, 0)
    with log.read_engine.connect() as connection:
        history = connection.execute(select(store.outcome_history.c.outcome, store.outcome_history.c.observed_at,
                                            store.outcome_history.c.received_at, store.outcome_history.c.replaced_at)
                                     .order_by(store.outcome_history.c.id)).all()
        current = connection.execute(select(store.outcomes.c.outcome, store.outcomes.c.corrections,
                                            store.outcomes.c.observed_at)
                                     .order_by(store.outcomes.c.decision_id)).all()
    # What each correction replaced, oldest first: the first 1 (no observed_at), then the 0 observed at 09:00 UTC.
    assert [(h[0], h[1]) for h in history] == [(1, None), (0, datetime(2099, 12, 1, 9))]
    assert all(h[2] <= h[3] for h in history)
    assert [tuple(c) for c in current] == [(1, 2, None), (0, 0, None), (1, 0, None)]
    log.close()


@pytest.mark.parametrize("body, row, field", [
    (b'[{"customer_id": "a", "outcome": 7}]', 0, "outcome"),
    (b'[{"customer_id": "a", "outcome": 1}, {"outcome": 1}]', 1, "customer_id"),
    (b'[{"customer_id": "a", "outcome": true}]', 0, "outcome"),
    (b'[{"customer_id": "a", "outcome": 1, "observed_at": "last tuesday"}]', 0, "observed_at"),
    (b'[{"request_id": "r", "row": -1, "outcome": 1}]', 0, "row"),
    (b'[{"customer_id": 1.5, "outcome": 1}]', 0, "customer_id"),
])
def test_a_bad_value_names_row_and_field(body, row, field):
    with pytest.raises(outcomes.OutcomeError) as caught:
        outcomes.parse_json(body, "customer_id", 10)
    assert caught.value.status == 422
    assert {"row": row, "field": field} in [{k: e[k] for k in ("row", "field")} for e in caught.value.errors]


def test_csv_outcomes_count_rows_from_one():
    items = outcomes.parse_csv(b"customer_id,outcome,observed_at\nc1,1,2026-11-02\nc2,0,\n", "customer_id", 10)
    assert items.record_id == ["c1", "c2"] and items.outcome == [1, 0]
    assert items.observed_at == [datetime(2026, 11, 2), None]
    with pytest.raises(outcomes.OutcomeError) as caught:
        outcomes.parse_csv(b"customer_id,outcome\nc1,1\nc2,yes\n", "customer_id", 10)
    assert caught.value.errors[0]["row"] == 2 and caught.value.errors[0]["value"] == "yes"
    with pytest.raises(outcomes.OutcomeError) as header:
        outcomes.parse_csv(b"id,outcome\nc1,1\n", "customer_id", 10)
    assert header.value.status == 400 and "customer_id" in header.value.detail


def test_realized_figures_equal_sklearn_and_expected_follow_phat():
    rng = np.random.default_rng(3)
    phat = np.round(rng.beta(2, 3, 3000), 4)            # rounded: ties must count half, as sklearn's do
    outcome = (rng.uniform(size=3000) < phat).astype(int)
    chosen = (phat >= 0.6).astype(int)
    got = performance.realized(phat, chosen, outcome)
    assert got["auc"] == pytest.approx(roc_auc_score(outcome, phat), abs=1e-12)
    assert got["brier"] == pytest.approx(brier_score_loss(outcome, phat), abs=1e-12)
    assert got["log_loss"] == pytest.approx(log_loss(outcome, phat), abs=1e-12)
    assert got["precision_at_cutoff"] == pytest.approx(precision_score(outcome, chosen), abs=1e-12)
    assert got["recall_at_cutoff"] == pytest.approx(recall_score(outcome, chosen), abs=1e-12)
    assert got["lift_at_cutoff"] == pytest.approx(precision_score(outcome, chosen) / outcome.mean(), abs=1e-12)
    assert sum(b["count"] for b in got["calibration"]) == 3000
    expected = performance.expected(phat, chosen)
    assert abs(expected["auc"] - got["auc"]) < 0.03
    assert expected["brier"] == pytest.approx(np.mean(phat * (1 - phat)))
    # The expected AUC is the mean AUC over outcome draws from phat.
    draws = [roc_auc_score((rng.uniform(size=3000) < phat).astype(int), phat) for _ in range(200)]
    assert expected["auc"] == pytest.approx(np.mean(draws), abs=0.003)


def test_expected_auc_by_brute_force_over_pairs():
    phat = np.array([0.1, 0.1, 0.4, 0.8, 0.8, 0.95])
    numerator = denominator = 0.0
    for i, pi in enumerate(phat):
        for j, pj in enumerate(phat):
            if i != j:
                weight = pi * (1 - pj)
                denominator += weight
                numerator += weight * (1.0 if pi > pj else 0.5 if pi == pj else 0.0)
    assert performance.expected(phat, phat >= 0.5)["auc"] == pytest.approx(numerator / denominator, abs=1e-12)


def test_writer_never_blocks_other_greenlets_under_gevent(tmp_path):
    """Under gevent's monkey patching (as in the gevent worker), recording waits for the commit
    without stopping the hub: while every commit takes 0.3 s, a greenlet ticking every 5 ms keeps
    ticking (a hub blocked by a commit would leave a gap of 0.3 s or more)."""
    script = f"""
from gevent import monkey; monkey.patch_all()
import gevent, time, numpy as np
from ad_purchase.decisions import DecisionLog, store
from sqlalchemy import select, func, event
log = DecisionLog("sqlite:///{tmp_path / 'g.sqlite3'}")
def slow_insert(conn, cursor, statement, parameters, context, executemany):
    if statement.startswith("INSERT INTO decisions"):
        monkey.get_original("time", "sleep")(0.3)     # blocks whichever thread runs the commit
event.listen(log.write_engine, "before_cursor_execute", slow_insert)
ticks, done = [], []
def ticker():
    while not done:
        ticks.append(time.monotonic()); gevent.sleep(0.005)
t = gevent.spawn(ticker)
jobs = [gevent.spawn(log.record, "v", f"g{{i}}", None, None, [0.5], [0]) for i in range(200)]
gevent.joinall(jobs, raise_error=True)
done.append(True); t.join()
with log.read_engine.connect() as c:
    n = c.execute(select(func.count()).select_from(store.decisions)).scalar()
print(n, round(float(np.diff(ticks).max()), 4), len(ticks))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    recorded, worst_gap, ticks = done.stdout.split()
    assert int(recorded) == 200
    assert int(ticks) > 20, "the commits were too quick to show anything"
    assert float(worst_gap) < 0.15, f"the hub stood still for {worst_gap} s while the writer committed"


def test_the_log_recovers_by_itself_when_postgresql_comes_back():
    """A server stopped under the log: requests fail (naming the cause) while it is down, and the
    next request after it is back is recorded, with no restart of the log."""
    from postgres_server import PostgresServer

    server = PostgresServer.start()
    try:
        log = DecisionLog(server.new_database())
        log.record("v", "before", None, None, [0.1], [0])
        server.pg_ctl("stop")
        with pytest.raises(DecisionLogUnavailable):
            log.record("v", "during", None, None, [0.2], [0])
        assert log.check().up is False
        server.pg_ctl("start")
        log.record("v", "after", None, None, [0.3], [0])
        assert log.check().up is True
        assert [r["request_id"] for r in rows(log)] == ["before", "after"]
        log.close()
    finally:
        server.stop()


def test_binned_figures_from_database_sums_match_the_exact_ones(database_url):
    log = DecisionLog(database_url)
    rng = np.random.default_rng(9)
    phat = rng.beta(2, 3, 4000)
    chosen = (phat >= 0.6).astype(int)
    drawn = (rng.uniform(size=len(phat)) < phat).astype(int)
    log.record("v9", "many", None, [f"b{i}" for i in range(len(phat))], phat, chosen)
    body = ",".join(f'{{"customer_id": "b{i}", "outcome": {int(y)}}}' for i, y in enumerate(drawn[:3000]))
    outcomes.submit(log.write_engine, outcomes.parse_json(f"[{body}]".encode(), "customer_id", 5000))
    with log.read_engine.connect() as connection:
        exact = performance.report(performance.load(connection))["by_version"][0]
        binned = performance.report_binned(performance.load_binned(connection))["by_version"][0]
        assert performance.count(connection) == 4000
    assert (binned["decisions"], binned["with_outcome"]) == (4000, 3000)
    for basis in ("realized", "expected"):
        for name in ("auc", "log_loss", "brier", "precision_at_cutoff", "recall_at_cutoff", "lift_at_cutoff"):
            assert binned[basis][name] == pytest.approx(exact[basis][name], abs=1e-5), (basis, name)
        for got, want in zip(binned[basis]["calibration"], exact[basis]["calibration"]):
            assert got["count"] == want["count"]
            for key in ("mean_phat", "outcome_rate"):
                assert got[key] == pytest.approx(want[key], abs=1e-12)
    assert binned["realized"]["brier"] == pytest.approx(brier_score_loss(drawn[:3000], phat[:3000]), abs=1e-9)
    log.close()


def test_an_idle_writer_checks_the_database_and_applies_retention(tmp_path, monkeypatch):
    from ad_purchase.decisions import log as log_module

    monkeypatch.setattr(log_module, "IDLE_PING_SECONDS", 0.1)
    log = DecisionLog(f"sqlite:///{tmp_path / 'idle.sqlite3'}", retention_days=30)
    log.record("v", "stale", None, None, [0.2], [0])
    with log.write_engine.begin() as connection:
        connection.execute(store.decisions.update().values(decided_at=store.utcnow() - timedelta(days=40)))
    log._next_purge = 0.0                      # the hourly pass is due
    deadline = time.monotonic() + 10
    while count(log, store.decisions) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count(log, store.decisions) == 0
    assert log.health.up is True
    log.record("v", "fresh", None, None, [0.3], [0])   # reconnects after the idle close
    assert [r["request_id"] for r in rows(log)] == ["fresh"]
    log.close()


def test_a_busy_writer_applies_retention_between_batches(tmp_path):
    log = DecisionLog(f"sqlite:///{tmp_path / 'busy.sqlite3'}", retention_days=30)
    log.record("v", "stale", None, None, [0.2], [0])
    with log.write_engine.begin() as connection:
        connection.execute(store.decisions.update().values(decided_at=store.utcnow() - timedelta(days=40)))
    log._next_purge = 0.0                      # the hourly pass is due
    log.record("v", "fresh", None, None, [0.3], [0])
    log.record("v", "fresher", None, None, [0.4], [0])
    assert [r["request_id"] for r in rows(log)] == ["fresh", "fresher"]
    log.close()
