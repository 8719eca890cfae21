"""Synthetic rows in the client's raw format, drawn from the published data profile.

The client's rows are private; this module stands in for them.  Each numeric field is
normal with the published mean and variance, about 1.6% of numeric values are missing
(written "nan"), x12 and x63 come in every spelling the client uses, and the target is drawn
from the published coefficients (no intercept) applied to the standardised fields and the
category indicators.  The same seed always gives the same rows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..resources import Profile
from ..schema import CATEGORICAL_LEVELS, CURRENCY_FIELD, FIELDS, NUMERIC_FIELDS, PERCENT_FIELD, TARGET, split_dummy

NUMERIC_MISSING_RATE = 0.016

# Level frequencies are not published.  Days and months are uniform (their published standard
# errors are equal); the region mix below reproduces the published class balance (49.8% buyers)
# and AUC (0.80) with the published coefficients, and makes japan the rarest region, as its
# larger standard error implies.
CATEGORY_WEIGHTS: dict[str, dict[str | None, float]] = {
    "x5": {level: 1 / 7 for level in CATEGORICAL_LEVELS["x5"]},
    "x31": {"america": 0.15, "asia": 0.30, "germany": 0.45, "japan": 0.09, None: 0.01},
    "x81": {level: 1 / 12 for level in CATEGORICAL_LEVELS["x81"]},
    "x82": {"Female": 0.5, "Male": 0.5},
}


def _currency_text(amount: float, style: int) -> str:
    """One of the client's spellings of an amount: "$1,234.56", "$1,234.56 ", "1234.56",
    and for negatives "$-1,234.56", "($1,234.56)", "-1234.56"."""
    magnitude = f"{abs(amount):,.2f}"
    if amount >= 0:
        return ("$" + magnitude, "$" + magnitude + " ", f"{amount:.2f}")[style]
    return ("$-" + magnitude, "(" + "$" + magnitude + ")", f"{amount:.2f}")[style]


def _percent_text(value: float, with_sign: bool) -> str:
    return f"{value:.2f}%" if with_sign else f"{value:.2f}"


def generate(n_rows: int, seed: int = 0, profile: Profile | None = None) -> pd.DataFrame:
    """`n_rows` rows with columns x0..x99 (strings, as the client writes them) and y (0/1)."""
    if n_rows < 1:
        raise ValueError("n_rows must be at least 1")
    profile = profile or Profile.load()
    rng = np.random.default_rng(seed)
    stats = profile.numeric_stats

    numeric = {}
    for field in NUMERIC_FIELDS:
        values = rng.normal(stats[field]["mean"], np.sqrt(stats[field]["var"]), n_rows)
        if field == CURRENCY_FIELD:
            values = np.round(values, 2)
        elif field == PERCENT_FIELD:
            values = np.round(values, 2)
        values[rng.random(n_rows) < NUMERIC_MISSING_RATE] = np.nan
        numeric[field] = values

    categorical = {}
    for field, weights in CATEGORY_WEIGHTS.items():
        levels = list(weights)
        picks = rng.choice(len(levels), size=n_rows, p=np.array(list(weights.values())))
        categorical[field] = [levels[i] for i in picks]

    log_odds = np.zeros(n_rows)
    for column, published in profile.coefficients.items():
        dummy = split_dummy(column)
        if dummy is None:
            mean, sd = stats[column]["mean"], np.sqrt(stats[column]["var"])
            z = np.nan_to_num((numeric[column] - mean) / sd, nan=0.0)  # mean-imputed -> 0
        else:
            field, level = dummy
            z = np.array([value == level for value in categorical[field]], dtype=float)
        log_odds += published["coef"] * z
    target = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-log_odds))).astype(int)

    currency_style = rng.integers(0, 3, n_rows)
    percent_sign = rng.random(n_rows) < 0.5
    columns: dict[str, list[str]] = {}
    for field in FIELDS:
        if field in categorical:
            columns[field] = ["nan" if v is None else v for v in categorical[field]]
        elif field == CURRENCY_FIELD:
            columns[field] = ["nan" if np.isnan(v) else _currency_text(v, s)
                              for v, s in zip(numeric[field], currency_style)]
        elif field == PERCENT_FIELD:
            columns[field] = ["nan" if np.isnan(v) else _percent_text(v, s)
                              for v, s in zip(numeric[field], percent_sign)]
        else:
            columns[field] = [f"{v:.10g}" for v in numeric[field]]  # NaN prints as "nan"
    frame = pd.DataFrame(columns, dtype=object)
    frame[TARGET] = target
    return frame


def to_records(frame: pd.DataFrame) -> list[dict[str, str]]:
    """JSON request records (x0..x99 as strings) from generated rows, as the client sends them."""
    return frame[list(FIELDS)].to_dict(orient="records")
