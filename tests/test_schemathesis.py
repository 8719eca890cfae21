"""The OpenAPI document the service publishes, checked against the service itself.

Schemathesis reads /apispec.json from the app (through WSGI, no network), generates requests for
every documented operation from it, valid ones and ones the schema says are invalid, and checks
each response: never a 5xx, status codes the document lists for the operation, the documented
content type, and a body that validates against the documented schema.  Generation is
deterministic (fixed seed, derandomized) and bounded per operation.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from api_support import MODEL_DIR

pytestmark = pytest.mark.schemathesis

try:
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                  status_code_conformance)
except ImportError as exc:  # pinned in requirements-security.txt
    if os.environ.get("CI"):
        raise
    pytest.skip(f"schemathesis is not installed ({exc}); pip install -r requirements-security.txt",
                allow_module_level=True)

import api

MAX_EXAMPLES = 50
SEED = 20240611
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Routes that are pages rather than API operations: the Swagger UI (flasgger's blueprint, with
# /apispec.json, this document itself), its assets, and Flask's static folder.
PAGE_ENDPOINTS = {"static", "swagger_assets"}

CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
    # The coverage phase enumerates boundary values of all 100 record fields: ~1,900 requests for
    # /predict alone, minutes on a 2-core machine.  Explicit examples and fuzzing stay on.
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
})

APP = api.create_app({"MODEL_DIR": str(MODEL_DIR)})
SCHEMA = schemathesis.openapi.from_wsgi("/apispec.json", APP, config=CONFIG)


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
    case.call_and_validate(checks=CHECKS)


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
        case.call_and_validate(checks=CHECKS)
    assert "Response violates schema" in str(failure.value)
