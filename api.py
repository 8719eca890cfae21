"""The HTTP service: routes, error handling, monitoring hooks and the Swagger UI around model_utils.

    create_app(config)  -> a Flask app (tests build their own with other settings)
    app                 -> the app gunicorn serves, configured from the environment

Every response an HTTP client can provoke is JSON (or CSV when asked for); errors are RFC 9457
problem details carrying the request id, never a stack trace or a server path.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import swagger_ui_bundle
from flasgger import Swagger
from flask import Flask, Response, g, request, send_from_directory
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge, RequestTimeout

import openapi
from csv_io import decode_csv, encode_csv
from decoding import RequestError
from model_utils import ArtifactError, Model, load_model
from observability import DriftProfile, Observability, request_id
from schema import ROOT, load_example

log = logging.getLogger("api")
access_log = logging.getLogger("api.access")
PROBLEM_TYPE = "urn:ad-purchase-api:problem:"
# The values ?explain= takes, as the OpenAPI document lists them; anything else is a 400.
EXPLAIN_VALUES = {"true": True, "false": False, "1": True, "0": False}
INPUT_TYPES = ("application/json", "text/csv")   # the first is the default answer
# Accept headers that can only mean JSON.  Most clients send one of these, so the header is
# parsed only when it could ask for CSV (parsing it costs more than encoding a one-row answer).
JSON_ONLY_ACCEPTS = frozenset(("", "*/*", "application/json"))

# Sent with every response.  The API answers JSON only, so it forbids everything a page could
# do; the Swagger UI page needs its own scripts and styles (and Swagger UI's inline bootstrap).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'")


@dataclass
class Settings:
    """Service settings; each can come from the environment variable of the same name."""

    MODEL_DIR: str = str(ROOT / "objs")
    MAX_BATCH_ROWS: int = 10_000
    MAX_CONTENT_LENGTH: int = 64 * 1024 * 1024   # bytes; a 10,000-row batch is about 20 MB
    DRIFT_FLUSH_SECONDS: int = 5
    BODY_TIMEOUT: int = 10             # seconds a request body may pause before 408

    @classmethod
    def from_env(cls, overrides: dict | None = None) -> "Settings":
        values = {}
        for item in fields(cls):
            raw = (overrides or {}).get(item.name, os.environ.get(item.name))
            if raw is not None:
                try:
                    values[item.name] = int(raw) if item.type == "int" else str(raw)
                except ValueError:
                    raise SystemExit(f"configuration error: {item.name}={raw!r} is not a whole number") from None
        return cls(**values)


MAX_PROBLEM_BYTES = 64 * 1024      # no error body is larger, whatever the request held
MAX_DETAIL_CHARS = 1000


def problem(status: int, title: str, detail: str, slug: str | None = None, **extra) -> Response:
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS] + " ..."
    body = {"type": PROBLEM_TYPE + slug if slug else "about:blank", "title": title, "status": status,
            "detail": detail, **extra}
    if "request_id" in g:
        body["request_id"] = g.request_id
    encoded = msgspec.json.encode(body)
    errors = body.get("errors")
    while len(encoded) > MAX_PROBLEM_BYTES and errors:     # long values, many escapes: list fewer
        del errors[len(errors) // 2:]
        body["detail"] = f"{detail} The first {len(errors)} are listed."
        encoded = msgspec.json.encode(body)
    return Response(encoded, status=status, mimetype="application/problem+json")


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
    finally:
        if sock is not None:
            sock.settimeout(previous)
    if len(body) != length:
        raise ClientDisconnected()
    return body


def _json(body: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status=status, mimetype="application/json")


def create_app(config: dict | None = None) -> Flask:
    settings = Settings.from_env(config)
    model_dir = Path(settings.MODEL_DIR)
    if not model_dir.is_dir():
        # Nothing to serve at all: stop at start with a clear message rather than run unready.
        raise SystemExit(f"MODEL_DIR {model_dir} does not exist; train a model with train.py or set MODEL_DIR")

    app = Flask(__name__)
    app.config["DEBUG"] = False        # never the debugger, whatever FLASK_DEBUG says
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_CONTENT_LENGTH
    app.config["SETTINGS"] = settings
    model: Model | None = None
    load_error = ""
    try:
        model = load_model(model_dir, max_rows=settings.MAX_BATCH_ROWS)
    except ArtifactError as exc:
        load_error = str(exc)
        log.error("model not loaded, the service stays unready: %s", exc)
    app.extensions["model"] = model
    monitor = Observability(model.name if model else "none", model.version if model else "none",
                            DriftProfile(model.metadata) if model else None,
                            model.decoder if model else None, settings.DRIFT_FLUSH_SECONDS)
    app.extensions["observability"] = monitor

    @app.before_request
    def start_request() -> None:
        g.request_id = request_id(request.headers.get("X-Request-ID"))
        g.started = time.perf_counter()
        g.rows = 0

    @app.after_request
    def finish_request(response: Response) -> Response:
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers.update(SECURITY_HEADERS)
        response.headers["Content-Security-Policy"] = DOCS_CSP if route.startswith("/apidocs") else API_CSP
        if route == "/predict":
            response.headers["Cache-Control"] = "no-store"
        monitor.observe_request(route, request.method, response.status_code, seconds)
        access_log.info(json.dumps({
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": g.get("request_id"), "method": request.method, "route": route,
            "path": request.path, "status": response.status_code, "rows": g.get("rows", 0),
            "latency_ms": round(seconds * 1000, 3)}))
        return response

    @app.post("/predict")
    def predict() -> Response:
        if request.mimetype not in INPUT_TYPES:
            return problem(415, "Unsupported media type",
                           "Send the records as application/json or text/csv "
                           f"(got {request.mimetype or 'no Content-Type'}).", "unsupported-media-type")
        if model is None:
            return problem(503, "Model not loaded", "The service has no verified model to score with.",
                           "not-ready")
        explain = False
        if request.query_string:            # request.args parses it; most requests have none
            raw = request.args.get("explain")
            if raw is not None and raw not in EXPLAIN_VALUES:
                return problem(400, "Invalid query parameter",
                               f"explain must be one of {', '.join(EXPLAIN_VALUES)}, not {raw[:100]!r}.",
                               "invalid-query-parameter", parameter="explain")
            explain = EXPLAIN_VALUES.get(raw, False)
        body = request_body(settings.MAX_CONTENT_LENGTH, settings.BODY_TIMEOUT)
        try:
            if request.mimetype == "text/csv":
                batch = decode_csv(body, model.decoder.numeric_fields, settings.MAX_BATCH_ROWS)
            else:
                batch = model.decoder.decode(body)
        except RequestError as exc:
            monitor.observe_invalid(exc.errors)
            extra = {"errors": exc.errors, "total_errors": exc.total_errors} if exc.errors else {}
            return problem(exc.status, exc.title, exc.detail, exc.title.lower().replace(" ", "-"), **extra)
        scores = model.score(batch)
        g.rows = batch.rows
        monitor.observe_scores(batch, scores.phat, scores.outcome)
        if (request.headers.get("Accept", "") not in JSON_ONLY_ACCEPTS
                and request.accept_mimetypes.best_match(INPUT_TYPES) == "text/csv"):
            return Response(encode_csv(model, scores), mimetype="text/csv")
        return Response(model.encode(batch, scores, explain), mimetype="application/json")

    @app.get("/health")
    def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/ready")
    def ready() -> Response:
        if model is None:
            return problem(503, "Not ready", f"Model not loaded: {_public(load_error, model_dir)}", "not-ready")
        return _json({"status": "ready", "model": model.name, "version": model.version})

    @app.get("/model")
    def model_info() -> Response:
        if model is None:
            return problem(503, "Model not loaded", "The service has no verified model.", "not-ready")
        meta = model.metadata
        return _json({key: meta[key] for key in (
            "model_name", "model_version", "trained_at", "training_data", "rows", "class_balance",
            "features", "coefficients", "cutoff", "cutoff_percentile", "auc", "library_versions", "artifacts")})

    @app.get("/model/drift")
    def model_drift() -> Response:
        if model is None:
            return problem(503, "Model not loaded", "The service has no verified model.", "not-ready")
        return _json(monitor.drift_report())

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(monitor.exposition(), mimetype="text/plain", headers={"Cache-Control": "no-store"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = problem(exc.code or 500, exc.name, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s (request %s)", request.method, request.path, g.get("request_id"))
        return problem(500, "Internal Server Error", "The request could not be processed.")

    _add_swagger(app, model, settings)
    return app


def _public(message: str, model_dir: Path) -> str:
    """An error message without the server's folder layout."""
    for folder in (model_dir.resolve(), model_dir, ROOT):
        message = message.replace(str(folder) + os.sep, "").replace(str(folder), "MODEL_DIR")
    return message


def _add_swagger(app: Flask, model: Model | None, settings: Settings) -> None:
    """Flasgger's UI page, fed our OpenAPI document and a current Swagger UI build."""
    examples = {}
    features: list[str] = list(model.features) if model else []
    if model is not None:
        for name, example, explain in (("single", "single", False), ("batch", "batch", False),
                                       ("explained", "single", True)):
            try:
                body = model.predict_body(msgspec.json.encode(load_example(example)), explain=explain)
            except RequestError:       # e.g. MAX_BATCH_ROWS below the batch example's four rows
                continue
            examples[name] = msgspec.json.decode(body)
    spec = openapi.build_spec(features, settings.MAX_BATCH_ROWS, EXPLAIN_VALUES, examples)

    assets = swagger_ui_bundle.swagger_ui_path

    @app.get("/apidocs/ui/<path:filename>")
    def swagger_assets(filename: str) -> Response:
        return send_from_directory(assets, filename, max_age=3600)

    Swagger(app, template=spec, config={
        "headers": [],
        "specs": [{"endpoint": "apispec", "route": "/apispec.json", "rule_filter": lambda rule: False,
                   "model_filter": lambda tag: False}],
        "specs_route": "/apidocs/",
        "static_url_path": "/flasgger_static",
        "openapi": "3.0.3",
        "title": "Ad purchase propensity API",
        "swagger_ui_bundle_js": "/apidocs/ui/swagger-ui-bundle.js",
        "swagger_ui_standalone_preset_js": "/apidocs/ui/swagger-ui-standalone-preset.js",
        "swagger_ui_css": "/apidocs/ui/swagger-ui.css",
        "favicon": "/apidocs/ui/favicon-32x32.png",
        "hide_top_bar": True,
        "auth": {},   # the page's script renders this as a JavaScript literal; None would not parse
    })


def _configure_logging() -> None:
    """Plain lines for the service's own messages; the access log lines are JSON objects."""
    if logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), handlers=[handler])
    access = logging.StreamHandler(sys.stdout)
    access.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(access)
    access_log.propagate = False


_configure_logging()
app = create_app()
