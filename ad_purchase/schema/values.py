"""How raw values are written and read: missing markers, the shapes of numbers, amounts and
percentages, categorical levels.  One parser per kind of field, used by every codec, by training
and (as patterns) by the OpenAPI document."""
from __future__ import annotations

import itertools
import math
import re
from typing import Any

import numpy as np

from .fields import CATEGORICAL_LEVELS, CURRENCY_FIELD, LEVEL_CODES, MISSING_CODE, PERCENT_FIELD

# A value is missing when it is null or one of these strings (any case, surrounding spaces ignored).
# "null" and a signed "nan" are included because JSON decoders commonly read them as missing.
MISSING_STRINGS = frozenset({"", "nan", "na", "null", "-nan", "+nan"})
SPACE_CHARS = " \t\n\r\f\v"          # what may surround a value; ASCII only, as in the document


def missing_spellings() -> list[str]:
    """Every upper- and lower-case spelling of the missing markers, for readers that match text
    exactly (pandas' na_values, a CSV column read in bulk)."""
    return sorted({"".join(letters) for word in MISSING_STRINGS
                   for letters in itertools.product(*({c.lower(), c.upper()} for c in word))})

# ------------------------------------------------------------------ how numbers are written
# Each shape is written once, in the regular-expression syntax Python and JSON Schema share: the
# parsers below use it, and the OpenAPI document shows it (with bounded digit counts).  Every
# shape reads one way only (no two adjacent parts can take the same characters), so a long
# value that fails to match is refused in linear time.  For the same reason Python may match
# them possessively (`possessive=True`: no backtracking positions are kept, which makes checking
# a whole column several times faster); the document gets the plain form JSON Schema reads.
SPACE = r"[ \t\n\r\f\v]"


def unsigned_pattern(digits: str = "+", exponent: str = "+", possessive: bool = False) -> str:
    """A decimal number without its sign: "12", "0.5", ".5", "12.", with an optional exponent."""
    p = "+" if possessive else ""
    return rf"(?:[0-9]{digits}{p}(?:\.[0-9]*{p})?{p}|\.[0-9]+{p})(?:[eE][+-]?{p}[0-9]{exponent}{p})?{p}"


def number_pattern(digits: str = "+", exponent: str = "+", possessive: bool = False) -> str:
    return "[+-]?" + ("+" if possessive else "") + unsigned_pattern(digits, exponent, possessive)


def amount_pattern(groups: str = "+", digits: str = "+", exponent: str = "+", possessive: bool = False) -> str:
    """A currency amount without its sign: thousands separators are commas between groups of
    exactly three digits before the decimal point ("6,882.34"); without them, any number."""
    p = "+" if possessive else ""
    grouped = rf"[0-9]{{1,3}}{p}(?:,[0-9]{{3}}){groups}{p}(?:\.[0-9]*{p})?{p}"
    return f"(?:{grouped}|{unsigned_pattern(digits, exponent, possessive)})"


def currency_pattern(groups: str = "+", digits: str = "+", exponent: str = "+", space: str = SPACE,
                     possessive: bool = False) -> str:
    """x12: "$6,882.34", "$-5,032.58", "-$5,032.58", "($5,032.58)" (negative), "3709.93"; spaces
    may follow "$", "(" or a sign, as in "$ 1,000", never sit inside the digits."""
    p = "+" if possessive else ""
    amount, s = amount_pattern(groups, digits, exponent, possessive), f"{space}*{p}"
    return (rf"(?:\({s}(?:\${s})?{p}{amount}{s}\)"
            rf"|(?:[+-]{s})?{p}(?:\${s})?{p}{amount}"
            rf"|\${s}[+-]{s}{amount})")


def percent_pattern(digits: str = "+", exponent: str = "+", space: str = SPACE, possessive: bool = False) -> str:
    """x63: "62.59%" or "45.85", on the 0-100 scale."""
    p = "+" if possessive else ""
    return rf"{number_pattern(digits, exponent, possessive)}(?:{space}*{p}%)?{p}"


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
_PERCENT_LINE = rf"{_BLANK}*+(?:{percent_pattern(space=_BLANK, possessive=True)}|{_NAN}){_BLANK}*+"
_CURRENCY_LINE = rf"{_BLANK}*+(?:{currency_pattern(space=_BLANK, possessive=True)}|{_NAN}){_BLANK}*+"
_SHORT_COLUMN = 2   # a single value: one parser call costs less than the join and numpy conversion
_COLUMN = {
    PERCENT_FIELD: re.compile(rf"(?:{_PERCENT_LINE}\n)*+{_PERCENT_LINE}"),
    CURRENCY_FIELD: re.compile(rf"(?:{_CURRENCY_LINE}\n)*+{_CURRENCY_LINE}"),
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


# The spellings most records use, read with one dictionary lookup per value; others go through
# parse_level.
COMMON_CODES: dict[str, dict[Any, int]] = {
    field: {**codes, None: MISSING_CODE, "": MISSING_CODE, "nan": MISSING_CODE, "NaN": MISSING_CODE}
    for field, codes in LEVEL_CODES.items()}


def level_code(field: str, value: Any) -> int:
    """A categorical value as its level code (MISSING_CODE when missing)."""
    level = parse_level(field, value)
    return MISSING_CODE if level is None else LEVEL_CODES[field][level]


