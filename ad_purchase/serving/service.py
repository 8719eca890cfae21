"""What one app serves with: the settings, the model (or why there is none), the prediction
service, the codecs and monitoring, and the one path a request takes through them."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .. import HOME
from ..codecs import JsonDecoder, JsonEncoder, decode_csv, encode_csv
from ..core import Prediction, PredictionService
from ..decisions import DecisionLog
from ..model import ArtifactError, load_model
from ..monitoring import Drift, DriftProfile, Metrics
from ..schema import Columns
from .settings import Settings

log = logging.getLogger("api")

JSON, CSV = "application/json", "text/csv"


@dataclass
class Service:
    settings: Settings
    model_dir: Path
    metrics: Metrics
    load_error: str = ""                  # why there is no model
    predictor: PredictionService | None = None
    json: JsonDecoder | None = None
    encoder: JsonEncoder | None = None
    drift: Drift | None = None
    decisions: DecisionLog | None = None  # every scored record, written before its answer

    @classmethod
    def start(cls, settings: Settings) -> "Service":
        """Load and verify the model; without one the service still starts, unready (503), and
        says why.  A model folder that does not exist at all stops it instead."""
        model_dir = Path(settings.MODEL_DIR)
        if not model_dir.is_dir():
            raise SystemExit(f"MODEL_DIR {model_dir} does not exist; train a model with train.py or set MODEL_DIR")
        multiprocess = bool(settings.PROMETHEUS_MULTIPROC_DIR)
        try:
            model = load_model(model_dir)
        except ArtifactError as exc:
            log.error("model not loaded, the service stays unready: %s", exc)
            return cls(settings, model_dir, Metrics("none", "none", multiprocess), load_error=str(exc))
        metrics = Metrics(model.name, model.version, multiprocess)
        predictor = PredictionService(model)
        return cls(settings, model_dir, metrics, "", predictor,
                   JsonDecoder(predictor.request_decoder, settings.MAX_BATCH_ROWS, settings.ID_FIELD),
                   JsonEncoder(model.plan.names),
                   Drift(DriftProfile(model.metadata), metrics.drift_counts, settings.DRIFT_FLUSH_SECONDS),
                   DecisionLog.from_settings(settings, metrics.registry))

    @property
    def model(self):
        return self.predictor.model if self.predictor is not None else None

    def read(self, body: bytes, mimetype: str) -> Columns:
        """A request body as checked columns (InputError when it cannot be scored)."""
        if mimetype == CSV:
            return decode_csv(body, self.predictor.request_decoder, self.settings.MAX_BATCH_ROWS,
                              self.settings.ID_FIELD)
        return self.json.decode(body)

    def predict(self, body: bytes, mimetype: str = JSON, explain: bool = False) -> Prediction:
        """The request's prediction, observed by monitoring."""
        prediction = self.predictor.predict(self.read(body, mimetype), explain)
        self.metrics.observe_scores(prediction.scores.phat, prediction.scores.outcome)
        if prediction.sample_numeric is not None:
            self.drift.offer(prediction.sample_numeric, prediction.sample_codes)
        return prediction

    def answer(self, prediction: Prediction, mimetype: str = JSON) -> bytes:
        return encode_csv(prediction.scores, prediction.contributions) if mimetype == CSV else self.encoder.encode(prediction)

    def public_load_error(self) -> str:
        """Why there is no model, without the server's folder layout."""
        message = self.load_error
        for folder in (self.model_dir.resolve(), self.model_dir, HOME):
            message = message.replace(str(folder) + os.sep, "").replace(str(folder), "MODEL_DIR")
        return message
