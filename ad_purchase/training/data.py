"""Training rows in the client's raw format: read, checked, and parsed with the schema's rules."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..schema import (CATEGORICAL_FIELDS, CURRENCY_FIELD, FIELDS, NUMERIC_FIELDS, PERCENT_FIELD, TARGET, FieldError,
                      missing_spellings, numeric_parser, parse_level)

MIN_ROWS = 100
N_FEATURES = 25
SHOWN_ERRORS = 20          # bad values listed in the message; all are counted


class TrainingDataError(ValueError):
    """The training file cannot be used; the message says where and why."""


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
        frame = pd.read_csv(path, dtype=text_columns, keep_default_na=False, na_values=missing_spellings(),
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
        shown = "\n  ".join(errors[:SHOWN_ERRORS])
        more = f"\n  ... and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
        raise TrainingDataError(f"{len(errors)} bad value(s) in the training data:\n  {shown}{more}")
    target = target_text.astype(int).to_numpy()
    if len(np.unique(target)) < 2:
        raise TrainingDataError("the target has a single class; a classifier needs buyers and non-buyers")
    return ParsedData(pd.DataFrame(numeric), pd.DataFrame(categorical, dtype=object), target)


def check_size(data: ParsedData) -> None:
    """Too few rows fit a meaningless model; refuse them before any fitting."""
    if len(data.target) < MIN_ROWS:
        raise TrainingDataError(f"{len(data.target)} rows are too few to fit {N_FEATURES} features with a "
                                f"held-out check; at least {MIN_ROWS} are needed")
