"""Security properties of the service: no debug mode, nothing internal in any response, size
limits, security headers, request ids, a non-root container user, and no known-vulnerable
pinned dependency."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ad_purchase.serving.app import create_app

from api_support import MODEL_DIR, ROOT, assert_safe_body, example, example_bytes

pytestmark = pytest.mark.security

JSON = {"Content-Type": "application/json"}
SECRET = "secret-detail /work/main/model_utils.py line 42"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@pytest.fixture(autouse=True)
def error_log(caplog):
    """The service's error log is recorded whatever level another test left it at."""
    caplog.set_level(logging.ERROR, logger="api")


@pytest.fixture
def app(monkeypatch):
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    return create_app({"MODEL_DIR": str(MODEL_DIR)})


@pytest.fixture
def http(app):
    return app.test_client()


# ------------------------------------------------------------------ debug mode and internal errors


def test_no_debug_mode(app):
    assert app.debug is False and app.config["DEBUG"] is False
    assert app.testing is False


def test_the_app_gunicorn_serves_has_no_debug_mode():
    """api.py builds the served app when imported, so it is imported in a process of its own."""
    done = subprocess.run([sys.executable, "-c", "import api; print(api.app.debug, api.app.config['DEBUG'])"],
                          cwd=ROOT, env={**os.environ, "FLASK_DEBUG": "1"}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["False", "False"]


def test_importing_any_module_of_the_package_builds_no_app():
    """Tests import the package freely: no module may build an app (or load a model) as it loads."""
    script = """
import importlib, pkgutil, flask, ad_purchase
made = []
original = flask.Flask.__init__
def counting(self, *args, **kwargs):
    made.append(self)
    original(self, *args, **kwargs)
flask.Flask.__init__ = counting
names = [info.name for info in pkgutil.walk_packages(ad_purchase.__path__, "ad_purchase.")]
for name in names:
    importlib.import_module(name)
print(len(names), len(made))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    modules, apps = map(int, done.stdout.split())
    assert modules >= 20 and apps == 0


def test_debug_mode_cannot_be_switched_on_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    assert create_app({"MODEL_DIR": str(MODEL_DIR)}).debug is False


def _boom(*args, **kwargs):
    raise RuntimeError(SECRET)


def assert_generic_500(response, caplog) -> dict:
    assert response.status_code == 500, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/problem+json"
    text = response.get_data(as_text=True)
    assert_safe_body(response)
    for leak in ("secret-detail", "RuntimeError", "model_utils", "line 42", "Werkzeug", "Debugger", "__debugger__"):
        assert leak not in text, leak
    body = json.loads(text)
    assert body == {"type": "about:blank", "title": "Internal Server Error", "status": 500,
                    "detail": "The request could not be processed.", "request_id": response.headers["X-Request-ID"]}
    # The operator still gets the whole story, in the server's log.
    assert any("secret-detail" in (r.exc_text or "") or (r.exc_info and SECRET in str(r.exc_info[1]))
               for r in caplog.records)
    return body


def test_an_internal_error_in_scoring_is_a_generic_problem(app, http, monkeypatch, caplog):
    monkeypatch.setattr(app.extensions["service"].model, "score", _boom)
    response = http.post("/predict", data=example_bytes("single"), headers=JSON)
    assert_generic_500(response, caplog)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_an_internal_error_in_monitoring_is_a_generic_problem(app, http, monkeypatch, caplog):
    monkeypatch.setattr(app.extensions["service"].drift, "report", _boom)
    assert_generic_500(http.get("/model/drift"), caplog)
    monkeypatch.setattr(app.extensions["service"].metrics, "exposition", _boom)
    assert_generic_500(http.get("/metrics"), caplog)


def test_the_debug_mode_setting_does_not_change_the_error_body(monkeypatch, caplog):
    """Even an app in debug mode answers an internal error with the generic problem, no debugger page."""
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app({"MODEL_DIR": str(MODEL_DIR)})
    monkeypatch.setattr(app.extensions["service"].model, "score", _boom)
    assert_generic_500(app.test_client().post("/predict", data=example_bytes("single"), headers=JSON), caplog)


REQUESTS = {
    "ok": ("POST", "/predict", example_bytes("single"), JSON),
    "batch": ("POST", "/predict?explain=true", example_bytes("batch"), JSON),
    "invalid": ("POST", "/predict", json.dumps({**example("single"), "x0": "abc"}).encode(), JSON),
    "malformed": ("POST", "/predict", b'{"x0": ', JSON),
    "not-utf8": ("POST", "/predict", b'{"x0": "\xff"}', JSON),
    "deep": ("POST", "/predict", b"[" * 50_000, JSON),
    "wrong-type": ("POST", "/predict", b"{}", {"Content-Type": "text/plain"}),
    "not-found": ("GET", "/../../etc/passwd", None, {}),
    "not-allowed": ("DELETE", "/predict", None, {}),
    "health": ("GET", "/health", None, {}),
    "ready": ("GET", "/ready", None, {}),
    "model": ("GET", "/model", None, {}),
    "drift": ("GET", "/model/drift", None, {}),
    "metrics": ("GET", "/metrics", None, {}),
    "spec": ("GET", "/apispec.json", None, {}),
    "docs": ("GET", "/apidocs/", None, {}),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_no_stack_trace_or_server_path_in_responses(http, name):
    method, path, body, headers = REQUESTS[name]
    response = http.open(path, method=method, data=body, headers=headers)
    assert response.status_code < 500
    text = response.get_data(as_text=True)
    if name != "docs":   # the Swagger UI page is HTML by design
        assert_safe_body(response)
    for leak in ("Traceback", str(ROOT), "site-packages", "/usr/lib/python"):
        assert leak not in text


def test_an_unready_service_names_the_file_but_not_the_server_folder(tmp_path):
    model_dir = tmp_path / "mounted-model"
    shutil.copytree(MODEL_DIR, model_dir)
    target = model_dir / "imputer.pkl"
    target.write_bytes(target.read_bytes() + b"tampered")
    response = create_app({"MODEL_DIR": str(model_dir)}).test_client().get("/ready")
    assert response.status_code == 503
    detail = response.get_json()["detail"]
    assert "imputer.pkl" in detail
    assert str(tmp_path) not in detail


# ------------------------------------------------------------------ size limits


def test_a_body_over_the_size_limit_is_413(monkeypatch):
    monkeypatch.delenv("MAX_CONTENT_LENGTH", raising=False)
    http = create_app({"MODEL_DIR": str(MODEL_DIR), "MAX_CONTENT_LENGTH": 4096}).test_client()
    small = example_bytes("single")
    assert len(small) < 4096 and http.post("/predict", data=small, headers=JSON).status_code == 200
    big = json.dumps([example("single")] * 3).encode()
    assert len(big) > 4096
    response = http.post("/predict", data=big, headers=JSON)
    assert response.status_code == 413 and response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 413 and body["request_id"] == response.headers["X-Request-ID"]
    assert_safe_body(response)


def test_a_body_shorter_than_its_content_length_is_400(app):
    body = example_bytes("single")
    # A whole record, but 50 bytes short of the declared length: the client went away.
    response = app.test_client().post("/predict", input_stream=io.BytesIO(body), content_type="application/json",
                                      environ_overrides={"CONTENT_LENGTH": str(len(body) + 50)})
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert_safe_body(response)


def test_the_default_size_limit_is_set(app):
    assert app.config["MAX_CONTENT_LENGTH"] == 64 * 1024 * 1024


def test_a_batch_over_the_row_limit_is_413():
    http = create_app({"MODEL_DIR": str(MODEL_DIR), "MAX_BATCH_ROWS": 5}).test_client()
    response = http.post("/predict", data=json.dumps([example("single")] * 6).encode(), headers=JSON)
    assert response.status_code == 413 and response.get_json()["title"] == "Batch too large"
    assert http.post("/predict", data=json.dumps([example("single")] * 5).encode(), headers=JSON).status_code == 200


def test_a_row_limit_of_one_record_still_starts():
    http = create_app({"MODEL_DIR": str(MODEL_DIR), "MAX_BATCH_ROWS": 1}).test_client()
    assert http.post("/predict", data=example_bytes("single"), headers=JSON).status_code == 200
    assert http.post("/predict", data=example_bytes("batch"), headers=JSON).status_code == 413


# ------------------------------------------------------------------ headers


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_security_headers_on_every_response(http, name):
    method, path, body, headers = REQUESTS[name]
    response = http.open(path, method=method, data=body, headers=headers)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    if name == "docs":
        assert "default-src 'self'" in csp
    else:
        assert "default-src 'none'" in csp
    assert "Set-Cookie" not in response.headers
    assert "Server" not in response.headers or "Werkzeug" not in response.headers["Server"]


def test_security_headers_on_the_swagger_assets(http):
    response = http.get("/apidocs/ui/swagger-ui.css")
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in response.headers


def test_predictions_are_not_cached(http):
    response = http.post("/predict", data=example_bytes("single"), headers=JSON)
    assert response.headers["Cache-Control"] == "no-store"


# ------------------------------------------------------------------ request ids


@pytest.mark.parametrize("sent", ["abc-123", "req.2024-06-11T10:00:00Z", "a" * 128, "0f" * 16])
def test_a_sane_request_id_is_kept(http, sent):
    ok = http.post("/predict", data=example_bytes("single"), headers={**JSON, "X-Request-ID": sent})
    assert ok.headers["X-Request-ID"] == sent
    failed = http.post("/predict", data=b"{", headers={**JSON, "X-Request-ID": sent})
    assert failed.headers["X-Request-ID"] == sent and failed.get_json()["request_id"] == sent


@pytest.mark.parametrize("sent", ["\r\nSet-Cookie: x", "abc\r\nSet-Cookie: session=1", "a" * 129, "b" * 500,
                                  "two words", "<script>", "caf\u00e9", "", "id;drop"])
def test_an_unsafe_request_id_is_replaced(http, sent):
    # Set through the WSGI environment: a test client (like a real server) refuses to send CR/LF.
    response = http.post("/predict", data=b"{", headers=JSON, environ_base={"HTTP_X_REQUEST_ID": sent})
    issued = response.headers["X-Request-ID"]
    assert issued != sent and REQUEST_ID.fullmatch(issued)
    assert re.fullmatch(r"[0-9a-f]{32}", issued)
    assert response.get_json()["request_id"] == issued
    assert "Set-Cookie" not in response.headers
    assert "\n" not in response.headers.get("X-Request-ID", "")


def test_generated_request_ids_are_unique(http):
    ids = {http.get("/health").headers["X-Request-ID"] for _ in range(50)}
    assert len(ids) == 50


# ------------------------------------------------------------------ the container image


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_the_image_runs_as_a_non_root_user():
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    final_stage = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    users = [args for word, args in instructions[final_stage:] if word == "USER"]
    assert users, "the final stage sets no USER, so the service runs as root"
    user = users[-1].split(":")[0].strip()
    assert user not in ("root", "0", ""), user
    if user.isdigit():
        created = " ".join(args for word, args in instructions[final_stage:] if word == "RUN")
        assert re.search(rf"--uid\s+{user}\b", created), "the numeric user is not created in the image"
    # The user is in force when the service starts: nothing after it switches back.
    last_user = max(i for i, (word, _) in enumerate(instructions) if word == "USER")
    assert any(word == "CMD" for word, _ in instructions[last_user:])


def test_the_dockerfile_parser_sees_a_root_user():
    """The check above can fail: a final stage that switches back to root is caught."""
    text = "FROM python:3.11-slim AS build\nUSER 10001\nFROM python:3.11-slim\nUSER root\nCMD [\"x\"]\n"
    instructions = dockerfile_instructions(text)
    final_stage = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    assert [a for w, a in instructions[final_stage:] if w == "USER"] == ["root"]


# ------------------------------------------------------------------ dependencies


def pip_audit_binary() -> str:
    found = ROOT / ".venv" / "bin" / "pip-audit"
    if not found.exists():
        if os.environ.get("CI"):
            pytest.fail("pip-audit is not installed: pip install -r requirements-dev.txt")
        pytest.skip("pip-audit is not installed: pip install -r requirements-dev.txt")
    return str(found)


def run_audit(tool: str, requirements: Path, *extra: str, timeout: int = 480) -> dict:
    command = [tool, "-r", str(requirements), "--format", "json", "--progress-spinner", "off", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    print("$", shlex.join(command), f"-> exit {done.returncode}\n", done.stderr[-2000:])
    try:
        return json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"pip-audit gave no report (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def not_audited(report: dict) -> list[str]:
    return [f"{d['name']}: {d['skip_reason']}" for d in report["dependencies"] if "skip_reason" in d]


def vulnerabilities(report: dict) -> list[str]:
    """One line per vulnerable package of a pip-audit JSON report."""
    lines = []
    for dep in report["dependencies"]:
        if dep.get("vulns"):
            found = [v["id"] + (f" (fixed in {', '.join(v['fix_versions'])})" if v.get("fix_versions") else "")
                     for v in dep["vulns"]]
            lines.append(f"{dep['name']} {dep['version']}: {', '.join(found)}")
    return lines


def test_the_audit_report_reader_finds_vulnerabilities_and_skips():
    report = {"dependencies": [
        {"name": "flask", "version": "3.1.3", "vulns": []},
        {"name": "oldlib", "version": "1.0", "vulns": [{"id": "PYSEC-0000-1", "fix_versions": ["1.1"]}]},
        {"name": "gone", "skip_reason": "Dependency not found on PyPI"}]}
    assert vulnerabilities(report) == ["oldlib 1.0: PYSEC-0000-1 (fixed in 1.1)"]
    assert not_audited(report) == ["gone: Dependency not found on PyPI"]


def unavailable(why: str) -> None:
    """The audit needs PyPI's vulnerability data; where the network withholds it (as on machines
    that reach PyPI only through a package proxy), say so plainly instead of passing silently."""
    message = f"the vulnerability database (PyPI's JSON API) cannot be reached, so nothing was audited: {why}"
    print(message)
    pytest.skip(message)


def test_pinned_requirements_have_no_known_vulnerabilities(tmp_path):
    tool = pip_audit_binary()
    # A one-package probe first: when the database is out of reach, pip-audit reports every package
    # as skipped (and exits 0), and resolving the whole file would only take a minute to say so.
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    probe = tmp_path / "probe.txt"
    probe.write_text(next(p for p in pins if p) + "\n")
    skipped = not_audited(run_audit(tool, probe, "--no-deps", "--disable-pip", timeout=120))
    if skipped:
        unavailable(skipped[0])
    report = run_audit(tool, ROOT / "requirements.txt")
    skipped = not_audited(report)
    if skipped:
        unavailable("; ".join(skipped[:5]))
    vulnerable = vulnerabilities(report)
    print(f"audited {len(report['dependencies'])} packages; vulnerable: {vulnerable or 'none'}")
    assert len(report["dependencies"]) >= len([p for p in pins if p])
    assert not vulnerable, "\n".join(vulnerable)
