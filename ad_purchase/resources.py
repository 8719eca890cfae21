"""The files shipped beside the package: the client's published data profile and the user's
example payloads.  (The model folder is a setting: see ad_purchase.settings.)"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import HOME

PROFILE_PATH = HOME / "data" / "client_data_profile.json"
EXAMPLES_DIR = HOME / "examples"
DEFAULT_MODEL_DIR = HOME / "objs"


@dataclass(frozen=True)
class Profile:
    """The client's published data profile (data/client_data_profile.json)."""

    raw: dict

    @classmethod
    def load(cls, path: Path = PROFILE_PATH) -> "Profile":
        return cls(json.loads(Path(path).read_text()))

    @property
    def numeric_stats(self) -> dict[str, dict[str, float]]:
        return self.raw["numeric_fields"]

    @property
    def coefficients(self) -> dict[str, dict[str, float]]:
        return self.raw["published_model"]["coefficients"]

    @property
    def auc(self) -> float:
        return float(self.raw["published_model"]["auc"]["test"])


def load_example(name: str) -> Any:
    """The user's example payloads ("single" or "batch"), as shipped in examples/."""
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text())
