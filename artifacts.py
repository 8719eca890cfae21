"""The files a trained model consists of, shared by training (which writes them) and serving
(which verifies and loads them)."""
from __future__ import annotations

import hashlib
from pathlib import Path

# File names the deployment has always used.
IMPUTER_FILE = "imputer.pkl"
SCALER_FILE = "std_scaler.pkl"
VARIABLES_FILE = "variables.pickle"
MODEL_FILE = "ad_purchase_model.pickle"
METADATA_FILE = "metadata.json"
ARTIFACT_FILES = (IMPUTER_FILE, SCALER_FILE, VARIABLES_FILE, MODEL_FILE)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
