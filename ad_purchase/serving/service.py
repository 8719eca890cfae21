"""What one app serves with: the settings, the model (or why there is none), its codecs and monitoring."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .. import HOME
from ..codecs import JsonDecoder, JsonEncoder
from ..decisions import DecisionLog
from ..model import ArtifactError, Model, load_model
from ..monitoring import Drift, DriftProfile, Metrics
from .settings import Settings

log = logging.getLogger("api")


@dataclass
class Service:
    settings: Settings
    model_dir: Path
    metrics: Metrics
    model: Model | None = None
    load_error: str = ""                  # why there is no model
    decoder: JsonDecoder | None = None
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
        try:
            model = load_model(model_dir)
        except ArtifactError as exc:
            log.error("model not loaded, the service stays unready: %s", exc)
            return cls(settings, model_dir, Metrics("none", "none"), load_error=str(exc))
        metrics = Metrics(model.name, model.version)
        return cls(settings, model_dir, metrics, model, "", JsonDecoder(model.numeric_inputs, settings.MAX_BATCH_ROWS),
                   JsonEncoder(model.plan.names),
                   Drift(DriftProfile(model.metadata), metrics.drift_counts, settings.DRIFT_FLUSH_SECONDS),
                   DecisionLog.from_settings(settings, metrics.registry))

    def predict_json(self, body: bytes, explain: bool = False) -> bytes:
        """JSON request bytes to JSON answer bytes: the whole scoring path, without monitoring."""
        columns = self.decoder.decode(body)
        scores = self.model.score(columns)
        return self.encoder.encode(scores, columns.single, self.model.contributions(scores) if explain else None)

    def public_load_error(self) -> str:
        """Why there is no model, without the server's folder layout."""
        message = self.load_error
        for folder in (self.model_dir.resolve(), self.model_dir, HOME):
            message = message.replace(str(folder) + os.sep, "").replace(str(folder), "MODEL_DIR")
        return message
