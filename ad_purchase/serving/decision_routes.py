"""The decision log's HTTP side: POST /outcomes, GET /model/performance, the 503 answered when
decisions cannot be recorded, the decision database's part of /ready and of /metrics.

Database work runs through DecisionLog.run (a thread of gevent's pool under the gevent worker),
so a slow query never stops the worker's other connections.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from datetime import datetime, timedelta

import msgspec
from flask import Blueprint, Response, current_app, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..decisions import DecisionLogUnavailable, outcomes, performance
from ..decisions.store import utcnow
from .auth import requires
from .problems import problem

log = logging.getLogger("api")
decision_routes = Blueprint("decision_routes", __name__)

MAX_OUTCOME_ROWS = 100_000         # outcomes in one request; larger files: the bulk load command
EXACT_ROWS = 1_000_000             # windows with more decisions get figures from binned sums
GAUGE_WINDOW_DAYS = 90             # the Prometheus figures (always binned) cover this many days ...
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


def with_log(view):
    """A view that needs the decision log: 404 when it is off, else called with the log."""
    @functools.wraps(view)
    def guarded() -> Response:
        svc = _service()
        if svc.decisions is None or not svc.decisions.enabled:
            return problem(404, "Not Found", "The decision log is off (DECISION_LOG=off).", "decision-log-off")
        return view(svc.decisions)
    return guarded


@decision_routes.post("/outcomes")
@requires("outcomes")
@with_log
def post_outcomes(decisions) -> Response:
    from .routes import request_body          # (routes imports this module)
    settings = _service().settings
    id_field = settings.ID_FIELD
    body = request_body(settings.MAX_CONTENT_LENGTH, settings.BODY_TIMEOUT)
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
    return None if raw is None else outcomes.parse_time(raw)


@decision_routes.get("/model/performance")
@requires("ops")
@with_log
def model_performance(decisions) -> Response:
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
        body = decisions.run(_report, decisions, since, until, version, by == "week")
    except Exception as exc:
        log.error("performance not computed: %s", exc)
        return _unavailable(f"{decisions.where} did not answer ({type(exc).__name__})")
    body["window"] = {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
                      "version": version}
    return _json(body)


def _report(decisions, since, until, version, by_week: bool) -> dict:
    with decisions.read_engine.connect() as connection:
        return performance.compute(connection, since, until, version, by_week, EXACT_ROWS)


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


def _binned(decisions, since) -> dict:
    with decisions.read_engine.connect() as connection:
        return performance.report_binned(performance.load_binned(connection, since))


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
        report = decisions.run(_binned, decisions, utcnow() - timedelta(days=GAUGE_WINDOW_DAYS))
    except Exception as exc:
        log.error("performance gauges not computed: %s", exc)
        return b""
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


def openapi_paths(id_field: str, max_rows: int = MAX_OUTCOME_ROWS) -> dict:
    """The OpenAPI description of POST /outcomes and GET /model/performance: exactly what the
    routes accept (the JSON body; CSV is described in words)."""
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    time = {"type": "string", "format": "date-time"}
    outcome = {
        "type": "object",
        "required": ["outcome"],
        "anyOf": [{"required": [id_field]}, {"required": ["request_id", "row"]}],
        "properties": {
            id_field: {"oneOf": [{"type": "string", "minLength": 1, "maxLength": outcomes.MAX_ID_CHARS},
                                 {"type": "integer", "minimum": -outcomes.MAX_INT_ID - 1,
                                  "maximum": outcomes.MAX_INT_ID}],
                       "description": "the client's record id, as sent in the scored record"},
            "request_id": {"type": "string", "minLength": 1, "maxLength": 128,
                           "description": "the X-Request-ID of the scoring request (for records without an id)"},
            "row": {"type": "integer", "minimum": 0, "maximum": outcomes.MAX_ROW,
                    "description": "the record's 0-based row in that request"},
            "outcome": {"type": "integer", "enum": [0, 1], "description": "1: the customer bought"},
            "observed_at": {**time, "description": "when the outcome happened; picks the decision it belongs "
                                                   "to when the id was scored more than once"},
        },
    }
    return {
        "/outcomes": {"post": {
            "summary": "Report outcomes of recorded decisions",
            "description": f"A JSON array of outcomes (or a text/csv body with a header naming {id_field} or "
                           "request_id and row, outcome, and optionally observed_at). The same outcome sent "
                           "twice counts once; a different one is kept as a correction. One bad row stores "
                           "nothing (422 with row and field).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "array", "minItems": 1, "maxItems": max_rows, "items": outcome}}}},
            "responses": {
                "200": {"description": "what was matched, recorded, corrected or unchanged; unmatched ids named",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": {"description": "not a non-empty JSON array, or a malformed CSV", "content": problem},
                "404": {"description": "the decision log is off", "content": problem},
                "413": {"description": f"more than {max_rows} outcomes", "content": problem},
                "415": {"description": "neither application/json nor text/csv", "content": problem},
                "422": {"description": "a bad value; `errors` names row and field", "content": problem},
                "503": {"description": "the decision database did not answer", "content": problem},
            },
        }},
        "/model/performance": {"get": {
            "summary": "Realized and expected performance per model version",
            "parameters": [
                {"name": "since", "in": "query", "required": False, "schema": time,
                 "description": "decisions made at or after this time"},
                {"name": "until", "in": "query", "required": False, "schema": time,
                 "description": "decisions made before this time"},
                {"name": "version", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "by", "in": "query", "required": False, "schema": {"type": "string", "enum": ["week"]},
                 "description": "week: weekly figures under each version as well"},
            ],
            "responses": {
                "200": {"description": "by_version: decisions, with_outcome, realized and expected figures",
                        "content": {"application/json": {"schema": {"type": "object", "required": ["by_version"]}}}},
                "400": {"description": "a bad since, until or by", "content": problem},
                "404": {"description": "the decision log is off", "content": problem},
                "503": {"description": "the decision database did not answer", "content": problem},
            },
        }},
    }
