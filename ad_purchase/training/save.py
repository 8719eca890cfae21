"""The trained model written as the artifacts serving loads: pickles, metadata with every
artifact's SHA-256 and the training profile for drift, swapped into place atomically."""
from __future__ import annotations

import json
import pickle
import platform
import shutil
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable

import numpy as np

from ..model.artifacts import (ARTIFACT_FILES, IMPUTER_FILE, METADATA_FILE, MODEL_FILE, SCALER_FILE, VARIABLES_FILE,
                               sha256, version_from)
from ..atomic import Staged
from ..schema import CATEGORICAL_FIELDS, NUMERIC_FIELDS
from .data import ParsedData
from .fit import TrainingOutcome

MODEL_NAME = "ad_purchase_model"
CUTOFF_PERCENTILE = 75
PSI_BINS = 10


def _versions() -> dict[str, str]:
    names = ("numpy", "pandas", "scikit-learn", "statsmodels")
    return {"python": platform.python_version(), **{n: importlib_metadata.version(n) for n in names}}


def _psi_profile(values: np.ndarray) -> dict:
    """Decile edges of a field and the share of training rows in each bin, for drift checks."""
    present = values[~np.isnan(values)]
    edges = np.unique(np.quantile(present, np.linspace(0, 1, PSI_BINS + 1))[1:-1])
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "shares": (counts / counts.sum()).tolist()}


def build_metadata(outcome: TrainingOutcome, data: ParsedData, source: str, model_version: str | None) -> dict:
    """Everything metadata.json records but the artifacts' sums (added as they are written); a
    model_version of None is filled in from those sums."""
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
                    extra: Callable[[Path, dict], None] | None = None) -> dict:
    """Write every file into a temporary folder beside `out_dir`, then swap it into place, so a
    failure at any point leaves `out_dir` exactly as it was.  A model_version of None becomes the
    version the artifacts' sums give (`version_from`).  `extra(folder, metadata)` may add files
    (the report) before the swap.  Returns the metadata as written."""
    out_dir = Path(out_dir).resolve()
    with Staged(out_dir, folder=True) as staged:
        staging = staged.path
        staging.mkdir()
        model = outcome.model
        for name, obj in ((IMPUTER_FILE, model.imputer), (SCALER_FILE, model.scaler),
                          (VARIABLES_FILE, list(model.features))):
            with open(staging / name, "wb") as handle:
                pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        model.results.remove_data()       # the pickle keeps the fit, not 40,000 training rows
        model.results.save(str(staging / MODEL_FILE))
        sums = {name: sha256(staging / name) for name in ARTIFACT_FILES}
        metadata = dict(metadata, model_version=metadata["model_version"] or version_from(sums), artifacts=sums)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if extra is not None:
            extra(staging, metadata)
        _keep_other_files(out_dir, staging)
    return metadata


def _keep_other_files(out_dir: Path, staging: Path) -> None:
    """Copies of files in `out_dir` that training does not write (a .gitkeep, notes)."""
    if out_dir.is_dir():
        for item in out_dir.iterdir():
            target = staging / item.name
            if not target.exists() and item.name != "report":   # an old report describes an old model
                shutil.copytree(item, target) if item.is_dir() else shutil.copy2(item, target)
