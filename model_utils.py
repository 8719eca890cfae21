"""Loading the trained artifacts and scoring validated rows with them.

Artifacts are checked against the SHA-256 sums in metadata.json before anything is
unpickled, then reduced to plain numpy parameters: the imputer's means, the scaler's means
and scales, the Logit's coefficients.  Scoring applies exactly those fitted numbers to a
whole batch at once; nothing is refitted and no DataFrame is built per request.
"""
from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
from scipy.special import expit
from statsmodels.iolib.smpickle import load_pickle

from decoding import Batch, RequestDecoder, numeric_input_order
from schema import CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, NUMERIC_FIELDS, split_dummy
from artifacts import (ARTIFACT_FILES, IMPUTER_FILE, METADATA_FILE, MODEL_FILE, SCALER_FILE,
                       VARIABLES_FILE, sha256)

log = logging.getLogger(__name__)


# What serving reads from metadata.json: the names, the cutoff, and the facts GET /model reports.
REQUIRED_METADATA = ("model_name", "model_version", "trained_at", "training_data", "rows", "class_balance",
                     "features", "coefficients", "cutoff", "cutoff_percentile", "auc", "library_versions",
                     "artifacts")


class ArtifactError(RuntimeError):
    """The model folder cannot be served; the message names the file and the reason."""


def _verify(model_dir: Path) -> dict:
    """metadata.json, after checking every artifact's SHA-256 against it."""
    meta_path = model_dir / METADATA_FILE
    if not model_dir.is_dir():
        raise ArtifactError(f"model folder {model_dir} does not exist")
    if not meta_path.is_file():
        raise ArtifactError(f"{meta_path} is missing")
    try:
        metadata = json.loads(meta_path.read_text())
        expected = metadata["artifacts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{meta_path} is not valid model metadata ({exc})") from None
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing or not isinstance(expected, dict):
        raise ArtifactError(f"{meta_path} is not valid model metadata "
                            f"({'missing ' + ', '.join(missing) if missing else 'artifacts is not an object'})")
    cutoff = metadata["cutoff"]
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not 0 <= cutoff <= 1:
        raise ArtifactError(f"{meta_path} is not valid model metadata (cutoff {cutoff!r} is not a probability)")
    for name in ARTIFACT_FILES:
        path = model_dir / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing")
        actual = sha256(path)
        if actual != expected.get(name):
            raise ArtifactError(f"{path} does not match its SHA-256 in {METADATA_FILE} "
                                f"(expected {expected.get(name)}, found {actual}); refusing to load it")
    return metadata


def _unpickle(path: Path):
    with open(path, "rb") as handle:
        return pickle.load(handle)


@dataclass(frozen=True)
class Scores:
    inputs: np.ndarray          # rows x model inputs as fed to the model, columns in InputPlan.names order
    phat: np.ndarray
    outcome: np.ndarray         # 0/1


@dataclass(frozen=True)
class InputPlan:
    """How a batch becomes the model's inputs in a few numpy calls: the numeric inputs (in the
    order the decoder gives them, see `numeric_input_order`) imputed with `fill` and scaled with
    `mean`/`scale` (the fitted imputer's and scaler's numbers), then the indicators, each comparing
    a categorical's level code with its own.  `names` is that column order."""

    names: tuple[str, ...]
    numeric_fields: tuple[str, ...]
    fill: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    dummy_fields: np.ndarray      # index into CATEGORICAL_FIELDS
    dummy_codes: np.ndarray       # level code, -1 for the missing-value indicator
    alphabetical: np.ndarray      # columns in the order results list them

    @classmethod
    def build(cls, features: tuple[str, ...], imputer, scaler) -> "InputPlan":
        position = {name: i for i, name in enumerate(NUMERIC_FIELDS)}
        numeric = numeric_input_order(name for name in features if split_dummy(name) is None)
        dummies = [name for name in features if split_dummy(name) is not None]
        fitted = [position[name] for name in numeric]
        levels = [split_dummy(name) for name in dummies]
        names = (*numeric, *dummies)
        return cls(
            names=names,
            numeric_fields=tuple(numeric),
            fill=np.asarray(imputer.statistics_, dtype=float)[fitted],
            mean=np.asarray(scaler.mean_, dtype=float)[fitted],
            scale=np.asarray(scaler.scale_, dtype=float)[fitted],
            dummy_fields=np.array([CATEGORICAL_FIELDS.index(f) for f, _ in levels], dtype=int),
            dummy_codes=np.array([-1 if level is None else CATEGORICAL_LEVELS[f].index(level)
                                  for f, level in levels], dtype=int),
            alphabetical=np.array(sorted(range(len(names)), key=names.__getitem__), dtype=int))


_ZERO_ONE = np.array([0.0, 1.0], dtype=object)   # an indicator's two values, indexed by it


def _result_struct(name: str, fields_: tuple[str, ...]) -> type:
    kinds = {"business_outcome": int, "contributions": dict[str, float]}
    return msgspec.defstruct(name, [(f, kinds.get(f, float)) for f in fields_], gc=False)


@dataclass
class Model:
    """The served model: fitted parameters as arrays, and how to turn a Batch into inputs."""

    metadata: dict
    features: tuple[str, ...]     # the model's own order, as trained
    coef: np.ndarray              # one per input column, in plan.names order
    cutoff: float
    plan: InputPlan
    decoder: RequestDecoder = field(repr=False)

    def __post_init__(self) -> None:
        # Everything a response needs that does not depend on the request, worked out once.
        self.result_fields = tuple(sorted(("business_outcome", "phat", *self.features)))
        if self.result_fields[:2] != ("business_outcome", "phat"):
            raise ArtifactError(f"feature names {self.features} would not sort after business_outcome and phat")
        self.explained_fields = tuple(sorted(("contributions", *self.result_fields)))
        self._result_type = _result_struct("Result", self.result_fields)
        self._explained_type = _result_struct("ExplainedResult", self.explained_fields)
        self._alphabetical_names = [self.plan.names[i] for i in self.plan.alphabetical]
        self._alphabetical_coef = self.coef[self.plan.alphabetical]
        self._result_order = self.plan.alphabetical.tolist()    # list indexing wants ints, not numpy's

    @property
    def name(self) -> str:
        return self.metadata["model_name"]

    @property
    def version(self) -> str:
        return self.metadata["model_version"]

    def inputs(self, batch: Batch) -> np.ndarray:
        """Mean-impute and scale with the fitted numbers, one-hot with the trained levels."""
        p = self.plan
        values = batch.numeric
        if batch.numeric_fields != p.numeric_fields:       # a batch holding every numeric field
            values = values[:, [batch.numeric_fields.index(f) for f in p.numeric_fields]]
        scaled = (np.where(np.isnan(values), p.fill, values) - p.mean) / p.scale
        indicators = batch.codes[:, p.dummy_fields] == p.dummy_codes
        return np.concatenate((scaled, indicators), axis=1)

    def score(self, batch: Batch) -> Scores:
        inputs = self.inputs(batch)
        # Add the terms left to right in every row (a running sum), not with a matrix product,
        # whose rounding can change with the number of rows: a record scores the same alone as
        # inside any batch.  np.add.accumulate is what np.cumsum calls, without its Python wrapper
        # (half of the call's 4 us for one record).
        logit = np.add.accumulate(inputs * self.coef, axis=1)[:, -1]
        # The logistic function, the Logit's link, in one call and without overflow warnings
        # (1 / (1 + exp(-x)) in numpy takes five, errstate included; results agree to 2.2e-16).
        phat = expit(logit)
        return Scores(inputs, phat, (phat >= self.cutoff).astype(np.int64))

    def result_records(self, scores: Scores, explain: bool = False) -> list:
        """One record per row with business_outcome, phat and the inputs, keys in alphabetical order;
        with `explain`, also each input's contribution to the log-odds (coefficient x input)."""
        inputs = self._input_columns(scores.inputs)
        columns = [scores.phat.tolist()] + [inputs[i] for i in self._result_order]
        outcome = scores.outcome.tolist()
        if not explain:
            return list(map(self._result_type, outcome, *columns))   # one C-level loop over the rows
        alphabetical = scores.inputs[:, self.plan.alphabetical]
        contributions = (alphabetical * self._alphabetical_coef + 0.0).tolist()   # + 0.0: no -0.0
        return list(map(self._explained_type, outcome,
                        (dict(zip(self._alphabetical_names, c)) for c in contributions), *columns))

    def _input_columns(self, inputs: np.ndarray) -> list[list]:
        """Each input column as a list, in plan.names order.  Indicator columns hold the two shared
        objects 0.0 and 1.0 rather than a new float per row: on a 10,000-row batch that avoids making,
        encoding from and freeing 180,000 floats, about a quarter of the response's cost."""
        count = len(self.plan.numeric_fields)           # numeric inputs come first, then indicators
        indicators = _ZERO_ONE[inputs[:, count:].astype(np.intp)]
        return inputs[:, :count].T.tolist() + indicators.T.tolist()

    def encode(self, batch: Batch, scores: Scores, explain: bool = False) -> bytes:
        """Response bytes: an object for a one-object request, else an array in request order."""
        records = self.result_records(scores, explain)
        return msgspec.json.encode(records[0] if batch.single else records)

    def predict_body(self, body: bytes, explain: bool = False) -> bytes:
        """Request bytes to response bytes, the whole scoring path."""
        batch = self.decoder.decode(body)
        return self.encode(batch, self.score(batch), explain)


def load_model(model_dir: Path | str, max_rows: int = 10_000) -> Model:
    """Verify and load a folder written by train.py."""
    model_dir = Path(model_dir)
    metadata = _verify(model_dir)
    try:
        imputer = _unpickle(model_dir / IMPUTER_FILE)
        scaler = _unpickle(model_dir / SCALER_FILE)
        features = tuple(_unpickle(model_dir / VARIABLES_FILE))
        results = load_pickle(str(model_dir / MODEL_FILE))
        params = results.params
        plan = InputPlan.build(features, imputer, scaler)
        coef = np.array([params[name] for name in plan.names], dtype=float)
    except Exception as exc:  # a verified file that still does not load is a broken training run
        raise ArtifactError(f"artifacts in {model_dir} could not be loaded: {exc}") from None
    model = Model(metadata, features, coef, float(metadata["cutoff"]), plan,
                  RequestDecoder(plan.numeric_fields, max_rows))
    log.info("loaded model %s %s from %s", model.name, model.version, model_dir)
    return model
