"""The one prediction service: checked Columns to scores, with the contributions a caller asks
for and the plain values monitoring observes.  The HTTP route, model_utils, the local file engine
and the Spark executors all score through it; it knows neither wire formats nor HTTP."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import Model, Scores
from ..schema import DRIFT_SAMPLE_ROWS, MAX_REPORTED_ERRORS, Columns
from .decoding import Decoder


@dataclass(frozen=True)
class Prediction:
    """The answer for a batch of rows: the scores, each input's share of the log-odds when asked
    for (rows x inputs, as scores.names), the rows' own ids, whether one record came in (an
    object, not an array), and for monitoring every numeric field and the level codes of a few
    sampled rows (None when the columns carried no sample)."""

    scores: Scores
    contributions: np.ndarray | None
    ids: list | None
    single: bool
    sample_numeric: np.ndarray | None
    sample_codes: np.ndarray | None

    @property
    def rows(self) -> int:
        return len(self.scores.phat)


class PredictionService:
    """The model with the decoders its callers read raw columns with."""

    def __init__(self, model: Model) -> None:
        self.model = model
        # A request is all or nothing: a few problems per field say enough.  Monitoring sees a
        # sample of each request's rows.
        self.request_decoder = Decoder(model.numeric_inputs, cap=MAX_REPORTED_ERRORS, sample=DRIFT_SAMPLE_ROWS)
        # A file run sets bad rows aside one by one: it needs every problem, and no sample.
        self.batch_decoder = Decoder(model.numeric_inputs, cap=None)

    def predict(self, columns: Columns, explain: bool = False) -> Prediction:
        scores = self.model.score(columns)
        contributions = self.model.contributions(scores) if explain else None
        sample_codes = columns.codes[columns.sample_rows] if columns.sample_rows is not None else None
        return Prediction(scores, contributions, columns.ids, columns.single, columns.sample_numeric, sample_codes)
