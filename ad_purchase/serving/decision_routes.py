"""The decision log's HTTP side: POST /outcomes, GET /model/performance, the 503 answered when
decisions cannot be recorded, the decision database's part of /ready and of /metrics.

Database work runs through DecisionLog.run (a thread of gevent's pool under the gevent worker),
so a slow query never stops the worker's other connections.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import msgspec
from flask import Blueprint, Response, current_app, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..decisions import DecisionLogUnavailable, outcomes, performance
from ..decisions.store import utcnow
from .problems import problem

log = logging.getLogger("api")
decision_routes = Blueprint("decision_routes", __name__)

MAX_OUTCOME_ROWS = 100_000         # outcomes in one request; larger files: the bulk load command
GAUGE_WINDOW_DAYS = 90             # the Prometheus figures cover the decisions of this many days ...
GAUGE_SECONDS = 60                 # ... recomputed at most this often per worker


def _service():
    return current_app.extensions["service"]


def _json(body: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status=status, mimetype="application/json")


def _unavailable(cause: str) -> Response:
    return problem(503, "Decision log unavailable",
                   f"The decisions could not be recorded, so none is answered: {cause}. See /ready.",
                   "decision-log-unavailable")


@decision_routes.app_errorhandler(DecisionLogUnavailable)
def decision_log_unavailable(exc: DecisionLogUnavailable) -> Response:
    return _unavailable(exc.cause)


def _log_or_problem():
    svc = _service()
    if svc.decisions is None or not svc.decisions.enabled:
        return None, problem(404, "Not Found", "The decision log is off (DECISION_LOG=off).", "decision-log-off")
    return svc.decisions, None


@decision_routes.post("/outcomes")
def post_outcomes() -> Response:
    decisions, refused = _log_or_problem()
    if refused:
        return refused
    id_field = _service().settings.ID_FIELD
    body = request.get_data(cache=False)
    try:
        if request.mimetype == "text/csv":
            items = outcomes.parse_csv(body, id_field, MAX_OUTCOME_ROWS)
        elif request.mimetype == "application/json":
            items = outcomes.parse_json(body, id_field, MAX_OUTCOME_ROWS)
        else:
            return problem(415, "Unsupported media type", "Send the outcomes as application/json or text/csv "
                           f"(got {request.mimetype or 'no Content-Type'}).", "unsupported-media-type")
    except outcomes.OutcomeError as exc:
        return _outcome_problem(exc)
    try:
        applied = decisions.run(outcomes.submit, decisions.write_engine, items)
    except Exception as exc:
        log.error("outcomes not stored: %s", exc)
        return _unavailable(f"{decisions.where} did not store the outcomes ({type(exc).__name__})")
    return _json(applied.answer(items, id_field))


def _outcome_problem(exc: outcomes.OutcomeError) -> Response:
    titles = {400: ("Bad request body", "bad-request-body"), 413: ("Too many outcomes", "too-many-outcomes"),
              422: ("Invalid outcome values", "invalid-outcome-values")}
    title, slug = titles[exc.status]
    extra = {"errors": exc.errors, "total_errors": exc.total_errors} if exc.errors else {}
    return problem(exc.status, title, exc.detail, slug, **extra)


def _moment(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    parsed = datetime.fromisoformat(raw)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


@decision_routes.get("/model/performance")
def model_performance() -> Response:
    decisions, refused = _log_or_problem()
    if refused:
        return refused
    try:
        since, until = _moment("since"), _moment("until")
    except ValueError:
        return problem(400, "Invalid query parameter", "since and until must be ISO 8601 dates or times, "
                       "such as 2026-11-30 or 2026-11-30T14:05:00Z.", "invalid-query-parameter")
    by = request.args.get("by")
    if by not in (None, "week"):
        return problem(400, "Invalid query parameter", f"by must be week, not {by[:50]!r}.",
                       "invalid-query-parameter", parameter="by")
    version = request.args.get("version")
    try:
        frame = decisions.run(_load, decisions, since, until, version)
    except Exception as exc:
        log.error("performance not computed: %s", exc)
        return _unavailable(f"{decisions.where} did not answer ({type(exc).__name__})")
    body = performance.report(frame, by_week=by == "week")
    body["window"] = {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
                      "version": version}
    return _json(body)


def _load(decisions, since, until, version):
    with decisions.read_engine.connect() as connection:
        return performance.load(connection, since, until, version)


def readiness(svc) -> tuple[dict | None, Response | None]:
    """The decision database's state for /ready, and the 503 to answer instead when decisions
    cannot be recorded and the log is required."""
    decisions = svc.decisions
    if decisions is None or not decisions.enabled:
        return {"state": "off"}, None
    health = decisions.check()
    state = {"state": "up" if health.up else "down", "database": decisions.where, "mode": decisions.mode}
    if health.up:
        return state, None
    state["error"] = health.error
    if decisions.mode == "required":
        return state, problem(503, "Decision log unavailable", f"{decisions.where} is not answering: "
                              f"{health.error}. /predict answers 503 until it does.", "decision-log-unavailable",
                              decision_log=state)
    return state, None


_gauges_lock = threading.Lock()
_gauges_cache: dict[int, tuple[float, bytes]] = {}


def exposition(svc) -> bytes:
    """Per model version, the realized and expected figures of the last GAUGE_WINDOW_DAYS days as
    gauges (model_performance{version, basis, figure}, plus decision counts)."""
    decisions = svc.decisions
    if decisions is None or not decisions.enabled:
        return b""
    key = id(decisions)
    cached = _gauges_cache.get(key)
    if cached and time.monotonic() - cached[0] < GAUGE_SECONDS:
        return cached[1]
    try:
        frame = decisions.run(_load, decisions, utcnow() - timedelta(days=GAUGE_WINDOW_DAYS), None, None)
    except Exception as exc:
        log.error("performance gauges not computed: %s", exc)
        return b""
    report = performance.report(frame)
    figures = GaugeMetricFamily("model_performance", f"Realized and expected figures per model version over "
                                f"the last {GAUGE_WINDOW_DAYS} days", labels=["version", "basis", "figure"])
    counts = GaugeMetricFamily("model_decisions", f"Decisions per model version in the last {GAUGE_WINDOW_DAYS} "
                               "days, and how many have an outcome", labels=["version", "kind"])
    for entry in report["by_version"]:
        counts.add_metric([entry["version"], "all"], entry["decisions"])
        counts.add_metric([entry["version"], "with_outcome"], entry["with_outcome"])
        for basis in ("realized", "expected"):
            for name, value in entry[basis].items():
                if isinstance(value, float):
                    figures.add_metric([entry["version"], basis, name], value)
    registry = CollectorRegistry()
    registry.register(_Families([figures, counts]))
    text = generate_latest(registry)
    with _gauges_lock:
        _gauges_cache[key] = (time.monotonic(), text)
    return text


class _Families:
    def __init__(self, families) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)
