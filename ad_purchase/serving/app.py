"""The Flask application factory.

    create_app(config=None) -> a Flask app serving the model in MODEL_DIR

Settings come from the environment, `config` overriding them (tests build apps with other
settings).  Nothing is built at import: gunicorn's entry point is api.py at the repository root.
Every answer an HTTP client can provoke is JSON (or CSV when asked for); errors are RFC 9457
problem details carrying the request id, never a stack trace or a server path.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone

import msgspec
import swagger_ui_bundle
from flasgger import Swagger
from flask import Flask, Response, g, request, send_from_directory
from werkzeug.exceptions import HTTPException

from ..monitoring import request_id
from ..resources import load_example
from ..schema import InputError
from . import auth, http_guard, openapi
from .decision_routes import decision_routes
from .decision_routes import openapi_paths as decision_openapi_paths
from .problems import problem
from .routes import EXPLAIN_VALUES, routes
from .service import Service
from .settings import Settings

log = logging.getLogger("api")
access_log = logging.getLogger("api.access")

# Sent with every response.  The API answers JSON only, so it forbids everything a page could
# do; the Swagger UI page needs its own scripts and styles (and Swagger UI's inline bootstrap).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Flasgger's pages are open; its own copy of Swagger UI (replaced by a current build) serves nothing.
DOCS_ENDPOINTS = {**auth.open_endpoints(("flasgger.apidocs", "flasgger.apispec", "flasgger.<lambda>",
                                         "flasgger.oauth_redirect")), "flasgger.static": auth.HIDDEN}
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'")


def create_app(config: dict | None = None, settings: Settings | None = None) -> Flask:
    """The app; `settings` as given, else from the environment with `config` overriding it."""
    settings = settings or Settings.from_env(None, config)
    svc = Service.start(settings)
    tokens = auth.load(settings.AUTH_TOKENS_FILE)
    app = Flask(__name__, static_folder=None)   # nothing is served from a folder of the package
    app.config["DEBUG"] = False        # never the debugger, whatever FLASK_DEBUG says
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_CONTENT_LENGTH
    app.extensions["service"] = svc
    app.register_blueprint(routes)
    app.register_blueprint(decision_routes)
    _add_request_hooks(app, svc)
    _add_error_handlers(app)
    _add_swagger(app, svc, tokens)
    auth.install(app, tokens, DOCS_ENDPOINTS)
    http_guard.install(app)
    return app


def _add_request_hooks(app: Flask, svc: Service) -> None:
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
        svc.metrics.observe_request(route, request.method, response.status_code, seconds)
        access_log.info(json.dumps({
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": g.get("request_id"), "method": request.method, "route": route,
            "path": request.path, "status": response.status_code, "rows": g.get("rows", 0),
            "latency_ms": round(seconds * 1000, 3), "caller": g.get("caller")}))
        return response


def _add_error_handlers(app: Flask) -> None:
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


def _add_swagger(app: Flask, svc: Service, tokens: auth.Tokens | None) -> None:
    """Flasgger's UI page, fed our OpenAPI document and a current Swagger UI build.  The answers
    it shows are the user's examples scored by the loaded model."""
    examples = {}
    if svc.model is not None:
        for name, example, explain in (("single", "single", False), ("batch", "batch", False),
                                       ("explained", "single", True)):
            try:       # scored as a request is, but not counted by monitoring
                prediction = svc.predictor.predict(svc.json.decode_values(load_example(example)), explain)
            except InputError:       # e.g. MAX_BATCH_ROWS below the batch example's four rows
                continue
            examples[name] = msgspec.json.decode(svc.answer(prediction))
    features = list(svc.model.features) if svc.model else []
    security = auth.path_scopes(app, auth.route_scopes(app, DOCS_ENDPOINTS)) if tokens is not None else None
    spec = openapi.build_spec(features, svc.settings.MAX_BATCH_ROWS, EXPLAIN_VALUES, examples, security)
    spec["paths"].update(decision_openapi_paths(svc.settings.ID_FIELD))

    assets = swagger_ui_bundle.swagger_ui_path

    @app.get("/apidocs/ui/<path:filename>")
    @auth.open_route
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


def configure_logging(settings: Settings) -> None:
    """Plain lines for the service's own messages; the access log lines are JSON objects."""
    if logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    access = logging.StreamHandler(sys.stdout)
    access.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(access)
    access_log.propagate = False
