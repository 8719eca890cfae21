"""The files a trained model consists of: written by training, verified and read by serving.

Every artifact's SHA-256 is recorded in metadata.json; nothing is unpickled before its sum
matches, so a tampered or half-copied folder is refused with the file named.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from statsmodels.iolib.smpickle import load_pickle

# File names the deployment has always used.
IMPUTER_FILE = "imputer.pkl"
SCALER_FILE = "std_scaler.pkl"
VARIABLES_FILE = "variables.pickle"
MODEL_FILE = "ad_purchase_model.pickle"
METADATA_FILE = "metadata.json"
ARTIFACT_FILES = (IMPUTER_FILE, SCALER_FILE, VARIABLES_FILE, MODEL_FILE)

# What serving reads from metadata.json: the names, the cutoff, and the facts GET /model reports.
MODEL_FACTS = ("model_name", "model_version", "trained_at", "training_data", "rows", "class_balance",
               "features", "coefficients", "cutoff", "cutoff_percentile", "auc", "library_versions", "artifacts")


class ArtifactError(RuntimeError):
    """The model folder cannot be served; the message names the file and the reason."""


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def version_from(sums: dict[str, str], names: Iterable[str] = ARTIFACT_FILES) -> str:
    """A model version that identifies the artifacts: the first 12 hex digits of the SHA-256 of
    their SHA-256 sums, so the same fitted files always give the same version."""
    joined = "\n".join(f"{name} {sums[name]}" for name in names)
    return hashlib.sha256(joined.encode()).hexdigest()[:12]


def verify(model_dir: Path) -> dict:
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
    missing = [key for key in MODEL_FACTS if key not in metadata]
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


@dataclass(frozen=True)
class Fitted:
    """What training fitted, as unpickled: the imputer, the scaler, the selected feature names and
    the statsmodels Logit results."""

    metadata: dict
    imputer: object
    scaler: object
    features: tuple[str, ...]
    results: object


def _unpickle(path: Path):
    with open(path, "rb") as handle:
        return pickle.load(handle)


def read(model_dir: Path | str) -> Fitted:
    """Verify a folder written by train.py, then unpickle it."""
    model_dir = Path(model_dir)
    metadata = verify(model_dir)
    try:
        return Fitted(metadata, _unpickle(model_dir / IMPUTER_FILE), _unpickle(model_dir / SCALER_FILE),
                      tuple(_unpickle(model_dir / VARIABLES_FILE)), load_pickle(str(model_dir / MODEL_FILE)))
    except Exception as exc:  # a verified file that still does not load is a broken training run
        raise ArtifactError(f"artifacts in {model_dir} could not be loaded: {exc}") from None
