"""The model's pipeline as the design card describes it, a thin face on ad_purchase.

    model = load("objs")              # verify the SHA-256 sums, load the pickled imputer, scaler,
                                      # 25-feature subset and statsmodels Logit
    results = predict(model, records) # raw records (dicts of x0..x99) -> one result dict each

Each result holds business_outcome, phat and the 25 model inputs as fed to the model, keys in
alphabetical order: what POST /predict answers for the same records.
"""
from __future__ import annotations

from pathlib import Path

import msgspec

from ad_purchase.codecs import JsonDecoder, JsonEncoder
from ad_purchase.core import PredictionService
from ad_purchase.model import ArtifactError, Model, Scores, load_model

__all__ = ["ArtifactError", "Model", "Scores", "load", "load_model", "predict"]


def load(model_dir: Path | str = Path(__file__).resolve().parent / "objs") -> Model:
    """The verified model in `model_dir` (train.py writes one)."""
    return load_model(model_dir)


def predict(model: Model, records: list[dict]) -> list[dict]:
    """Score raw records with the service's own reading of every field (InputError when one is bad)."""
    service = PredictionService(model)
    columns = JsonDecoder(service.request_decoder, max(len(records), 1)).decode_values(list(records))
    prediction = service.predict(columns)
    return msgspec.to_builtins(JsonEncoder(model.plan.names).records(prediction.scores))
