"""Shared helpers for the HTTP tests: apps, the independent reference, and response checks.

Expected numbers never come from the service itself: they come from the pandas reference
implementation, from the pickled artifacts, or from the schema's published rules.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

from ad_purchase.serving.app import create_app
from ad_purchase.training import synthetic
from pandas_reference import PandasReference

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "objs"
EXAMPLES_DIR = ROOT / "examples"
TOLERANCE = 1e-9
JSON = "application/json"
PROBLEM = "application/problem+json"


# ---------------------------------------------------------------- inputs and artifacts

def example_bytes(name: str) -> bytes:
    """The user's example payload exactly as shipped ("single" or "batch")."""
    return (EXAMPLES_DIR / f"{name}.json").read_bytes()


def example(name: str) -> Any:
    return json.loads(example_bytes(name))


def customers(rows: int, seed: int):
    """Synthetic records in the client's raw format (no target) with a `customer` id column first."""
    frame = synthetic.generate(rows, seed=seed).drop(columns=["y"])
    frame.insert(0, "customer", [f"c{i:05d}" for i in range(rows)])
    return frame


@functools.lru_cache(maxsize=None)
def metadata() -> dict:
    return json.loads((MODEL_DIR / "metadata.json").read_text())


@functools.lru_cache(maxsize=None)
def features() -> tuple[str, ...]:
    with open(MODEL_DIR / "variables.pickle", "rb") as handle:
        return tuple(pickle.load(handle))


def result_keys() -> list[str]:
    return sorted(["business_outcome", "phat", *features()])


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def _reference() -> PandasReference:
    return PandasReference(MODEL_DIR)


def reference_predict(records: list[dict]) -> list[dict]:
    """What the plain pandas implementation of the published steps gives for `records`."""
    with warnings.catch_warnings():
        # The scaler was fitted on an array; the reference hands it a DataFrame.
        warnings.simplefilter("ignore", UserWarning)
        return _reference().predict(records)


# ---------------------------------------------------------------- apps and requests

@functools.lru_cache(maxsize=None)
def shared_app():
    """One app with the shipped model and default limits, for tests that do not change it."""
    return create_app({"MODEL_DIR": str(MODEL_DIR)})


def make_app(**config):
    return create_app({"MODEL_DIR": str(MODEL_DIR), **config})


def client(**config):
    return (make_app(**config) if config else shared_app()).test_client()


def post(test_client, payload: Any = None, *, body: bytes | None = None, content_type: str | None = JSON):
    """POST /predict with `payload` encoded as JSON, or with the raw `body` bytes."""
    data = body if body is not None else json.dumps(payload).encode()
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return test_client.post("/predict", data=data, headers=headers)


def predict_ok(test_client, payload: Any = None, *, body: bytes | None = None) -> Any:
    response = post(test_client, payload, body=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == JSON
    assert_safe_body(response)
    return response.get_json()


# ---------------------------------------------------------------- checks

def assert_safe_body(response) -> None:
    """No stack trace, no server path, no HTML in a response body."""
    text = response.get_data(as_text=True) if hasattr(response, "get_data") else response
    assert "Traceback" not in text
    assert str(ROOT) not in text
    assert "/work/" not in text
    assert ".py\"" not in text and ".py'" not in text and "File \"" not in text
    lowered = text.lower()
    assert "<html" not in lowered and "<!doctype" not in lowered and "<body" not in lowered


def assert_problem(response, status: int) -> dict:
    """An RFC 9457 problem document with the given status; returns the parsed body."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.mimetype == PROBLEM
    assert_safe_body(response)
    body = json.loads(response.get_data())
    assert isinstance(body, dict)
    for key, kind in (("type", str), ("title", str), ("status", int), ("detail", str)):
        assert isinstance(body.get(key), kind), (key, body)
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def assert_result_shape(result: dict) -> None:
    """27 keys in alphabetical order, typed as the contract says, outcome consistent with phat."""
    assert isinstance(result, dict)
    assert list(result) == result_keys()
    assert len(result) == 27
    outcome, phat = result["business_outcome"], result["phat"]
    assert type(outcome) is int and outcome in (0, 1)
    assert type(phat) is float and 0.0 <= phat <= 1.0
    assert outcome == int(phat >= metadata()["cutoff"])
    for name in features():
        value = result[name]
        assert type(value) is float and math.isfinite(value), (name, value)
        if "_" in name:  # a category indicator
            assert value in (0.0, 1.0), (name, value)


def assert_matches(actual: list[dict], expected: list[dict], tolerance: float = TOLERANCE) -> None:
    """Row by row: same keys in the same order, same outcome, every number within `tolerance`."""
    assert len(actual) == len(expected)
    for row, (got, want) in enumerate(zip(actual, expected)):
        assert list(got) == sorted(want), row
        assert got["business_outcome"] == int(want["business_outcome"]), row
        for key, value in want.items():
            assert math.isclose(got[key], float(value), rel_tol=0, abs_tol=tolerance), (row, key, got[key], value)


@functools.lru_cache(maxsize=None)
def _single_expected() -> tuple:
    return tuple(reference_predict([example("single")]))


def assert_still_serving(test_client) -> None:
    """After whatever came before: ready, and the single example still scores as the reference does."""
    ready = test_client.get("/ready")
    assert ready.status_code == 200, ready.get_data(as_text=True)
    result = predict_ok(test_client, body=example_bytes("single"))
    assert_matches([result], list(_single_expected()))
