"""The client's 100 raw fields: their names and kinds, the categorical levels, and the model
columns the fields become."""
from __future__ import annotations

from typing import Iterable

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
# A level's code is its index above; -1 means missing.
LEVEL_CODES: dict[str, dict[str, int]] = {field: {level: code for code, level in enumerate(levels)}
                                          for field, levels in CATEGORICAL_LEVELS.items()}
MISSING_CODE = -1

CURRENCY_FIELD = "x12"
PERCENT_FIELD = "x63"
FORMATTED_FIELDS = (CURRENCY_FIELD, PERCENT_FIELD)      # numbers written in a format of their own
NUMERIC_FIELDS: tuple[str, ...] = tuple(f for f in FIELDS if f not in CATEGORICAL_LEVELS)
PLAIN_FIELDS: tuple[str, ...] = tuple(f for f in NUMERIC_FIELDS if f not in FORMATTED_FIELDS)

# Raw spellings the client sends, as listed in the published data profile.
CURRENCY_EXAMPLES = ("$6,882.34", "$6,882.34 ", "$-5,032.58", "($5,032.58)", "$66.55", "3709.93")
PERCENT_EXAMPLES = ("62.59%", "3.11%", "45.85")


def numeric_input_order(fields: Iterable[str]) -> tuple[str, ...]:
    """The order numeric model inputs are kept in everywhere: plain fields in schema order, then
    x12 and x63.  A decoder reads the plain ones in one pass and the formatted ones from their
    text afterwards, so this order spares the model a reordering."""
    wanted = set(fields)
    if not wanted <= set(NUMERIC_FIELDS):
        raise ValueError(f"not numeric fields: {', '.join(sorted(wanted - set(NUMERIC_FIELDS)))}")
    return (*(f for f in PLAIN_FIELDS if f in wanted), *(f for f in FORMATTED_FIELDS if f in wanted))


def answer_fields(input_names: Iterable[str]) -> tuple[str, ...]:
    """The fields of every answer, in their order: business_outcome, phat and the model inputs,
    alphabetically (the inputs' names start with x, so the two come first)."""
    fields = tuple(sorted(("business_outcome", "phat", *input_names)))
    if fields[:2] != ("business_outcome", "phat"):
        raise ValueError(f"input names {sorted(input_names)} would sort before business_outcome and phat")
    return fields


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
