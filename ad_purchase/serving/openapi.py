"""The OpenAPI 3 document shown at /apidocs, built from the same schema the validator uses.

Field types, spellings and levels come from the schema; request examples are the user's own
payloads from examples/; response examples are those payloads scored by the loaded model,
so what the page shows is what the service answers.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from ..resources import load_example
from ..schema import (CATEGORICAL_LEVELS, CATEGORICAL_MEANING, CURRENCY_EXAMPLES, CURRENCY_FIELD, FIELDS,
                      MAX_ECHOED_CHARS, MAX_MAGNITUDE, MISSING_STRINGS, PERCENT_EXAMPLES, PERCENT_FIELD, SPACE,
                      currency_pattern, number_pattern, percent_pattern)

API_VERSION = "1.0.0"
_MISSING_TEXT = ("null or " + ", ".join(f'"{word}"' for word in sorted(MISSING_STRINGS))
                 + " in any case, spaces around ignored, mean missing")

# Patterns are the schema's own shapes (ad_purchase.schema.values), anchored and with digit counts bounded so that
# every number a pattern admits is finite and at most 1e300 in size, as the service requires of
# model inputs: at most 200 digits before the point and a two-digit exponent.  The service reads
# any finite number, so longer spellings it accepts are the only ones a pattern leaves out.
_DIGITS, _EXPONENT, _GROUPS = "{1,200}", "{1,2}", "{1,66}"
LARGEST_FLOAT = 1.7976931348623157e308
BEARER_SCHEME = "bearerAuth"


def _any_case(word: str) -> str:
    """A pattern matching `word` in any case (JSON Schema patterns have no case-insensitive flag)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


_MISSING = "|".join(_any_case(word) for word in sorted(MISSING_STRINGS) if word)


def _text(shape: str, space: str = SPACE) -> str:
    """A whole value: `shape` or a missing marker or nothing, with spaces around it."""
    return f"{space}*(?:(?:{shape}|{_MISSING}){space}*)?"


def _levels(field: str) -> str:
    return "|".join(_any_case(level) for level in CATEGORICAL_LEVELS[field])


def _shape(field: str, groups: str = _GROUPS, space: str = SPACE) -> str:
    """The spelling of a numeric field's text, without surrounding spaces or missing markers."""
    if field == CURRENCY_FIELD:
        return currency_pattern(groups, _DIGITS, _EXPONENT, space)
    if field == PERCENT_FIELD:
        return percent_pattern(_DIGITS, _EXPONENT, space)
    return number_pattern(_DIGITS, _EXPONENT)


def _field_schema(name: str, model_input: bool) -> dict:
    if name in CATEGORICAL_LEVELS:
        levels = CATEGORICAL_LEVELS[name]
        return {"type": "string", "nullable": True, "pattern": f"^{_text(_levels(name))}$",
                "description": f"{CATEGORICAL_MEANING[name]}: one of {', '.join(levels)} "
                               f"(case and surrounding spaces ignored); {_MISSING_TEXT}",
                "example": levels[0]}
    bound = MAX_MAGNITUDE if model_input else LARGEST_FLOAT
    number = {"type": "number", "minimum": -bound, "maximum": bound}
    text = {"type": "string", "pattern": f"^{_text(_shape(name))}$"}
    limit = f"at most {MAX_MAGNITUDE:g} in size (a model input)" if model_input else "finite"
    if name == CURRENCY_FIELD:
        description = ("currency amount: " + ", ".join(f'"{e}"' for e in CURRENCY_EXAMPLES)
                       + " or a number; commas only between groups of three digits before the decimal "
                       f"point; parentheses or a minus sign mean negative; {limit}; {_MISSING_TEXT}")
        example = CURRENCY_EXAMPLES[0]
    elif name == PERCENT_FIELD:
        description = ("percentage on the 0-100 scale: " + ", ".join(f'"{e}"' for e in PERCENT_EXAMPLES)
                       + f" or a number; {limit}; {_MISSING_TEXT}")
        example = PERCENT_EXAMPLES[0]
    else:
        description = f"number or numeric string, {limit}; {_MISSING_TEXT}"
        example = "0.137"
    return {"nullable": True, "oneOf": [number, text], "description": description, "example": example}


def csv_body_pattern() -> str:
    """A CSV body the service scores: the header naming x0..x99, then lines of cells in the same
    order; a currency amount with commas is quoted, as CSV requires.  (The service also reads
    the columns in any order, extra columns and other quoting; the row limit is in the text, since
    a pattern repeating a hundred cells thousands of times is too large for validators.)"""
    space = r"[ \t]"                       # a line break would end the row
    cells = []
    for field in FIELDS:
        if field in CATEGORICAL_LEVELS:
            cells.append(_text(_levels(field), space))
        elif field == CURRENCY_FIELD:
            quoted = _text(_shape(field, space=space), space)
            unquoted = _text(_shape(field, "{0}", space), space)
            cells.append(f'(?:"{quoted}"|{unquoted})')
        else:
            cells.append(_text(_shape(field, space=space), space))
    return rf"^{','.join(FIELDS)}\r?\n(?:{','.join(cells)}\r?\n)+$"


def _csv_example(records: list[dict]) -> str:
    """The batch example as a CSV body."""
    lines = [",".join(FIELDS)]
    for record in records:
        lines.append(",".join(_csv_cell(record[f]) for f in FIELDS))
    return "\n".join(lines) + "\n"


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _problem(description: str) -> dict:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def build_spec(features: list[str], max_rows: int, explain_values: Iterable[str],
               examples_out: dict[str, Any] | None = None, security: dict[str, str] | None = None) -> dict:
    """The whole document; `features` are the model's inputs, echoed in every result, and
    `explain_values` the values ?explain= takes.  `security` (path -> scope, "" for an open path)
    is given when access control is on: the document then declares the bearer scheme."""
    spec = _build_spec(features, max_rows, explain_values, examples_out)
    if security is not None:
        _add_security(spec, security)
    return spec


def _challenge_header() -> dict:
    return {"WWW-Authenticate": {"description": "Bearer challenge (RFC 6750)", "schema": {"type": "string"}}}


def _add_security(spec: dict, security: dict[str, str]) -> None:
    """The bearer scheme, each operation's requirement and its 401 and 403 answers."""
    spec["components"]["securitySchemes"] = {BEARER_SCHEME: {
        "type": "http", "scheme": "bearer",
        "description": "A token from the operators (python -m ad_purchase.cli.token). Each operation "
                       "names the scope it needs in x-required-scope: score, outcomes or ops."}}
    for path, operations in spec["paths"].items():
        scope = security.get(path, "")
        for operation in operations.values():
            if not scope:
                operation["security"] = []
                continue
            operation["security"] = [{BEARER_SCHEME: []}]
            operation["x-required-scope"] = scope
            operation["description"] = (operation.get("description", "") + f" Needs a bearer token with the "
                                        f"`{scope}` scope.").strip()
            operation["responses"]["401"] = {**_problem("No bearer token, a token in the URL, or a token this "
                                                        "service does not know"), "headers": _challenge_header()}
            operation["responses"]["403"] = {**_problem(f"The token does not have the {scope} scope"),
                                             "headers": _challenge_header()}


def _build_spec(features: list[str], max_rows: int, explain_values: Iterable[str],
                examples_out: dict[str, Any] | None = None) -> dict:
    result = {
        "type": "object",
        "required": ["business_outcome", "phat", *features],
        "additionalProperties": False,
        "properties": {
            "business_outcome": {"type": "integer", "enum": [0, 1],
                                 "description": "1 when phat is at or above the model's cutoff"},
            "phat": {"type": "number", "minimum": 0, "maximum": 1, "description": "predicted purchase probability"},
            "contributions": {"type": "object", "additionalProperties": {"type": "number"},
                              "description": "only with ?explain=true: coefficient x input per feature"},
            **{f: {"type": "number", "description": "model input as fed to the model"} for f in features},
        },
    }
    examples_out = examples_out or {}
    single, batch = load_example("single"), load_example("batch")
    record_ref = {"$ref": "#/components/schemas/Record"}
    result_ref = {"$ref": "#/components/schemas/Result"}
    json_response = {"application/json": {"schema": {"type": "object"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Ad purchase propensity API", "version": API_VERSION,
                 "description": "Scores customers with the purchase-propensity model. Send one record "
                                "(an object) or a batch (an array of objects) with the raw fields x0..x99."},
        "paths": {
            "/predict": {"post": {
                "summary": "Score one record or a batch",
                "parameters": [{"name": "explain", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": list(explain_values), "default": "false"},
                                "description": "Add `contributions`: each model input's share of the log-odds "
                                               "(coefficient x input); they sum to logit(phat)."}],
                "description": f"An object gives one result object; an array of 1 to {max_rows} objects gives "
                               "an array of results in the same order. A text/csv body (header row with "
                               "x0..x99) is scored the same way; send Accept: text/csv for a CSV answer "
                               "(with explain, contribution_<input> columns follow the answer's). "
                               "One invalid row fails the whole request and the error lists every problem "
                               "(row is the 0-based array index for JSON, the 1-based data line for CSV).",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"oneOf": [record_ref, {"type": "array", "items": record_ref,
                                                      "minItems": 1, "maxItems": max_rows}]},
                    "examples": {"single": {"summary": "one record", "value": single},
                                 "batch": {"summary": "a batch of four records", "value": batch}},
                }, "text/csv": {
                    "schema": {"type": "string", "pattern": csv_body_pattern(),
                               "description": f"A header row naming x0..x99, then one line per record, "
                                              f"1 to {max_rows} of them (413 beyond)"},
                    "example": _csv_example(batch),
                }}},
                "responses": {
                    "200": {"description": "Scores, keys in alphabetical order",
                            "content": {"application/json": {
                                "schema": {"oneOf": [result_ref, {"type": "array", "items": result_ref}]},
                                **({"examples": {k: {"value": v} for k, v in examples_out.items()}}
                                   if examples_out else {})},
                                "text/csv": {"schema": {"type": "string"},
                                             "description": "with Accept: text/csv; header row, then one line "
                                                            "per record; with explain, a contribution_<input> "
                                                            "column per input"}}},
                    "400": _problem("Malformed JSON or CSV, a body that is not an object or a non-empty array "
                                    "of objects, or an explain value not listed"),
                    "408": _problem("The request body stopped arriving; the connection is closed"),
                    "413": _problem(f"More than {max_rows} records, or a body over the size limit"),
                    "415": _problem("Content-Type is neither application/json nor text/csv"),
                    "422": _problem("Field values that cannot be used; `errors` lists row, field, value, message"),
                    "503": _problem("The model is not loaded"),
                },
            }},
            "/health": {"get": {"summary": "Liveness: the process answers",
                                "responses": {"200": {"description": "up", "content": json_response}}}},
            "/ready": {"get": {"summary": "Readiness: artifacts loaded and verified",
                               "responses": {"200": {"description": "ready", "content": json_response},
                                             "503": _problem("not ready")}}},
            "/model/drift": {"get": {
                "summary": "Population stability index of every input field against the training profile",
                "description": "PSI below 0.1: stable; 0.1 to 0.2: watch; above 0.2: alert. Fields with "
                               "fewer than 100 observed rows report 'insufficient data'.",
                "responses": {"200": {"description": "drift per field", "content": json_response},
                              "503": _problem("The model is not loaded")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)",
                                 "responses": {"200": {"description": "metrics",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/model": {"get": {"summary": "The served model: version, features, coefficients, cutoff, AUC, checksums",
                               "responses": {"200": {"description": "model facts", "content": json_response},
                                             "503": _problem("The model is not loaded")}}},
        },
        "components": {"schemas": {
            "Record": {"type": "object", "required": list(FIELDS),
                       "properties": {f: _field_schema(f, f in features) for f in FIELDS},
                       "description": "One customer's raw fields. Keys beyond x0..x99 are ignored."},
            "Result": result,
            "Problem": {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "row": {"type": "integer"}, "field": {"type": "string"},
                    "value": {"nullable": True,
                              "description": f"as sent, cut to its first {MAX_ECHOED_CHARS} characters; "
                                             "absent for a missing key"},
                    "message": {"type": "string"}}}},
                "total_errors": {"type": "integer"},
                "request_id": {"type": "string"},
                "required_scope": {"type": "string", "description": "in a 403: the scope the route needs"},
            }},
        }},
    }
