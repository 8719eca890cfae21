"""The trained pipeline applied to validated columns: matrices in, matrices out.

The fitted artifacts are reduced to plain numbers once, at load: the imputer's means, the
scaler's means and scales, the Logit's coefficients, and which level code each indicator tests.
Scoring applies exactly those numbers to a whole batch; nothing is refitted, no DataFrame is
built, and nothing here knows how the rows arrived or how the scores will be written.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit

from ..schema import CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, NUMERIC_FIELDS, Columns, numeric_input_order, split_dummy
from . import artifacts
from .artifacts import ArtifactError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """The model's answer for a batch: its inputs as fed to it (columns named by `names`), the
    predicted probability and the business outcome (1 at or above the cutoff)."""

    names: tuple[str, ...]
    inputs: np.ndarray          # rows x len(names)
    phat: np.ndarray
    outcome: np.ndarray         # 0/1, int64


@dataclass(frozen=True)
class InputPlan:
    """How columns become the model's inputs in a few numpy calls: the numeric inputs (in
    `numeric_input_order`) imputed with `fill` and scaled with `mean`/`scale`, then the
    indicators, each comparing one categorical's level code with its own.  `names` is that
    column order."""

    names: tuple[str, ...]
    numeric_fields: tuple[str, ...]
    fill: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    dummy_fields: np.ndarray      # index into CATEGORICAL_FIELDS
    dummy_codes: np.ndarray       # level code, -1 for the missing-value indicator

    @classmethod
    def build(cls, features: tuple[str, ...], imputer, scaler) -> "InputPlan":
        position = {name: i for i, name in enumerate(NUMERIC_FIELDS)}
        numeric = numeric_input_order(name for name in features if split_dummy(name) is None)
        dummies = [name for name in features if split_dummy(name) is not None]
        fitted = [position[name] for name in numeric]
        levels = [split_dummy(name) for name in dummies]
        return cls(
            names=(*numeric, *dummies),
            numeric_fields=tuple(numeric),
            fill=np.asarray(imputer.statistics_, dtype=float)[fitted],
            mean=np.asarray(scaler.mean_, dtype=float)[fitted],
            scale=np.asarray(scaler.scale_, dtype=float)[fitted],
            dummy_fields=np.array([CATEGORICAL_FIELDS.index(f) for f, _ in levels], dtype=int),
            dummy_codes=np.array([-1 if level is None else CATEGORICAL_LEVELS[f].index(level)
                                  for f, level in levels], dtype=int))


@dataclass
class Model:
    """The served model: fitted parameters as arrays, and the plan that turns columns into inputs."""

    metadata: dict
    features: tuple[str, ...]     # the model's own order, as trained
    coef: np.ndarray              # one per input column, in plan.names order
    cutoff: float
    plan: InputPlan

    @property
    def name(self) -> str:
        return self.metadata["model_name"]

    @property
    def version(self) -> str:
        return self.metadata["model_version"]

    @property
    def numeric_inputs(self) -> tuple[str, ...]:
        """The numeric fields the model reads: all a decoder must deliver besides the categoricals."""
        return self.plan.numeric_fields

    def inputs(self, columns: Columns) -> np.ndarray:
        """Mean-impute and scale with the fitted numbers, one-hot with the trained levels."""
        plan = self.plan
        values = columns.numeric
        if columns.numeric_fields != plan.numeric_fields:       # columns holding every numeric field
            values = values[:, [columns.numeric_fields.index(f) for f in plan.numeric_fields]]
        scaled = (np.where(np.isnan(values), plan.fill, values) - plan.mean) / plan.scale
        indicators = columns.codes[:, plan.dummy_fields] == plan.dummy_codes
        return np.concatenate((scaled, indicators), axis=1)

    def score(self, columns: Columns) -> Scores:
        inputs = self.inputs(columns)
        # Add the terms left to right in every row (a running sum), not with a matrix product,
        # whose rounding can change with the number of rows: a record scores the same alone as
        # inside any batch.  np.add.accumulate is the ufunc np.cumsum calls, without its wrapper.
        logit = np.add.accumulate(inputs * self.coef, axis=1)[:, -1]
        phat = expit(logit)     # the Logit's link in one call, without overflow warnings
        return Scores(self.plan.names, inputs, phat, (phat >= self.cutoff).astype(np.int64))

    def contributions(self, scores: Scores) -> np.ndarray:
        """Each input's share of the log-odds (coefficient x input), columns as in scores.names;
        a row adds up to logit(phat)."""
        return scores.inputs * self.coef + 0.0      # + 0.0: no -0.0 in the answer


def load_model(model_dir: Path | str) -> Model:
    """Verify and load a folder written by train.py."""
    fitted = artifacts.read(model_dir)
    try:
        plan = InputPlan.build(fitted.features, fitted.imputer, fitted.scaler)
        coef = np.array([fitted.results.params[name] for name in plan.names], dtype=float)
    except Exception as exc:  # a verified folder whose parts do not fit together
        raise ArtifactError(f"artifacts in {model_dir} could not be loaded: {exc}") from None
    model = Model(fitted.metadata, fitted.features, coef, float(fitted.metadata["cutoff"]), plan)
    log.info("loaded model %s %s from %s", model.name, model.version, model_dir)
    return model
