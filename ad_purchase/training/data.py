"""Training rows in the client's raw format: read by the same file reader as score.py and checked
by the same decoding core as every request, so training and serving can never disagree on what a
value means."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..batch.files import Batch, Source
from ..core.decoding import Decoder, fields_of, read_target
from ..schema import CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, NUMERIC_FIELDS, SHOWN_ERRORS, TARGET, InputError

MIN_ROWS = 100
N_FEATURES = 25


class TrainingDataError(ValueError):
    """The training file cannot be used; the message says where and why."""


@dataclass
class RawData:
    """A training file's records, as the file reader gave them."""

    path: Path
    batches: list[Batch]

    def __len__(self) -> int:
        return sum(batch.records.num_rows for batch in self.batches)


def read_raw_csv(path: Path) -> RawData:
    """Every record of a training file (CSV, or Parquet by its extension) with the fields x0..x99
    and the target y; the values are checked by `parse_raw`."""
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise TrainingDataError(f"{path}: the file is empty")
    try:
        batches = list(Source(path, extra=[TARGET], inputs=NUMERIC_FIELDS, text_by_default=True))
    except InputError as exc:
        raise TrainingDataError(exc.detail) from None
    raw = RawData(path, batches)
    if not len(raw):
        raise TrainingDataError(f"{path}: the file has a header but no rows")
    return raw


@dataclass
class ParsedData:
    numeric: pd.DataFrame          # 96 float columns, NaN where missing
    categorical: pd.DataFrame      # 4 columns of canonical levels, None where missing
    target: np.ndarray             # 0/1


def parse_raw(raw: RawData) -> ParsedData:
    """Every cell read by the decoding core (every numeric field a candidate model input) and the
    target as 0 or 1; all problems are reported together."""
    decoder = Decoder(NUMERIC_FIELDS, cap=None)
    numeric, codes, targets, errors, total = [], [], [], [], 0
    for batch in raw.batches:
        count = batch.records.num_rows
        decoded = decoder.decode(fields_of(batch.records), count)
        target, bad_target = read_target(batch.records.column(TARGET))
        problems = decoded.errors(batch.rows) + [
            {"row": int(batch.rows[index]), "field": TARGET, "value": value, "message": message}
            for index, value, message in bad_target]
        total += decoded.total + len(bad_target)
        errors.extend(sorted(problems, key=lambda p: p["row"])[:SHOWN_ERRORS])
        if not total:
            numeric.append(decoded.columns.numeric)
            codes.append(decoded.columns.codes)
            targets.append(target)
    if total:
        errors.sort(key=lambda p: p["row"])
        shown = "\n  ".join(f"row {p['row']} (line {p['row'] + 1}), {p['field']}={p.get('value')!r}: {p['message']}"
                            for p in errors[:SHOWN_ERRORS])
        more = f"\n  ... and {total - SHOWN_ERRORS} more" if total > SHOWN_ERRORS else ""
        raise TrainingDataError(f"{total} bad value(s) in the training data:\n  {shown}{more}")
    numeric_frame = pd.DataFrame(np.concatenate(numeric), columns=list(decoder.numeric_fields))[list(NUMERIC_FIELDS)]
    all_codes = np.concatenate(codes)
    categorical = pd.DataFrame({field: _levels(field, all_codes[:, i]) for i, field in enumerate(CATEGORICAL_FIELDS)},
                               dtype=object)
    target = np.concatenate(targets)
    if len(np.unique(target)) < 2:
        raise TrainingDataError("the target has a single class; a classifier needs buyers and non-buyers")
    return ParsedData(numeric_frame, categorical, target)


def _levels(field: str, codes: np.ndarray) -> list:
    """Level codes back to the canonical levels (None where missing), as the one-hot step reads them."""
    table = np.array([*CATEGORICAL_LEVELS[field], None], dtype=object)
    return table[codes].tolist()       # code -1 takes the last entry, None


def check_size(data: ParsedData) -> None:
    """Too few rows fit a meaningless model; refuse them before any fitting."""
    if len(data.target) < MIN_ROWS:
        raise TrainingDataError(f"{len(data.target)} rows are too few to fit {N_FEATURES} features with a "
                                f"held-out check; at least {MIN_ROWS} are needed")
