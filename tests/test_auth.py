"""Access control in process: the token file, every route against every kind of caller, the
answers RFC 6750 asks for, the caller in the access log, and routes that must declare access.

The live-server side (SIGHUP reload under load, a bad file stopping gunicorn) is in
test_auth_live.py."""
from __future__ import annotations

import base64
import hashlib
import json
import logging

import pytest
from flask import Flask

from ad_purchase.cli import token as token_cli
from ad_purchase.serving import app as app_module
from ad_purchase.serving import auth
from ad_purchase.serving.app import create_app

from api_support import MODEL_DIR, assert_problem, example_bytes

JSON = {"Content-Type": "application/json"}
TOKENS = {"scorer": ("score", "tok-scorer-1c7a0e"), "operator": ("ops", "tok-operator-55d2b1"),
          "outcomes-feed": ("outcomes", "tok-outcomes-9e41f0"), "admin": ("score,outcomes,ops", "tok-admin-03bb6a")}
UNKNOWN = "tok-nobody-has-this-one"
REALM = 'Bearer realm="ad-purchase-api"'


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_tokens(path, tokens=TOKENS) -> str:
    lines = ["# callers of the API", ""]
    lines += [f"{name} {scopes} {sha(token)}" for name, (scopes, token) in tokens.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    return write_tokens(tmp_path_factory.mktemp("auth") / "tokens.txt")


@pytest.fixture(scope="module")
def secured(token_file):
    return create_app({"MODEL_DIR": str(MODEL_DIR), "AUTH_TOKENS_FILE": token_file})


@pytest.fixture(scope="module")
def http(secured):
    return secured.test_client()


# Every route of the app: (method, path, body, the scope it needs or "" for open).
ROUTES = {
    "predict": ("POST", "/predict", example_bytes("single"), "score"),
    "model": ("GET", "/model", None, "ops"),
    "drift": ("GET", "/model/drift", None, "ops"),
    "metrics": ("GET", "/metrics", None, "ops"),
    "health": ("GET", "/health", None, ""),
    "ready": ("GET", "/ready", None, ""),
    "apidocs": ("GET", "/apidocs/", None, ""),
    "apispec": ("GET", "/apispec.json", None, ""),
    "swagger-asset": ("GET", "/apidocs/ui/swagger-ui.css", None, ""),
}
# A caller holding the scope, and one that does not.
HOLDER = {"score": "scorer", "ops": "operator"}
LACKING = {"score": "operator", "ops": "outcomes-feed"}
CASES = ("no token", "unknown token", "basic scheme", "token in query string", "token without scope", "right token")


def send(http, route: str, case: str):
    method, path, body, scope = ROUTES[route]
    holder = TOKENS[HOLDER.get(scope, "admin")][1]
    headers = dict(JSON) if body is not None else {}
    if case == "unknown token":
        headers["Authorization"] = f"Bearer {UNKNOWN}"
    elif case == "basic scheme":
        headers["Authorization"] = "Basic " + base64.b64encode(f"x:{holder}".encode()).decode()
    elif case == "token in query string":
        path += f"?access_token={holder}"
    elif case == "token without scope":
        headers["Authorization"] = f"Bearer {TOKENS[LACKING.get(scope, 'outcomes-feed')][1]}"
    elif case == "right token":
        headers["Authorization"] = f"Bearer {holder}"
    return http.open(path, method=method, data=body, headers=headers)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_route_against_every_caller(http, route, case):
    scope = ROUTES[route][3]
    response = send(http, route, case)
    if not scope or case == "right token":
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        return
    if case == "token without scope":
        body = assert_problem(response, 403)
        assert scope in body["detail"] and body["required_scope"] == scope
        assert response.headers["WWW-Authenticate"] == f'{REALM}, error="insufficient_scope", scope="{scope}"'
        return
    body = assert_problem(response, 401)
    challenge = response.headers["WWW-Authenticate"]
    expected = {"no token": REALM, "basic scheme": REALM, "unknown token": f'{REALM}, error="invalid_token"',
                "token in query string": f'{REALM}, error="invalid_request"'}[case]
    assert challenge == expected
    assert body["request_id"] == response.headers["X-Request-ID"]
    text = response.get_data(as_text=True)
    assert all(secret not in text for _, secret in TOKENS.values()) and UNKNOWN not in text


def test_a_token_in_the_query_string_is_refused_even_beside_a_good_header(http):
    scorer = TOKENS["scorer"][1]
    response = http.post(f"/predict?token={scorer}", data=example_bytes("single"),
                         headers={**JSON, "Authorization": f"Bearer {scorer}"})
    assert assert_problem(response, 401)["detail"].startswith("A token in the URL is never used")


@pytest.mark.parametrize("header", ["bearer {t}", "BEARER  {t} ", "Bearer {t}"])
def test_the_scheme_name_is_case_insensitive(http, header):
    response = http.get("/model", headers={"Authorization": header.format(t=TOKENS["operator"][1])})
    assert response.status_code == 200


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Token {t}", "{t}", "Bearer {t}x", "Bearer x{t}"])
def test_malformed_or_altered_credentials_are_401(http, header):
    response = http.get("/model", headers={"Authorization": header.format(t=TOKENS["operator"][1])})
    assert_problem(response, 401)


def test_the_admin_token_reaches_every_scope(http):
    headers = {"Authorization": f"Bearer {TOKENS['admin'][1]}"}
    assert http.post("/predict", data=example_bytes("single"), headers={**JSON, **headers}).status_code == 200
    assert http.get("/metrics", headers=headers).status_code == 200


def test_the_access_log_names_the_caller_never_the_token(http, caplog):
    caplog.set_level(logging.INFO, logger="api.access")
    http.post("/predict", data=example_bytes("single"), headers={**JSON, "Authorization": f"Bearer {TOKENS['scorer'][1]}"})
    http.get("/model", headers={"Authorization": f"Bearer {TOKENS['scorer'][1]}"})
    http.get("/model", headers={"Authorization": f"Bearer {UNKNOWN}"})
    http.get("/health")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "api.access"][-4:]
    assert [(line["route"], line["status"], line["caller"]) for line in lines] == [
        ("/predict", 200, "scorer"), ("/model", 403, "scorer"), ("/model", 401, None), ("/health", 200, None)]
    logged = caplog.text
    assert TOKENS["scorer"][1] not in logged and UNKNOWN not in logged and sha(TOKENS["scorer"][1]) not in logged


def test_with_access_control_off_every_route_is_open_and_no_caller_is_named(caplog):
    caplog.set_level(logging.INFO)
    open_app = create_app({"MODEL_DIR": str(MODEL_DIR)})
    assert "access control is off" in caplog.text
    http = open_app.test_client()
    for route in ROUTES:
        method, path, body, _ = ROUTES[route]
        assert http.open(path, method=method, data=body, headers=JSON if body else {}).status_code == 200, route
    facts = http.get("/model").get_json()
    assert "library_versions" in facts
    line = json.loads([r for r in caplog.records if r.name == "api.access"][-1].getMessage())
    assert line["caller"] is None


def test_model_facts_with_access_control_on(http):
    facts = http.get("/model", headers={"Authorization": f"Bearer {TOKENS['operator'][1]}"}).get_json()
    assert facts["library_versions"]
    # Without ops the caller gets the 403 and nothing of the facts.
    refused = http.get("/model", headers={"Authorization": f"Bearer {TOKENS['scorer'][1]}"})
    assert "library_versions" not in refused.get_data(as_text=True)


def test_library_versions_follow_the_callers_scopes(secured):
    """The /model view itself drops the library versions for a caller without ops (its route
    needs ops today; the view does not rely on that)."""
    view = secured.view_functions["routes.model_facts"]
    with secured.test_request_context("/model"):
        from flask import g
        g.scopes = frozenset({"score"})
        assert "library_versions" not in view().get_json()
        g.scopes = frozenset({"ops"})
        assert "library_versions" in view().get_json()


# ------------------------------------------------------------------ the OpenAPI document


def test_the_document_declares_the_bearer_scheme_and_each_operations_scope(http):
    spec = http.get("/apispec.json").get_json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {**spec["components"]["securitySchemes"]["bearerAuth"],
                                                                   "type": "http", "scheme": "bearer"}
    for path, (scope) in (("/predict", "score"), ("/model", "ops"), ("/model/drift", "ops"), ("/metrics", "ops")):
        operation = next(iter(spec["paths"][path].values()))
        assert operation["security"] == [{"bearerAuth": []}] and operation["x-required-scope"] == scope
        assert {"401", "403"} <= set(operation["responses"])
    for path in ("/health", "/ready"):
        assert spec["paths"][path]["get"]["security"] == []


def test_the_document_of_an_open_service_declares_no_security():
    spec = create_app({"MODEL_DIR": str(MODEL_DIR)}).test_client().get("/apispec.json").get_json()
    assert "securitySchemes" not in spec["components"]
    assert all("security" not in op for ops in spec["paths"].values() for op in ops.values())


# ------------------------------------------------------------------ declarations


def test_an_app_with_a_route_that_declares_no_access_does_not_start(monkeypatch):
    original = app_module._add_error_handlers

    def with_an_undeclared_route(app):
        original(app)
        app.add_url_rule("/outcomes", "outcomes", lambda: "recorded", methods=["POST"])

    monkeypatch.setattr(app_module, "_add_error_handlers", with_an_undeclared_route)
    with pytest.raises(auth.UndeclaredRoute, match=r"/outcomes \(outcomes\)"):
        create_app({"MODEL_DIR": str(MODEL_DIR)})


def test_declared_routes_pass_and_an_unknown_scope_is_refused():
    app = Flask("declared", static_folder=None)
    app.add_url_rule("/a", "a", auth.requires("outcomes")(lambda: "a"))
    app.add_url_rule("/b", "b", auth.open_route(lambda: "b"))
    assert auth.route_scopes(app) == {"a": "outcomes", "b": ""}
    with pytest.raises(ValueError, match="unknown scope"):
        auth.requires("admin")


# ------------------------------------------------------------------ the token file


@pytest.mark.parametrize("line, complaint", [
    ("alice score", "expected NAME SCOPES SHA256HEX"),
    ("alice score abc extra", "expected NAME SCOPES SHA256HEX"),
    (f"alice admin {sha('x')}", "unknown scope 'admin'"),
    (f"alice score, {sha('x')}", "unknown scope ''"),
    ("alice score tok-in-clear", "is not a SHA-256 in hex"),
    (f"al/ice score {sha('x')}", "is not 1-64 letters"),
])
def test_a_malformed_token_file_stops_the_app_naming_file_and_line(tmp_path, line, complaint):
    path = tmp_path / "tokens.txt"
    path.write_text(f"# ok\nbob ops {sha('bob')}\n\n{line}\n")
    with pytest.raises(SystemExit) as stopped:
        create_app({"MODEL_DIR": str(MODEL_DIR), "AUTH_TOKENS_FILE": str(path)})
    message = str(stopped.value)
    assert message.startswith(f"configuration error: AUTH_TOKENS_FILE {path} line 4: ") and complaint in message
    assert "\n" not in message


def test_the_same_token_twice_is_refused(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text(f"a score {sha('same')}\nb ops {sha('same').upper()}\n")
    with pytest.raises(SystemExit, match="line 2: the same token as 'a'"):
        create_app({"MODEL_DIR": str(MODEL_DIR), "AUTH_TOKENS_FILE": str(path)})


def test_a_missing_token_file_stops_the_app_naming_the_variable(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(SystemExit, match=r"AUTH_TOKENS_FILE='.*nope.txt' is not allowed; expected a readable token"):
        create_app({"MODEL_DIR": str(MODEL_DIR), "AUTH_TOKENS_FILE": str(missing)})


def test_a_token_file_anyone_may_write_is_refused(tmp_path):
    path = tmp_path / "tokens.txt"
    write_tokens(path)
    path.chmod(0o666)
    with pytest.raises(SystemExit, match="is writable by every user"):
        create_app({"MODEL_DIR": str(MODEL_DIR), "AUTH_TOKENS_FILE": str(path)})
    path.chmod(0o640)
    assert create_app({"MODEL_DIR": str(MODEL_DIR), "AUTH_TOKENS_FILE": str(path)}) is not None


def test_a_file_without_tokens_refuses_every_protected_route(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("# nobody yet\n")
    http = create_app({"MODEL_DIR": str(MODEL_DIR), "AUTH_TOKENS_FILE": str(path)}).test_client()
    assert http.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 401
    assert http.get("/health").status_code == 200


def test_reload_takes_a_new_file_and_keeps_the_old_table_on_a_bad_one(tmp_path, caplog):
    path = tmp_path / "tokens.txt"
    write_tokens(path, {"first": ("ops", "tok-first")})
    http = create_app({"MODEL_DIR": str(MODEL_DIR), "AUTH_TOKENS_FILE": str(path)}).test_client()
    assert http.get("/metrics", headers={"Authorization": "Bearer tok-first"}).status_code == 200
    write_tokens(path, {"second": ("ops", "tok-second")})
    assert auth.reload_token_files() >= 1
    assert http.get("/metrics", headers={"Authorization": "Bearer tok-first"}).status_code == 401
    assert http.get("/metrics", headers={"Authorization": "Bearer tok-second"}).status_code == 200
    path.write_text("second ops not-a-digest\n")
    caplog.set_level(logging.ERROR, logger="api")
    auth.reload_token_files()
    assert "token file not reloaded" in caplog.text and "line 1" in caplog.text
    assert http.get("/metrics", headers={"Authorization": "Bearer tok-second"}).status_code == 200


# ------------------------------------------------------------------ minting


def test_the_mint_command_prints_a_token_once_and_its_line(tmp_path, capsys):
    target = tmp_path / "tokens.txt"
    assert token_cli.main(["feed", "--scopes", "ops,score", "--append", str(target)]) == 0
    token, line = capsys.readouterr().out.splitlines()
    assert token.startswith("adp_") and len(token) > 40
    assert line == f"feed score,ops {sha(token)}" and token not in target.read_text()
    assert target.read_text() == line + "\n" and (target.stat().st_mode & 0o777) == 0o600
    http = create_app({"MODEL_DIR": str(MODEL_DIR), "AUTH_TOKENS_FILE": str(target)}).test_client()
    assert http.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    token_cli.main(["feed2", "--scopes", "score", "--append", str(target)])
    assert len(target.read_text().splitlines()) == 2


def test_two_minted_tokens_differ():
    assert token_cli.mint() != token_cli.mint()


@pytest.mark.parametrize("argv", [["x", "--scopes", "admin"], ["bad name", "--scopes", "ops"], ["x", "--scopes", ","]])
def test_the_mint_command_refuses_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        token_cli.main(argv)
    assert stopped.value.code == 2


def test_the_ad_purchase_command_mints_tokens_too(capsys):
    from ad_purchase.cli import main as entry
    assert entry.main(["token", "feed", "--scopes", "score"]) == 0
    token, line = capsys.readouterr().out.splitlines()
    assert line == f"feed score {sha(token)}"
