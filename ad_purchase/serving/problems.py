"""RFC 9457 problem details: every error answer, bounded in size whatever the request held."""
from __future__ import annotations

import msgspec
from flask import Response, g

from ..schema import InputError, Problem

PROBLEM_TYPE = "urn:ad-purchase-api:problem:"
MAX_PROBLEM_BYTES = 64 * 1024
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


def of_kind(kind: Problem, detail: str, **extra) -> Response:
    return problem(kind.status, kind.title, detail, kind.slug, **extra)


def of_input_error(error: InputError) -> Response:
    extra = {"errors": error.errors, "total_errors": error.total_errors} if error.errors else {}
    return of_kind(error.kind, error.detail, **extra)
