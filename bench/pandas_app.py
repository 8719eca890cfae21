"""The yardstick server: the pandas reference behind a minimal Flask app.

It is served the same way as the service (gunicorn, gunicorn.conf.py, the same worker
settings) so that HTTP comparisons differ only in what happens inside POST /predict:

    .venv/bin/gunicorn -c gunicorn.conf.py --pythonpath bench pandas_app:app

POST /predict takes one record (an object) or an array of records, like the service, and
answers with the same shape.  JSON is read and written with orjson, the fastest option, so
the comparison credits the service only for its own work.  No validation: it is a yardstick.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:      # the pandas yardstick lives with the tests
    sys.path.insert(0, str(ROOT / "tests"))

import orjson  # noqa: E402
from flask import Flask, Response, request  # noqa: E402

from pandas_reference import PandasReference  # noqa: E402

# scikit-learn warns on every call that the scaler was fitted without feature names.
warnings.filterwarnings("ignore", message="X has feature names")


def create_app() -> Flask:
    reference = PandasReference(os.environ.get("MODEL_DIR", str(ROOT / "objs")))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024

    @app.post("/predict")
    def predict() -> Response:
        decoded = orjson.loads(request.get_data(cache=False))
        single = isinstance(decoded, dict)
        out = reference.predict([decoded] if single else decoded)
        return Response(orjson.dumps(out[0] if single else out), mimetype="application/json")

    @app.get("/health")
    def health() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return app


app = create_app()
