"""RFC 9457 problem details: every error answer, bounded in size whatever the request held.
The HTTP status of each kind of problem is decided here, in serving."""
from __future__ import annotations

from enum import Enum

import msgspec
from flask import Response, g

from ..schema import InputError, Problem

PROBLEM_TYPE = "urn:ad-purchase-api:problem:"
MAX_PROBLEM_BYTES = 64 * 1024
MAX_DETAIL_CHARS = 1000

# The status of each kind of input problem.
STATUS = {
    Problem.MALFORMED_JSON: 400,
    Problem.MALFORMED_CSV: 400,
    Problem.BAD_BODY: 400,
    Problem.TOO_MANY_ROWS: 413,
    Problem.INVALID_VALUES: 422,
}


class HttpProblem(Enum):
    """Problems of the HTTP exchange itself, not of the records: slug, title and status."""

    BAD_QUERY = ("invalid-query-parameter", "Invalid query parameter", 400)
    UNSUPPORTED_MEDIA_TYPE = ("unsupported-media-type", "Unsupported media type", 415)
    NOT_READY = ("not-ready", "Model not loaded", 503)

    def __init__(self, slug: str, title: str, status: int) -> None:
        self.slug, self.title, self.status = slug, title, status


def status_of(kind: Problem | HttpProblem) -> int:
    return kind.status if isinstance(kind, HttpProblem) else STATUS[kind]


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


def of_kind(kind: Problem | HttpProblem, detail: str, **extra) -> Response:
    return problem(status_of(kind), kind.title, detail, kind.slug, **extra)


def of_input_error(error: InputError) -> Response:
    extra = {"errors": error.errors, "total_errors": error.total_errors} if error.errors else {}
    return of_kind(error.kind, error.detail, **extra)
