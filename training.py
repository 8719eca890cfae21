"""Fitting the purchase model by the published method, from rows in the client's raw format.

Reading and checking the CSV, parsing x12/x63, fitting the imputer and scaler, the one-hot
design matrix, L1 feature selection, the statsmodels Logit refit, the cutoff, and writing the
artifacts atomically.  Serving never imports this module: it only applies what was fitted here.
"""
from __future__ import annotations

import json
import os
import pickle
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import statsmodels.api as sm
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from artifacts import (ARTIFACT_FILES, IMPUTER_FILE, METADATA_FILE, MODEL_FILE, SCALER_FILE,
                       VARIABLES_FILE, sha256)
from schema import (CATEGORICAL_FIELDS, CURRENCY_FIELD, FIELDS, MISSING_STRINGS, NUMERIC_FIELDS,
                    PERCENT_FIELD, TARGET, FieldError, dummy_columns, numeric_parser, parse_level)

MODEL_NAME = "ad_purchase_model"
N_FEATURES = 25
MIN_ROWS = 100
CUTOFF_PERCENTILE = 75
HELD_OUT_FRACTION = 0.25
L1_C = 1.0
PSI_BINS = 10
MAX_REPORTED_ERRORS = 20


Progress = Callable[[str], None]


class TrainingDataError(ValueError):
    """The training file cannot be used; the message says where and why."""


# --------------------------------------------------------------------------- reading and checks

def _missing_spellings() -> list[str]:
    """Every upper/lower-case spelling of the missing markers, for the CSV reader."""
    spellings = {""}
    for word in MISSING_STRINGS:
        for mask in range(2 ** len(word)):
            spellings.add("".join(c.upper() if mask >> i & 1 else c for i, c in enumerate(word)))
    return sorted(spellings)


def read_raw_csv(path: Path) -> pd.DataFrame:
    """The training file with plain numeric columns read as floats by pandas' C parser (fast),
    and every column that needs the schema's rules (x12, x63, categories, y, and any column
    holding a value the C parser could not read) kept as text for `parse_raw`."""
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise TrainingDataError(f"{path}: the file is empty")
    text_columns = {c: str for c in (*CATEGORICAL_FIELDS, CURRENCY_FIELD, PERCENT_FIELD, TARGET)}
    try:
        frame = pd.read_csv(path, dtype=text_columns, keep_default_na=False, na_values=_missing_spellings(),
                            encoding="utf-8", engine="c")
    except UnicodeDecodeError as exc:
        raise TrainingDataError(f"{path}: not a UTF-8 text CSV file ({exc.reason} at byte {exc.start})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TrainingDataError(f"{path}: not a readable CSV file ({str(exc).strip()})") from None
    missing = [c for c in (*FIELDS, TARGET) if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise TrainingDataError(f"{path}: not a CSV in the client's format; missing columns: {shown}")
    if frame.empty:
        raise TrainingDataError(f"{path}: the file has a header but no rows")
    return frame


@dataclass
class ParsedData:
    numeric: pd.DataFrame          # 96 float columns, NaN where missing
    categorical: pd.DataFrame      # 4 columns of canonical levels, None where missing
    target: np.ndarray             # 0/1


def _row_label(index: int) -> str:
    return f"row {index + 1} (line {index + 2})"


def parse_raw(frame: pd.DataFrame) -> ParsedData:
    """Apply the schema's parsing rules to every cell; all problems are reported together."""
    errors: list[str] = []

    def bad(index: int, column: str, value: str, message: str) -> None:
        errors.append(f"{_row_label(index)}, {column}={value!r}: {message}")

    numeric = {}
    for column in NUMERIC_FIELDS:
        cells = frame[column]
        if pd.api.types.is_float_dtype(cells.dtype):
            values = cells.to_numpy(dtype=float, copy=True)
        else:  # text: x12/x63 spellings, or a column with a value the C parser refused
            parser = numeric_parser(column)
            values = np.empty(len(cells))
            for index, value in enumerate(cells):
                try:
                    values[index] = parser(value)
                except FieldError as exc:
                    values[index] = np.nan
                    bad(index, column, value, str(exc))
        for index in np.flatnonzero(np.isinf(values)):
            bad(index, column, str(cells.iat[index]), "must be a finite number")
        numeric[column] = values

    categorical = {}
    for column in CATEGORICAL_FIELDS:
        levels = []
        for index, value in enumerate(frame[column]):
            try:
                levels.append(parse_level(column, value))
            except FieldError as exc:
                levels.append(None)
                bad(index, column, value, str(exc))
        categorical[column] = levels

    target_text = frame[TARGET].fillna("").str.strip()
    for index in np.flatnonzero(~target_text.isin(["0", "1"])):
        bad(index, TARGET, frame[TARGET].iat[index], "the target must be 0 or 1")

    if errors:
        shown = "\n  ".join(errors[:MAX_REPORTED_ERRORS])
        more = f"\n  ... and {len(errors) - MAX_REPORTED_ERRORS} more" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise TrainingDataError(f"{len(errors)} bad value(s) in the training data:\n  {shown}{more}")
    target = target_text.astype(int).to_numpy()
    if len(np.unique(target)) < 2:
        raise TrainingDataError("the target has a single class; a classifier needs buyers and non-buyers")
    return ParsedData(pd.DataFrame(numeric), pd.DataFrame(categorical, dtype=object), target)


# --------------------------------------------------------------------------- the published method

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


def check_size(data: ParsedData) -> None:
    """Too few rows fit a meaningless model; refuse them before any fitting."""
    if len(data.target) < MIN_ROWS:
        raise TrainingDataError(f"{len(data.target)} rows are too few to fit {N_FEATURES} features with a "
                                f"held-out check; at least {MIN_ROWS} are needed")


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


# --------------------------------------------------------------------------- artifacts

def _versions() -> dict[str, str]:
    names = ("numpy", "pandas", "scikit-learn", "statsmodels")
    return {"python": platform.python_version(), **{n: importlib_metadata.version(n) for n in names}}


def _psi_profile(values: np.ndarray) -> dict:
    """Decile edges of a field and the share of training rows in each bin, for drift checks."""
    present = values[~np.isnan(values)]
    edges = np.unique(np.quantile(present, np.linspace(0, 1, PSI_BINS + 1))[1:-1])
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "shares": (counts / counts.sum()).tolist()}


def build_metadata(outcome: TrainingOutcome, data: ParsedData, source: str, model_version: str) -> dict:
    model = outcome.model
    params, errors = model.results.params, model.results.bse
    numeric_profile = {
        column: {"mean": float(model.imputer.statistics_[i]), "std": float(model.scaler.scale_[i]),
                 "missing_rate": float(np.isnan(data.numeric[column].to_numpy()).mean()),
                 **_psi_profile(data.numeric[column].to_numpy())}
        for i, column in enumerate(NUMERIC_FIELDS)
    }
    categorical_profile = {
        column: {str(level): float(share) for level, share in
                 data.categorical[column].fillna("nan").value_counts(normalize=True).sort_index().items()}
        for column in CATEGORICAL_FIELDS
    }
    positives = int(data.target.sum())
    return {
        "model_name": MODEL_NAME,
        "model_version": model_version,
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "training_data": source,
        "library_versions": _versions(),
        "rows": int(len(data.target)),
        "class_balance": {"1": positives, "0": int(len(data.target) - positives)},
        "cutoff_percentile": CUTOFF_PERCENTILE,
        "cutoff": float(np.percentile(model.train_phat, CUTOFF_PERCENTILE)),
        "auc": {"held_out": outcome.held_out_auc, "all_rows_refit": outcome.train_auc},
        "features": list(model.features),
        "coefficients": {name: {"coef": float(params[name]), "std_err": float(errors[name])}
                         for name in model.features},
        "numeric_fields": numeric_profile,
        "categorical_fields": categorical_profile,
    }


def write_artifacts(outcome: TrainingOutcome, metadata: dict, out_dir: Path,
                    extra: Callable[[Path], None] | None = None) -> None:
    """Write every file into a temporary folder beside `out_dir`, then swap it into place, so a
    failure at any point leaves `out_dir` exactly as it was."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the serving user must be able to read it
    try:
        model = outcome.model
        for name, obj in ((IMPUTER_FILE, model.imputer), (SCALER_FILE, model.scaler),
                          (VARIABLES_FILE, list(model.features))):
            with open(staging / name, "wb") as handle:
                pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        model.results.remove_data()       # the pickle keeps the fit, not 40,000 training rows
        model.results.save(str(staging / MODEL_FILE))
        metadata = dict(metadata, artifacts={n: sha256(staging / n) for n in ARTIFACT_FILES})
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if extra is not None:
            extra(staging)
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Replace `out_dir` with `staging`, keeping copies of files in `out_dir` that training does
    not write (a .gitkeep, notes); `out_dir` is untouched until the final rename."""
    if out_dir.exists():
        for item in out_dir.iterdir():
            target = staging / item.name
            if not target.exists() and item.name != "report":   # an old report describes an old model
                shutil.copytree(item, target) if item.is_dir() else shutil.copy2(item, target)
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, retired / out_dir.name)
        try:
            os.replace(staging, out_dir)
        except BaseException:  # put the previous folder back before reporting the failure
            os.replace(retired / out_dir.name, out_dir)
            retired.rmdir()
            raise
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out_dir)


class Stopwatch:
    """Prints each training stage with the time since the start, so long runs show progress."""

    def __init__(self, printer: Callable[[str], None] = print) -> None:
        self.start = time.perf_counter()
        self.printer = printer

    def __call__(self, message: str) -> None:
        self.printer(f"[{time.perf_counter() - self.start:6.1f}s] {message}")
