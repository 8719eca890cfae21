r"""The HTTP routes.  Each reads the app's Service: /predict is the one request path

    body --codec + decoding core--> Columns --prediction service--> Prediction --codec--> answer
                                                                        \--> monitoring
"""
from __future__ import annotations

import functools
import logging
import socket

import msgspec
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge, RequestTimeout

from ..model.artifacts import MODEL_FACTS
from ..schema import InputError
from . import decision_routes
from .auth import has_scope, open_route, requires
from .http_guard import BODY_FRAMING_ERRORS, malformed_body
from .problems import HttpProblem, of_input_error, of_kind
from .service import CSV, JSON

log = logging.getLogger("api")
routes = Blueprint("routes", __name__)

INPUT_TYPES = (JSON, CSV)   # the first is the default answer
# Accept headers that can only mean JSON.  Most clients send one of these, so the header is
# parsed only when it could ask for CSV (parsing it costs more than encoding a one-row answer).
JSON_ONLY_ACCEPTS = frozenset(("", "*/*", "application/json"))
# The values ?explain= takes, as the OpenAPI document lists them; anything else is a 400.
EXPLAIN_VALUES = {"true": True, "false": False, "1": True, "0": False}


def service():
    return current_app.extensions["service"]


def _json(body: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status=status, mimetype="application/json")


def request_body(max_length: int, timeout: float) -> bytes:
    """The request body, read in one call of its declared length.

    werkzeug's get_data reads 64 KB at a time, and under gunicorn each read copies what is still
    buffered; one read of the declared length avoids those copies.  A body over `max_length` and
    a short body are answered as werkzeug answers them (413, 400).  A client that sends nothing
    for `timeout` seconds in the middle of its body gets 408, and the connection is closed."""
    length = request.content_length
    if length is not None and length > max_length:
        raise RequestEntityTooLarge()
    sock = request.environ.get("gunicorn.socket")     # absent outside gunicorn (tests' client)
    previous = sock.gettimeout() if sock is not None else None
    if sock is not None:
        sock.settimeout(timeout)                      # each read waits at most this long
    try:
        if length is None:                  # no declared length (chunked): werkzeug's own reading
            return request.get_data(cache=False)
        body = request.environ["wsgi.input"].read(length)
    except TimeoutError:
        log.warning("request %s from %s: no part of the body arrived for %g s; answered 408 and closed "
                    "the connection", g.get("request_id"), request.remote_addr, timeout)
        try:
            sock.shutdown(socket.SHUT_RD)             # the rest of the body is never read
        except OSError:
            pass
        raise RequestTimeout(f"No part of the request body arrived for {timeout:g} s.") from None
    except BODY_FRAMING_ERRORS as exc:               # a chunked body gunicorn cannot frame
        raise malformed_body(exc) from None
    finally:
        if sock is not None:
            sock.settimeout(previous)
    if len(body) != length:
        raise ClientDisconnected()
    return body


@routes.post("/predict")
@requires("score")
def predict() -> Response:
    svc = service()
    if request.mimetype not in INPUT_TYPES:
        return of_kind(HttpProblem.UNSUPPORTED_MEDIA_TYPE, "Send the records as application/json or text/csv "
                       f"(got {request.mimetype or 'no Content-Type'}).")
    if svc.model is None:
        return of_kind(HttpProblem.NOT_READY, "The service has no verified model to score with.")
    explain = False
    if request.query_string:                # request.args parses it; most requests have none
        raw = request.args.get("explain")
        if raw is not None and raw not in EXPLAIN_VALUES:
            return of_kind(HttpProblem.BAD_QUERY, f"explain must be one of {', '.join(EXPLAIN_VALUES)}, "
                                                  f"not {raw[:100]!r}.", parameter="explain")
        explain = EXPLAIN_VALUES.get(raw, False)
    answer_type = JSON
    if (request.headers.get("Accept", "") not in JSON_ONLY_ACCEPTS
            and request.accept_mimetypes.best_match(INPUT_TYPES) == CSV):
        answer_type = CSV
    body = request_body(svc.settings.MAX_CONTENT_LENGTH, svc.settings.BODY_TIMEOUT)
    try:
        prediction = svc.predict(body, request.mimetype, explain)
    except InputError as exc:
        svc.metrics.observe_invalid(exc.errors)
        return of_input_error(exc)
    g.rows = prediction.rows
    svc.decisions.record(svc.model.version, g.request_id, g.get("caller"), prediction.ids,
                         prediction.scores.phat, prediction.scores.outcome)   # once committed; else 503
    return Response(svc.answer(prediction, answer_type), mimetype=answer_type)


@routes.get("/health")
@open_route
def health() -> Response:
    return _json({"status": "ok"})


@routes.get("/ready")
@open_route
def ready() -> Response:
    svc = service()
    if svc.model is None:
        return of_kind(HttpProblem.NOT_READY, f"Model not loaded: {svc.public_load_error()}")
    decision_log, unready = decision_routes.readiness(svc)
    if unready is not None:
        return unready
    return _json({"status": "ready", "model": svc.model.name, "version": svc.model.version,
                  "decision_log": decision_log})


def with_model(view):
    """A view that needs the loaded model: 503 without one, else called with the service."""
    @functools.wraps(view)
    def guarded() -> Response:
        svc = service()
        if svc.model is None:
            return of_kind(HttpProblem.NOT_READY, "The service has no verified model.")
        return view(svc)
    return guarded


@routes.get("/model")
@requires("ops")
@with_model
def model_facts(svc) -> Response:
    hidden = () if has_scope("ops") else ("library_versions",)   # what an attacker would look up
    return _json({key: svc.model.metadata[key] for key in MODEL_FACTS if key not in hidden})


@routes.get("/model/drift")
@requires("ops")
@with_model
def model_drift(svc) -> Response:
    return _json(svc.drift.report(svc.metrics.collected()))


@routes.get("/metrics")
@requires("ops")
def metrics() -> Response:
    svc = service()
    psi = None
    if svc.drift is not None:
        psi = {field: item["psi"] for field, item in svc.drift.report(svc.metrics.collected())["fields"].items()}
    return Response(svc.metrics.exposition(psi) + decision_routes.exposition(svc), mimetype="text/plain",
                    headers={"Cache-Control": "no-store"})
