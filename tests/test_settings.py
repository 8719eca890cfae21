"""Every setting is read once, typed and checked at start: a value that does not fit stops the
service with one line naming the variable, the value and what is allowed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ad_purchase import machine_cores
from ad_purchase.serving.settings import Settings

from api_support import ROOT


def refusal(**environ) -> str:
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({key: str(value) for key, value in environ.items()})
    message = str(stopped.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name, value, allowed", [
    ("MAX_BATCH_ROWS", "ten", "a whole number"),
    ("MAX_BATCH_ROWS", "0", "at least 1"),
    ("BODY_TIMEOUT", "-1", "at least 1"),
    ("PORT", "70000", "0 (any free port) to 65535"),
    ("WEB_CONCURRENCY", "-2", "at least 0"),
    ("LOG_LEVEL", "LOUD", "DEBUG, INFO"),
    ("ID_FIELD", "x12", "other than the fields"),
    ("MAX_REQUESTS", "1.5", "a whole number"),
    ("AUTH_TOKENS_FILE", "/no/such/tokens.txt", "a readable token file"),
    ("CERT_FILE", "/no/such/cert.pem", "a readable PEM certificate"),
    ("KEY_FILE", "/no/such/key.pem", "a readable PEM private key"),
    ("CERT_FILE", str(ROOT / "README.md"), "set together with KEY_FILE"),     # a readable file, but alone
])
def test_a_value_that_does_not_fit_stops_with_one_line_naming_it(name, value, allowed):
    message = refusal(**{name: value})
    assert message.startswith(f"configuration error: {name}={value!r}"), message
    assert allowed in message, message


def test_values_are_typed_and_the_worker_count_defaults_from_the_machine():
    settings = Settings.from_env({"MAX_BATCH_ROWS": "25", "LOG_LEVEL": "debug", "WEB_CONCURRENCY": "",
                                  "ID_FIELD": "crm_id"})
    assert settings.MAX_BATCH_ROWS == 25 and settings.ID_FIELD == "crm_id"
    assert settings.log_level == 10
    assert settings.workers == machine_cores() >= 1
    assert Settings.from_env({"WEB_CONCURRENCY": "3"}).workers == 3
    assert Settings.from_env({}, {"MAX_BATCH_ROWS": 7}).MAX_BATCH_ROWS == 7      # overrides win


def test_gunicorn_reads_the_same_settings_and_stops_on_a_bad_one():
    check = ("import runpy; c = runpy.run_path('gunicorn.conf.py'); "
             "print(c['workers'], c['bind'], c['max_requests'])")
    env = {"PATH": "/usr/bin:/bin", "WEB_CONCURRENCY": "3", "PORT": "2020", "MAX_REQUESTS": "7"}
    shown = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, text=True)
    assert shown.stdout.split() == ["3", "0.0.0.0:2020", "7"], shown.stderr
    bad = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env={**env, "KEEPALIVE": "soon"},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "configuration error: KEEPALIVE='soon'" in bad.stderr
