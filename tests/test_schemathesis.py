"""The OpenAPI document the service publishes, checked against the service itself.

Schemathesis reads /apispec.json from the app (through WSGI, no network), generates requests for
every documented operation from it, valid ones and ones the schema says are invalid, and runs
every check it has: never a 5xx, status codes, content types, headers and bodies as documented,
every request the document calls valid accepted and every one it calls invalid refused, and
methods the document does not list refused.  Access control is on, as in production: every
request carries a bearer token holding every scope, and the authentication checks confirm that a
protected operation refuses a request without it.  Settings shared with a by-hand run are in
schemathesis.toml beside this file.  Generation is deterministic (fixed seed, derandomized) and
bounded per operation.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from api_support import MODEL_DIR

pytestmark = pytest.mark.schemathesis

try:
    import schemathesis
    from schemathesis.checks import CHECKS, load_all_checks, not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import response_schema_conformance
except ImportError as exc:  # pinned in requirements-dev.txt
    if os.environ.get("CI"):
        raise
    pytest.skip(f"schemathesis is not installed ({exc}); pip install -r requirements-dev.txt",
                allow_module_level=True)

from ad_purchase.serving.app import create_app

MAX_EXAMPLES = 50
SEED = 20240611
load_all_checks()
ALL_CHECKS = CHECKS.get_all()          # what `--checks all` runs
# Routes that are pages rather than API operations: the Swagger UI (flasgger's blueprint, with
# /apispec.json, this document itself), its assets, and Flask's static folder.
PAGE_ENDPOINTS = {"static", "swagger_assets"}

SHARED = tomllib.loads((Path(__file__).with_name("schemathesis.toml")).read_text())
TOKEN = "tok-schemathesis-every-scope"
SENT_TOKEN = TOKEN                     # what the requests carry (a test of the harness may change it)
CONFIG = schemathesis.Config.from_dict({
    **SHARED,
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
    # The coverage phase enumerates boundary values of all 100 record fields: ~1,900 requests for
    # /predict alone, minutes on a 2-core machine.  Explicit examples and fuzzing stay on.
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
})

_TOKENS = Path(tempfile.mkdtemp(prefix="schemathesis-tokens-")) / "tokens.txt"
_TOKENS.write_text(f"schemathesis score,outcomes,ops {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
APP = create_app({"MODEL_DIR": str(MODEL_DIR), "AUTH_TOKENS_FILE": str(_TOKENS)})
SCHEMA = schemathesis.openapi.from_wsgi("/apispec.json", APP, config=CONFIG)


@SCHEMA.auth()
class BearerToken:
    """The token for the document's bearer scheme: put on every generated request; schemathesis
    leaves it out where it checks that an operation refuses a request without it."""

    def get(self, case, context):
        return SENT_TOKEN

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def documented_operations() -> set[tuple[str, str]]:
    return {(result.ok().method.upper(), result.ok().path) for result in SCHEMA.get_all_operations()}


def test_the_document_covers_every_api_route():
    served = {(method, rule.rule) for rule in APP.url_map.iter_rules()
              if rule.endpoint not in PAGE_ENDPOINTS and not rule.endpoint.startswith("flasgger.")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented_operations()


def test_the_document_is_openapi_3_with_the_request_examples():
    raw = APP.test_client().get("/apispec.json").get_json()
    assert raw["openapi"].startswith("3.")
    examples = raw["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert {"single", "batch"} <= set(examples)


@SCHEMA.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_response_matches_the_document(case):
    response = case.call_and_validate(checks=ALL_CHECKS)
    if (case.headers or {}).get("Authorization") == f"Bearer {SENT_TOKEN}":   # it holds every scope
        assert response.status_code not in (401, 403), response.text[:300]


def test_every_check_schemathesis_has_runs():
    names = {check.__name__ for check in ALL_CHECKS}
    assert {"negative_data_rejection", "positive_data_acceptance", "unsupported_method",
            "missing_required_header", "response_headers_conformance", "ignored_auth"} <= names


def test_the_document_declares_the_bearer_scheme():
    raw = APP.test_client().get("/apispec.json").get_json()
    assert raw["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert raw["paths"]["/predict"]["post"]["security"] == [{"bearerAuth": []}]


def test_the_checks_catch_a_response_that_breaks_its_document():
    """The harness can fail: an app whose answer contradicts its own document is caught."""
    from flask import Flask, jsonify

    broken = Flask("broken")
    document = {"openapi": "3.0.3", "info": {"title": "broken", "version": "1"}, "paths": {"/thing": {"get": {
        "responses": {"200": {"description": "a thing", "content": {"application/json": {"schema": {
            "type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}}}}}}}}}
    broken.add_url_rule("/spec.json", "spec", lambda: jsonify(document))
    broken.add_url_rule("/thing", "thing", lambda: jsonify({"id": "not a number"}))
    schema = schemathesis.openapi.from_wsgi("/spec.json", broken, config=CONFIG)
    case = schema["/thing"]["GET"].Case()
    with pytest.raises(FailureGroup) as failure:
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
    assert "Response violates schema" in str(failure.value)
