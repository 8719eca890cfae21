"""What no caller can do at the HTTP level: every malformed request is a 4xx problem detail.

- A chunked body whose framing is broken (a chunk size such as `zz` or `-1`, a chunk without its
  CRLF) makes gunicorn's parser raise inside wsgi.input.read(); request_body turns that into a
  400 and closes the connection, since the rest of the stream cannot be framed.
- A `Content-Encoding` the service does not decode (it decodes none) is refused with 415 before
  the body is read: a compressed body is never taken for JSON, nor a plain one labelled gzip.
- gunicorn's own error answers (bad request line, URI too long, headers too large, an unknown
  transfer coding, ...) are problem details too: the service's worker (worker.py) answers with
  classify() and error_answer() instead of gunicorn's HTML page.
"""
from __future__ import annotations

import json
import socket
import ssl

from flask import Flask, Response, request
from werkzeug.exceptions import BadRequest

from .problems import PROBLEM_TYPE, problem

try:                          # gunicorn is absent where the app runs under another server
    from gunicorn.http import errors as _gunicorn_errors
except ImportError:           # pragma: no cover - gunicorn is in requirements.txt
    _gunicorn_errors = None

# Errors only a chunked body raises (never a request line or headers), and those plus what a
# chunked body's trailer can raise: what gunicorn raises while the application reads the body.
CHUNK_ERRORS: tuple[type[BaseException], ...] = () if _gunicorn_errors is None else (
    _gunicorn_errors.InvalidChunkSize, _gunicorn_errors.ChunkMissingTerminator,
    _gunicorn_errors.InvalidChunkExtension)
BODY_FRAMING_ERRORS: tuple[type[BaseException], ...] = CHUNK_ERRORS + (() if _gunicorn_errors is None else (
    _gunicorn_errors.InvalidHeader, _gunicorn_errors.LimitRequestHeaders))
IDENTITY = "identity"


def malformed_body(exc: BaseException) -> BadRequest:
    """The 400 for a body whose chunked framing is broken; the connection's read side is shut,
    so the worker closes it after the answer instead of parsing the remains as a request."""
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
    reason = str(exc).replace("\n", " ")[:200]
    return BadRequest(f"The request body's chunked framing is broken ({reason}); the connection is closed.")


def install(app: Flask) -> None:
    """Refuse content codings before any view reads a body."""

    @app.before_request
    def refuse_content_coding() -> Response | None:
        coding = request.environ.get("HTTP_CONTENT_ENCODING")     # cheaper than building request.headers
        if coding is None or coding.strip().lower() in ("", IDENTITY):
            return None
        response = problem(415, "Unsupported media type",
                           f"Content-Encoding {coding.strip()[:100]!r} is not accepted: send the body "
                           "uncompressed, without a Content-Encoding header.", "unsupported-content-encoding")
        response.headers["Accept-Encoding"] = IDENTITY
        return response


# ------------------------------------------------------------------ gunicorn's own error answers

_REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 414: "URI Too Long",
            417: "Expectation Failed", 431: "Request Header Fields Too Large", 500: "Internal Server Error"}


def classify(exc: BaseException) -> tuple[int, str] | None:
    """(status, detail) of an error gunicorn raised before the application saw the request, or
    None when there is nobody to answer (a failed TLS handshake)."""
    if isinstance(exc, ssl.SSLError):
        return None
    if _gunicorn_errors is None:
        return _UNEXPECTED
    for names, status, detail in _ANSWERS:
        if isinstance(exc, tuple(getattr(_gunicorn_errors, name) for name in names)):
            return status, detail.format(kind=type(exc).__name__)
    return _UNEXPECTED


_UNEXPECTED = (500, "The request could not be processed.")
# gunicorn's exceptions (by name in gunicorn.http.errors), in the order they are tested, with the
# answer to each; the first that matches answers.
_ANSWERS = [
    (("InvalidResponseHeader", "InvalidResponseHeaderName", "ConfigurationProblem"), *_UNEXPECTED),
    (("LimitRequestLine",), 414, "The request line is longer than the server accepts."),
    (("LimitRequestHeaders",), 431,
     "The request's header fields are larger or more numerous than the server accepts."),
    (("UnsupportedTransferCoding",), 400, "The request uses a transfer coding the server does not support; "
                                          "only chunked (or a Content-Length) frames a body."),
    (("ExpectationFailed",), 417, "The request's Expect header cannot be met."),
    (("ForbiddenProxyRequest",), 403, "Request forbidden."),
    (("ParseException",), 400, "The request is not valid HTTP/1.1 ({kind})."),
]


def error_answer(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 response carrying a problem detail, closing the connection."""
    reason = _REASONS.get(status, "Error")
    body = json.dumps({"type": "about:blank" if status >= 500 else PROBLEM_TYPE + "malformed-request",
                       "title": reason, "status": status, "detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n"
            "\r\n")
    return head.encode("latin-1") + body
