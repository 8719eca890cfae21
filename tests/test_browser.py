"""The Swagger UI in a real browser: a person opens /apidocs, is refused POST /predict without a
token, enters one with the Authorize button, tries POST /predict with the bundled examples and
sees the scores.

The service runs under gunicorn exactly as deployed (its config file, one worker), bound to a
free loopback port; Chromium is driven by Playwright.  A screenshot of the executed request is
saved to test-artifacts/swagger_predict.png.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import pytest

import gunicorn_support

from pandas_reference import PandasReference

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "swagger_predict.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_TIMEOUT = 60_000     # milliseconds for the page to render or answer
TOKEN = "tok-browser-scorer-5d9e"

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium')", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the 'playwright' package is not installed "
                                                             "(pip install -r requirements-dev.txt)")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The service under gunicorn on a free loopback port, started as in production, with a
    token file holding one caller with the score scope."""
    folder = tmp_path_factory.mktemp("gunicorn")
    tokens = folder / "tokens.txt"
    tokens.write_text(f"browser score {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    with gunicorn_support.running(folder, workers=1, AUTH_TOKENS_FILE=tokens) as server:
        yield server.base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def expected():
    """The examples scored by the plain pandas implementation, not by the service."""
    reference = PandasReference(ROOT / "objs")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # the scaler was fitted on an array
        for name in ("single", "batch"):
            payload = json.loads((ROOT / "examples" / f"{name}.json").read_text())
            out[name] = reference.predict([payload] if isinstance(payload, dict) else payload)
    return out


def assert_close(results: list[dict], expected: list[dict]) -> None:
    assert len(results) == len(expected)
    for got, want in zip(results, expected):
        assert got["business_outcome"] == want["business_outcome"]
        for key in ("phat", *[k for k in want if k not in ("phat", "business_outcome")]):
            assert math.isclose(got[key], want[key], rel_tol=0, abs_tol=1e-9), (key, got[key], want[key])


def execute_example(operation, example: str, expected_status: str = "200") -> tuple[str, str]:
    """Choose a request-body example, press Execute; the status and body the page then shows."""
    operation.locator(".opblock-section-request-body select.examples-select-element").select_option(example)
    body_editor = operation.locator(".opblock-section-request-body textarea.body-param__text")
    sync_api.expect(body_editor).to_contain_text('"x0"', timeout=UI_TIMEOUT)
    responses = operation.locator(".live-responses-table")
    # Clear a previous answer first so the wait below sees the new one.
    clear = operation.locator("button.btn-clear")
    if clear.count():
        clear.first.click()
        sync_api.expect(responses).to_have_count(0, timeout=UI_TIMEOUT)
    operation.locator("button.execute").click()
    status = responses.locator("tbody .response-col_status").first
    sync_api.expect(status).to_have_text(expected_status, timeout=UI_TIMEOUT)
    body = responses.locator(".response-col_description pre").first
    sync_api.expect(body).to_contain_text("phat" if expected_status == "200" else "status", timeout=UI_TIMEOUT)
    return status.inner_text().strip(), body.inner_text()


def authorize(page, token: str) -> None:
    """Swagger UI's Authorize button: enter the bearer token, authorize, close the dialog."""
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    sync_api.expect(dialog).to_be_visible(timeout=UI_TIMEOUT)
    dialog.locator("input").first.fill(token)
    dialog.locator(".auth-btn-wrapper button.authorize").click()
    sync_api.expect(dialog.locator(".auth-btn-wrapper button.authorize")).to_have_count(0, timeout=UI_TIMEOUT)
    dialog.locator(".auth-btn-wrapper button.btn-done").click()
    sync_api.expect(dialog).to_have_count(0, timeout=UI_TIMEOUT)


def test_swagger_ui_executes_the_predict_examples(service, browser, expected):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(service + "/apidocs/", wait_until="domcontentloaded")
        summary = page.locator(".opblock-post .opblock-summary").filter(has_text="/predict")
        sync_api.expect(summary).to_have_count(1, timeout=UI_TIMEOUT)
        summary.click()
        operation = page.locator(".opblock-post").filter(has=page.locator('[data-path="/predict"]'))
        operation.get_by_role("button", name="Try it out").click()
        sync_api.expect(operation.locator("button.execute")).to_be_visible(timeout=UI_TIMEOUT)

        status, body = execute_example(operation, "single", "401")     # no token yet
        assert json.loads(body)["title"] == "Unauthorized"
        authorize(page, TOKEN)

        status, body = execute_example(operation, "batch")
        assert status == "200"
        results = json.loads(body)
        assert isinstance(results, list)
        assert_close(results, expected["batch"])

        status, body = execute_example(operation, "single")
        assert status == "200"
        result = json.loads(body)
        assert isinstance(result, dict) and list(result)[:2] == ["business_outcome", "phat"]
        assert_close([result], expected["single"])

        ARTIFACTS.mkdir(exist_ok=True)
        page.locator(".live-responses-table").scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOT))
        assert SCREENSHOT.stat().st_size > 10_000
    finally:
        page.close()
