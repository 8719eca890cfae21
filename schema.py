"""The input schema: the one definition of the 100 raw fields and how their values are read.

Validation in the service, the OpenAPI spec, the training pipeline, the synthetic data
generator and the tests all read the field lists, levels and parsing rules from here, so
a change to the client's format is made in one place.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
PROFILE_PATH = ROOT / "data" / "client_data_profile.json"
EXAMPLES_DIR = ROOT / "examples"

FIELDS: tuple[str, ...] = tuple(f"x{i}" for i in range(100))
TARGET = "y"

# Day, region, month, gender: the levels the client's data uses.  Matching ignores case and
# surrounding spaces; the spelling below is the canonical one used in feature names.
CATEGORICAL_LEVELS: dict[str, tuple[str, ...]] = {
    "x5": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    "x31": ("america", "asia", "germany", "japan"),
    "x81": ("January", "February", "March", "April", "May", "June", "July", "August",
            "September", "October", "November", "December"),
    "x82": ("Female", "Male"),
}
CATEGORICAL_MEANING = {"x5": "day of week", "x31": "region", "x81": "month", "x82": "gender"}
CATEGORICAL_FIELDS: tuple[str, ...] = tuple(CATEGORICAL_LEVELS)

CURRENCY_FIELD = "x12"
PERCENT_FIELD = "x63"
NUMERIC_FIELDS: tuple[str, ...] = tuple(f for f in FIELDS if f not in CATEGORICAL_LEVELS)

# Raw spellings the client sends, as listed in the published data profile.
CURRENCY_EXAMPLES = ("$6,882.34", "$6,882.34 ", "$-5,032.58", "($5,032.58)", "$66.55", "3709.93")
PERCENT_EXAMPLES = ("62.59%", "3.11%", "45.85")

# A value is missing when it is null or one of these strings (any case, surrounding spaces ignored).
# "null" and a signed "nan" are included because JSON decoders commonly read them as missing.
MISSING_STRINGS = frozenset({"", "nan", "na", "null", "-nan", "+nan"})
SPACE_CHARS = " \t\n\r\f\v"          # what may surround a value; ASCII only, as in the document

# ------------------------------------------------------------------ how numbers are written
# Each shape is written once, in the regular-expression syntax Python and JSON Schema share: the
# parsers below use it, and the OpenAPI document shows it (with bounded digit counts).  Every
# shape reads one way only (no two adjacent parts can take the same characters), so a long
# value that fails to match is refused in linear time.
SPACE = r"[ \t\n\r\f\v]"


def unsigned_pattern(digits: str = "+", exponent: str = "+") -> str:
    """A decimal number without its sign: "12", "0.5", ".5", "12.", with an optional exponent."""
    return rf"(?:[0-9]{digits}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{exponent})?"


def number_pattern(digits: str = "+", exponent: str = "+") -> str:
    return "[+-]?" + unsigned_pattern(digits, exponent)


def amount_pattern(groups: str = "+", digits: str = "+", exponent: str = "+") -> str:
    """A currency amount without its sign: thousands separators are commas between groups of
    exactly three digits before the decimal point ("6,882.34"); without them, any number."""
    grouped = rf"[0-9]{{1,3}}(?:,[0-9]{{3}}){groups}(?:\.[0-9]*)?"
    return f"(?:{grouped}|{unsigned_pattern(digits, exponent)})"


def currency_pattern(groups: str = "+", digits: str = "+", exponent: str = "+", space: str = SPACE) -> str:
    """x12: "$6,882.34", "$-5,032.58", "-$5,032.58", "($5,032.58)" (negative), "3709.93"; spaces
    may follow "$", "(" or a sign, as in "$ 1,000", never sit inside the digits."""
    amount, s = amount_pattern(groups, digits, exponent), f"{space}*"
    return (rf"(?:\({s}(?:\${s})?{amount}{s}\)"
            rf"|(?:[+-]{s})?(?:\${s})?{amount}"
            rf"|\${s}[+-]{s}{amount})")


def percent_pattern(digits: str = "+", exponent: str = "+", space: str = SPACE) -> str:
    """x63: "62.59%" or "45.85", on the 0-100 scale."""
    return rf"{number_pattern(digits, exponent)}(?:{space}*%)?"


_NUMBER = re.compile(f"{SPACE}*({number_pattern()}){SPACE}*")
_PERCENT = re.compile(f"{SPACE}*({number_pattern()})(?:{SPACE}*%)?{SPACE}*")
_CURRENCY = re.compile(f"{SPACE}*{currency_pattern()}{SPACE}*")
# What is left of a well-formed amount without '$', ',' and spaces is a signed number; "(5)" is -5.
_CURRENCY_TO_NUMBER = str.maketrans({"$": None, ",": None, "(": "-", ")": None, **dict.fromkeys(SPACE_CHARS)})
_MISSING = float("nan")

# The parsers below try the well-formed spelling first (one regular expression) and look at
# the rarer cases, missing markers and errors, only when that fails: they run once per value
# on the request path.


class FieldError(ValueError):
    """A raw value that cannot be read; the message says what was expected."""


def is_missing(value: Any) -> bool:
    """null, a missing marker string, or a float NaN (how a CSV reader hands over an empty cell)."""
    if isinstance(value, str):
        return value.strip(SPACE_CHARS).lower() in MISSING_STRINGS
    return value is None or (isinstance(value, float) and math.isnan(value))


def _finite(number: float) -> float:
    if not math.isfinite(number):
        raise FieldError("must be a finite number")
    return number


def _not_text(value: Any) -> float:
    """A JSON value that is not a string: a finite number, or missing."""
    if is_missing(value):
        return _MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError("expected a number or a numeric string" if not isinstance(value, bool)
                         else "expected a number, not a boolean")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        raise FieldError("must be a finite number") from None
    return _finite(number)


def _text(value: str, pattern: re.Pattern, message: str) -> float:
    match = pattern.fullmatch(value)
    if match:
        return _finite(float(match.group(1)))
    if is_missing(value):
        return _MISSING
    raise FieldError(message)


def parse_number_text(text: str) -> float:
    """A decimal number written as text ("0.137", "-1e-3"); nothing else is a number."""
    return _text(text, _NUMBER, "expected a number or a numeric string")


def parse_number(value: Any) -> float:
    """A plain numeric field: JSON number, numeric string, or missing (NaN)."""
    return parse_number_text(value) if isinstance(value, str) else _not_text(value)


CURRENCY_MESSAGE = ("expected a currency amount such as \"$6,882.34\" or \"($5,032.58)\" "
                    "(commas only between groups of three digits before the decimal point)")


def parse_currency(value: Any) -> float:
    """x12: "$6,882.34", "$-5,032.58", "($5,032.58)" (negative), "3709.93" or a number.

    A comma must separate groups of exactly three digits before the decimal point, so an amount
    written with other separators ("$1.234,56", "12,34") is refused rather than misread.
    Parentheses or a minus sign make the amount negative (both at once are refused)."""
    if not isinstance(value, str):
        return _not_text(value)
    if _CURRENCY.fullmatch(value):
        return _finite(float(value.translate(_CURRENCY_TO_NUMBER)))
    if is_missing(value):
        return _MISSING
    raise FieldError(CURRENCY_MESSAGE)


def parse_percent(value: Any) -> float:
    """x63: "62.59%", "45.85" or a number, all on the 0-100 scale."""
    if not isinstance(value, str):
        return _not_text(value)
    return _text(value, _PERCENT, "expected a percentage such as \"62.59%\" or \"45.85\"")


# Whole-column reading of x12 and x63 for the request path: one regular expression checks every
# value of the column at once and numpy converts them, instead of one parser call per value.
# Values it does not cover (other missing markers, non-strings, errors) go to the parsers above.
_NAN, _BLANK = "[nN][aA][nN]", r"[ \t]"         # a column's values are joined by line breaks
_PERCENT_LINE = rf"{_BLANK}*(?:{percent_pattern(space=_BLANK)}|{_NAN}){_BLANK}*"
_CURRENCY_LINE = rf"{_BLANK}*(?:{currency_pattern(space=_BLANK)}|{_NAN}){_BLANK}*"
_SHORT_COLUMN = 8   # below this many values, one parser call per value costs less than the join
_COLUMN = {
    PERCENT_FIELD: re.compile(rf"(?:{_PERCENT_LINE}\n)*{_PERCENT_LINE}"),
    CURRENCY_FIELD: re.compile(rf"(?:{_CURRENCY_LINE}\n)*{_CURRENCY_LINE}"),
}
_COLUMN_TO_NUMBER = {CURRENCY_FIELD: str.maketrans({"$": None, ",": None, "(": "-", ")": None, " ": None, "\t": None}),
                     PERCENT_FIELD: str.maketrans({"%": None})}     # keeps the line breaks between values


def parse_column(field: str, values: list) -> np.ndarray:
    """Every value of an x12 or x63 column, exactly as `numeric_parser(field)` reads each one."""
    if len(values) < _SHORT_COLUMN:
        parser = numeric_parser(field)
        return np.array([parser(v) for v in values], dtype=float)
    try:
        joined = "\n".join(values)
    except TypeError:                  # a number or null among the strings
        joined = None
    if joined is not None and _COLUMN[field].fullmatch(joined):
        parts = joined.translate(_COLUMN_TO_NUMBER[field]).split("\n")   # signed numbers numpy reads
        if len(parts) == len(values):  # no value held a line break of its own
            numbers = np.array(parts, dtype=float)
            if not np.isinf(numbers).any():
                return numbers
    parser = numeric_parser(field)
    return np.array([parser(v) for v in values], dtype=float)


_LEVEL_LOOKUP: dict[str, dict[str, str]] = {
    field: {level.lower(): level for level in levels} for field, levels in CATEGORICAL_LEVELS.items()
}


def parse_level(field: str, value: Any) -> str | None:
    """A categorical value as its canonical level, or None when missing."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        level = _LEVEL_LOOKUP[field].get(value.strip(SPACE_CHARS).lower())
        if level is not None:
            return level
    raise FieldError("expected one of " + ", ".join(CATEGORICAL_LEVELS[field]))


def numeric_parser(field: str):
    """The reader for a numeric field: currency and percentage fields have their own."""
    return {CURRENCY_FIELD: parse_currency, PERCENT_FIELD: parse_percent}.get(field, parse_number)


def dummy_columns(field: str) -> list[str]:
    """One-hot columns of a categorical field, as trained: the alphabetically first level is the
    dropped reference, and a `<field>_nan` column marks a missing value."""
    levels = sorted(CATEGORICAL_LEVELS[field])
    return [f"{field}_{level}" for level in levels[1:]] + [f"{field}_nan"]


def all_model_columns() -> list[str]:
    """Every candidate model input: the 96 scaled numeric fields, then the dummies."""
    return list(NUMERIC_FIELDS) + [c for f in CATEGORICAL_FIELDS for c in dummy_columns(f)]


def split_dummy(column: str) -> tuple[str, str | None] | None:
    """("x5", "monday") for "x5_monday", ("x31", None) for "x31_nan", None for a numeric column."""
    field, sep, level = column.partition("_")
    if not sep or field not in CATEGORICAL_LEVELS:
        return None
    return field, (None if level == "nan" else level)


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
