"""The published method: impute and scale the numeric fields, one-hot the categoricals with a
missing-value indicator, keep the 25 columns an L1-penalised logistic regression weighs most,
refit a statsmodels Logit on them, and measure AUC on a held-out split first."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import statsmodels.api as sm
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from ..schema import CATEGORICAL_FIELDS, NUMERIC_FIELDS, dummy_columns
from .data import N_FEATURES, ParsedData

HELD_OUT_FRACTION = 0.25
L1_C = 1.0

Progress = Callable[[str], None]


def one_hot(categorical: pd.DataFrame) -> pd.DataFrame:
    """Indicators for every level but the reference, plus a missing-value indicator."""
    columns = {}
    for name in CATEGORICAL_FIELDS:
        values = categorical[name].to_numpy(dtype=object)
        for column in dummy_columns(name):
            level = column[len(name) + 1:]
            hit = pd.isna(values) if level == "nan" else values == level
            columns[column] = hit.astype(float)
    return pd.DataFrame(columns, index=categorical.index)


@dataclass
class FittedModel:
    imputer: SimpleImputer
    scaler: StandardScaler
    features: list[str]
    results: object                       # statsmodels LogitResults
    train_phat: np.ndarray = field(repr=False)

    def design(self, data: ParsedData) -> pd.DataFrame:
        """The 25 model inputs for parsed rows, with the fitted imputer and scaler."""
        scaled = self.scaler.transform(self.imputer.transform(data.numeric))
        frame = pd.concat([pd.DataFrame(scaled, columns=list(NUMERIC_FIELDS), index=data.numeric.index),
                           one_hot(data.categorical)], axis=1)
        return frame[self.features]

    def predict(self, data: ParsedData) -> np.ndarray:
        return np.asarray(self.results.predict(self.design(data)))


def _subset(data: ParsedData, rows: np.ndarray) -> ParsedData:
    return ParsedData(data.numeric.iloc[rows].reset_index(drop=True),
                      data.categorical.iloc[rows].reset_index(drop=True), data.target[rows])


def fit(data: ParsedData, progress: Progress = lambda _: None) -> FittedModel:
    """Impute, scale, one-hot, select 25 columns by L1, refit a Logit without intercept."""
    imputer = SimpleImputer(strategy="mean").fit(data.numeric)
    scaler = StandardScaler().fit(imputer.transform(data.numeric))
    scaled = pd.DataFrame(scaler.transform(imputer.transform(data.numeric)),
                          columns=list(NUMERIC_FIELDS), index=data.numeric.index)
    design = pd.concat([scaled, one_hot(data.categorical)], axis=1)
    progress(f"L1 selection over {design.shape[1]} columns")
    l1 = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=L1_C, fit_intercept=False)
    l1.fit(design.to_numpy(), data.target)
    strength = l1.coef_[0] ** 2
    order = np.argsort(-strength, kind="stable")[:N_FEATURES]
    features = [design.columns[i] for i in order]
    progress("Logit refit on the " + str(len(features)) + " selected columns")
    results = sm.Logit(data.target, design[features]).fit(disp=0, maxiter=200)
    train_phat = np.asarray(results.predict(design[features]))
    return FittedModel(imputer, scaler, features, results, train_phat)


@dataclass
class TrainingOutcome:
    model: FittedModel
    held_out_auc: float
    train_auc: float
    held_out_target: np.ndarray
    held_out_phat: np.ndarray
    split_train_target: np.ndarray
    split_train_phat: np.ndarray
    all_target: np.ndarray


def train(data: ParsedData, seed: int = 0, progress: Progress = lambda _: None) -> TrainingOutcome:
    """Measure AUC on a held-out split, then refit on all rows for the model that is shipped."""
    rows = np.arange(len(data.target))
    train_rows, test_rows = train_test_split(rows, test_size=HELD_OUT_FRACTION, random_state=seed,
                                             stratify=data.target)
    progress(f"held-out check: fitting on {len(train_rows):,} rows, scoring {len(test_rows):,}")
    split_model = fit(_subset(data, train_rows), progress)
    held_out = _subset(data, test_rows)
    held_out_phat = split_model.predict(held_out)
    held_out_auc = float(roc_auc_score(held_out.target, held_out_phat))
    progress(f"held-out AUC {held_out_auc:.4f}")
    progress(f"final model: fitting on all {len(rows):,} rows")
    model = fit(data, progress)
    return TrainingOutcome(model, held_out_auc, float(roc_auc_score(data.target, model.train_phat)),
                           held_out.target, held_out_phat,
                           data.target[train_rows], split_model.train_phat, data.target)
