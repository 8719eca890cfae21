"""The seeded generator of rows in the client's raw format."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from ad_purchase.training import synthetic
from ad_purchase.schema import CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, FIELDS, NUMERIC_FIELDS, TARGET
from ad_purchase.core.decoding import numeric_parser, parse_currency, parse_level, parse_percent
from ad_purchase.resources import Profile

LARGE_ROWS = 20_000
LARGE_SEED = 17


@pytest.fixture(scope="module")
def profile() -> Profile:
    return Profile.load()


@pytest.fixture(scope="module")
def large() -> pd.DataFrame:
    return synthetic.generate(LARGE_ROWS, seed=LARGE_SEED)


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return synthetic.generate(1500, seed=8)


def _parsed(frame: pd.DataFrame, field: str) -> np.ndarray:
    parser = numeric_parser(field)
    return np.array([parser(value) for value in frame[field]], dtype=float)


# --------------------------------------------------------------------------- shape

def test_columns_and_types(small):
    assert list(small.columns) == [*FIELDS, TARGET]
    assert len(small) == 1500
    for field in FIELDS:
        assert all(isinstance(value, str) for value in small[field]), field
    assert set(small[TARGET].unique()) == {0, 1}


def test_to_records_gives_string_fields_only(small):
    records = synthetic.to_records(small.head(3))
    assert len(records) == 3
    assert all(list(record) == list(FIELDS) for record in records)
    assert records[0]["x12"] == small["x12"].iat[0]


@pytest.mark.parametrize("rows", [0, -1])
def test_rejects_no_rows(rows):
    with pytest.raises(ValueError):
        synthetic.generate(rows)


# --------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_rows():
    pd.testing.assert_frame_equal(synthetic.generate(400, seed=42), synthetic.generate(400, seed=42))


def test_different_seed_gives_different_rows():
    first, second = synthetic.generate(400, seed=42), synthetic.generate(400, seed=43)
    assert not first.equals(second)
    assert (first["x0"] != second["x0"]).mean() > 0.9


# --------------------------------------------------------------------------- raw spellings

def test_numeric_missing_rate_is_about_1_6_percent(large):
    rate = synthetic.NUMERIC_MISSING_RATE
    assert rate == pytest.approx(0.016)
    missing = (large[list(NUMERIC_FIELDS)] == "nan").to_numpy()
    assert abs(missing.mean() - rate) < 0.002
    per_field_tolerance = 5 * math.sqrt(rate * (1 - rate) / LARGE_ROWS)
    assert np.all(np.abs(missing.mean(axis=0) - rate) < per_field_tolerance)


def test_every_currency_spelling_is_present(large):
    values = [v for v in large["x12"] if v != "nan"]
    styles = {
        "dollar": r"\$\d{1,3}(,\d{3})*\.\d\d",
        "dollar with trailing space": r"\$\d{1,3}(,\d{3})*\.\d\d ",
        "dollar minus": r"\$-\d{1,3}(,\d{3})*\.\d\d",
        "parentheses": r"\(\$\d{1,3}(,\d{3})*\.\d\d\)",
        "plain": r"-?\d+\.\d\d",
    }
    counts = {name: sum(bool(re.fullmatch(p, v)) for v in values) for name, p in styles.items()}
    assert all(count > 100 for count in counts.values()), counts
    assert sum(counts.values()) == len(values), "a value in none of the client's spellings"
    assert any("," in v for v in values), "thousands separators are part of the format"


def test_percent_with_and_without_sign(large):
    values = [v for v in large["x63"] if v != "nan"]
    with_sign = sum(v.endswith("%") for v in values)
    assert 0.4 < with_sign / len(values) < 0.6
    assert all(re.fullmatch(r"-?\d+\.\d\d%?", v) for v in values)


def test_categorical_values_come_from_the_levels(large):
    for field in CATEGORICAL_FIELDS:
        allowed = set(CATEGORICAL_LEVELS[field]) | ({"nan"} if field == "x31" else set())
        seen = set(large[field])
        assert seen <= allowed, field
        assert set(CATEGORICAL_LEVELS[field]) <= seen, field
    assert "nan" in set(large["x31"])


# --------------------------------------------------------------------------- distributions

@pytest.mark.parametrize("field", ["x0", "x12", "x24", "x63", "x91", "x53"])
def test_mean_and_variance_follow_the_profile(large, profile, field):
    values = _parsed(large, field)
    present = values[~np.isnan(values)]
    n = len(present)
    mean, var = profile.numeric_stats[field]["mean"], profile.numeric_stats[field]["var"]
    assert abs(present.mean() - mean) < 5 * math.sqrt(var / n)
    assert abs(present.var(ddof=1) - var) < 5 * var * math.sqrt(2 / (n - 1))


def test_buyer_share_is_near_the_published_balance(large, profile):
    counts = profile.raw["target"]["counts"]
    published = counts["1"] / (counts["0"] + counts["1"])
    assert published == pytest.approx(0.498, abs=0.001)
    assert abs(large[TARGET].mean() - published) < 0.015


def test_target_follows_the_published_coefficients(large, profile):
    """Rows of the level with the largest published effect buy more often than its reference."""
    july = large[TARGET][large["x81"] == "July"].mean()
    april = large[TARGET][large["x81"] == "April"].mean()
    saturday = large[TARGET][large["x5"] == "saturday"].mean()
    friday = large[TARGET][large["x5"] == "friday"].mean()
    assert profile.coefficients["x81_July"]["coef"] > 0 and july > april + 0.1
    assert profile.coefficients["x5_saturday"]["coef"] < 0 and saturday < friday - 0.1


# --------------------------------------------------------------------------- parseability

def test_every_generated_value_parses(small):
    for field in NUMERIC_FIELDS:
        parser = numeric_parser(field)
        for value in small[field]:
            number = parser(value)
            assert math.isfinite(number) or (value == "nan" and math.isnan(number)), (field, value)
    for field in CATEGORICAL_FIELDS:
        for value in small[field]:
            level = parse_level(field, value)
            assert level in CATEGORICAL_LEVELS[field] or (field == "x31" and value == "nan" and level is None)


def test_formatted_fields_keep_their_amounts(small):
    """x12/x63 text is a rounding of the drawn amount: the parsed values have two decimals."""
    for field, parser in (("x12", parse_currency), ("x63", parse_percent)):
        values = np.array([parser(v) for v in small[field]])
        present = values[~np.isnan(values)]
        assert np.allclose(np.round(present, 2), present, rtol=0, atol=1e-9)
        assert (present < 0).any() and (present > 0).any()
