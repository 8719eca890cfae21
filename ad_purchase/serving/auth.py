"""Who may call: bearer tokens with scopes, off until AUTH_TOKENS_FILE names a token file.

The file has one token per line, `NAME SCOPES SHA256HEX`: the caller's name (what the logs
show), its scopes separated by commas (from SCOPES) and the SHA-256 of the token in hex.  `#`
starts a comment line; blank lines are ignored.  The file never holds a token itself, so reading
it gives nobody access.  `python -m ad_purchase.cli.token NAME --scopes score` mints one.

Every route declares what it needs, with @requires("scope") or @open_route on the view, or in
the mapping handed to install() for views the app does not define itself (Flasgger's).  An app
with a route that declares nothing does not start.

A token is read from `Authorization: Bearer <token>` only.  Its SHA-256 is looked up in the table
and compared with hmac.compare_digest, so neither the comparison nor the file reveal a token.
Answers follow RFC 6750: 401 with `WWW-Authenticate: Bearer realm=...` when a protected route
gets no usable token (with `error="invalid_token"` for a token nobody holds, and
`error="invalid_request"` for a token sent in the URL, which is never used), and 403 with
`error="insufficient_scope"` naming the scope for a known caller without it.  Both bodies are
problem details.  After the check, `flask.g.caller` holds the caller's name (None with access
control off, or on an open route called without a token).

The table is read when the app is built.  gunicorn builds it once in the master (preload), so
its workers inherit the table; on SIGHUP gunicorn.conf.py's on_reload hook calls
reload_token_files() in the master before the new workers are forked.  A file that fails to
parse then keeps the previous table (and says so), since the service is already serving.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable

from flask import Flask, Response, g, request

from .problems import problem

log = logging.getLogger("api")

SCOPES = ("score", "outcomes", "ops")
REALM = "ad-purchase-api"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
OPEN = ""                      # the declaration of a route anyone may call
HIDDEN = "-"                   # the declaration of a route that serves nothing (404 for all)
_SCOPE_ATTRIBUTE = "required_scope"
# Query parameters a client might put a token in (RFC 6750 section 2.3 names the first).
TOKEN_PARAMETERS = ("access_token", "token")


# ------------------------------------------------------------------ declarations


def requires(scope: str) -> Callable:
    """Declare that a view needs a caller with `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")

    def declare(view: Callable) -> Callable:
        setattr(view, _SCOPE_ATTRIBUTE, scope)
        return view
    return declare


def open_route(view: Callable) -> Callable:
    """Declare that anyone may call a view."""
    setattr(view, _SCOPE_ATTRIBUTE, OPEN)
    return view


class UndeclaredRoute(RuntimeError):
    """A route without @requires or @open_route: the app must not start with it."""


def route_scopes(app: Flask, declared: dict[str, str] | None = None) -> dict[str, str]:
    """Each endpoint's declaration: a scope, OPEN or HIDDEN.  Raises UndeclaredRoute naming every
    route that has none."""
    declared = declared or {}
    scopes, missing = {}, []
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        scope = declared.get(rule.endpoint, getattr(view, _SCOPE_ATTRIBUTE, None))
        if scope is None:
            missing.append(f"{rule.rule} ({rule.endpoint})")
        elif scope not in (OPEN, HIDDEN, *SCOPES):
            raise UndeclaredRoute(f"route {rule.rule} ({rule.endpoint}) declares an unknown scope {scope!r}")
        else:
            scopes[rule.endpoint] = scope
    if missing:
        raise UndeclaredRoute("routes without an access declaration (@requires(scope) or @open_route): "
                              + ", ".join(missing))
    return scopes


def path_scopes(app: Flask, scopes: dict[str, str]) -> dict[str, str]:
    """Each API path's declaration (for the OpenAPI document)."""
    return {rule.rule: scopes[rule.endpoint] for rule in app.url_map.iter_rules() if rule.endpoint in scopes}


# ------------------------------------------------------------------ the token file


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]
    digest: bytes = b""            # the SHA-256 of the caller's token


class TokenFileError(ValueError):
    """The token file cannot be used; the message names the file and the line."""


def parse_tokens(text: str, path: str) -> dict[bytes, Caller]:
    """The table of a token file's text: SHA-256 digest (32 bytes) -> caller."""
    table: dict[bytes, Caller] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"AUTH_TOKENS_FILE {path} line {number}"
        parts = stripped.split()
        if len(parts) != 3:
            raise TokenFileError(f"{where}: expected NAME SCOPES SHA256HEX separated by spaces, "
                                 f"found {len(parts)} field(s)")
        name, scope_list, digest_hex = parts
        if not NAME.fullmatch(name):
            raise TokenFileError(f"{where}: name {name[:80]!r} is not 1-64 letters, digits, '.', '_' or '-'")
        scopes = scope_list.split(",")
        unknown = [scope for scope in scopes if scope not in SCOPES]
        if unknown:
            raise TokenFileError(f"{where}: unknown scope {unknown[0][:80]!r}; scopes are {', '.join(SCOPES)} "
                                 "separated by commas")
        if not HEX_DIGEST.fullmatch(digest_hex):
            raise TokenFileError(f"{where}: {digest_hex[:80]!r} is not a SHA-256 in hex (64 characters 0-9a-f); "
                                 "the file holds the token's SHA-256, never the token")
        digest = bytes.fromhex(digest_hex)
        if digest in table:
            raise TokenFileError(f"{where}: the same token as {table[digest].name!r} on an earlier line")
        table[digest] = Caller(name, frozenset(scopes), digest)
    return table


def read_tokens(path: str) -> dict[bytes, Caller]:
    try:
        with open(path, encoding="utf-8") as handle:
            if os.fstat(handle.fileno()).st_mode & stat.S_IWOTH:
                raise TokenFileError(f"AUTH_TOKENS_FILE {path} is writable by every user, who could add a token "
                                     "of their own: chmod o-w it")
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TokenFileError(f"AUTH_TOKENS_FILE {path} cannot be read: {reason}") from None
    return parse_tokens(text, path)


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


_tables: "weakref.WeakSet[Tokens]" = weakref.WeakSet()


class Tokens:
    """The token table of one app, from its file, and read again on reload()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.table = read_tokens(path)
        _tables.add(self)

    def identify(self, token: str) -> Caller | None:
        """The caller holding `token`, or None."""
        digest = digest_of(token)
        caller = self.table.get(digest)
        # The lookup hashes the digest, never the token; the match is confirmed in constant time.
        if caller is None or not hmac.compare_digest(caller.digest, digest):
            return None
        return caller

    def reload(self) -> bool:
        """Read the file again; a file that cannot be used leaves the table as it was."""
        try:
            table = read_tokens(self.path)
        except TokenFileError as exc:
            log.error("token file not reloaded, the previous tokens stay in force: %s", exc)
            return False
        self.table = table
        log.info("token file reloaded: %s", describe(table, self.path))
        return True


def reload_token_files() -> int:
    """Reload every token table of this process (gunicorn's master on SIGHUP); how many took."""
    return sum(tokens.reload() for tokens in list(_tables))


def describe(table: dict[bytes, Caller], path: str) -> str:
    names = sorted({caller.name for caller in table.values()})
    return f"{len(table)} token(s) from {path} ({', '.join(names) or 'none: every protected route refuses'})"


def load(path: str) -> Tokens | None:
    """The app's token table from AUTH_TOKENS_FILE, or None (access control off, said in the
    log).  A file that cannot be used stops the service with one line naming file and line."""
    if not path:
        log.warning("access control is off: AUTH_TOKENS_FILE is not set, so every route is open to anyone "
                    "who reaches the port")
        return None
    try:
        tokens = Tokens(path)
    except TokenFileError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    log.info("access control is on: %s", describe(tokens.table, path))
    return tokens


# ------------------------------------------------------------------ the check on each request


def _refuse(status: int, detail: str, error: str | None = None, scope: str | None = None) -> Response:
    challenge = f'Bearer realm="{REALM}"'
    if error:
        challenge += f', error="{error}"'
    if scope:
        challenge += f', scope="{scope}"'
    if status == 401:
        response = problem(401, "Unauthorized", detail, "unauthorized")
    else:
        response = problem(403, "Forbidden", detail, "insufficient-scope", required_scope=scope)
    response.headers["WWW-Authenticate"] = challenge
    return response


def _bearer_token(environ: dict) -> str | None:
    """The token of an `Authorization: Bearer` header, or None for no header or another scheme."""
    header = environ.get("HTTP_AUTHORIZATION")      # the header, without building request.headers
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def has_scope(scope: str) -> bool:
    """Whether this request's caller holds `scope` (always, with access control off)."""
    scopes = g.get("scopes", ())
    return scopes is None or scope in scopes


def install(app: Flask, tokens: Tokens | None, declared: dict[str, str] | None = None) -> dict[str, str]:
    """Check that every route declares its access and enforce the declarations before each
    request; returns the declarations by endpoint."""
    scopes = route_scopes(app, declared)

    @app.before_request
    def authorize() -> Response | None:
        # Runs on every request: the request and g objects are looked up once, not per attribute.
        req, state = request._get_current_object(), g._get_current_object()
        rule = req.url_rule
        scope = OPEN if rule is None else scopes.get(rule.endpoint, OPEN)   # unmatched: the 404 or 405 says so
        state.caller, state.scopes = None, (None if tokens is None else frozenset())
        if scope == HIDDEN:
            return problem(404, "Not Found", "The requested URL was not found on the server.")
        if tokens is None:
            return None
        token = _bearer_token(req.environ)
        if scope == OPEN:
            caller = tokens.identify(token) if token else None
            if caller is not None:                     # named in the log, nothing more
                state.caller, state.scopes = caller.name, caller.scopes
            return None
        if req.environ.get("QUERY_STRING") and any(name in req.args for name in TOKEN_PARAMETERS):
            return _refuse(401, "A token in the URL is never used (URLs end up in logs and histories): send it "
                           "in an Authorization: Bearer header, and replace the token, since it has been exposed.",
                           "invalid_request")
        if token is None:
            return _refuse(401, f"This route needs a bearer token with the {scope!r} scope in an "
                           "Authorization: Bearer header.")
        caller = tokens.identify(token)
        if caller is None:
            return _refuse(401, "The bearer token is not one this service knows.", "invalid_token")
        state.caller, state.scopes = caller.name, caller.scopes
        if scope not in caller.scopes:
            return _refuse(403, f"The token of {caller.name!r} does not have the {scope!r} scope this route "
                           "needs.", "insufficient_scope", scope)
        return None

    return scopes


def open_endpoints(names: Iterable[str]) -> dict[str, str]:
    return {name: OPEN for name in names}
