"""Checked input as the model consumes it: what the decoding core produces, whichever way the
rows came in.  Plain data: monitoring and the model read it, nothing in it reads a request."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fields import CATEGORICAL_FIELDS, CATEGORICAL_LEVELS

_CATEGORICAL_COLUMN = {field: column for column, field in enumerate(CATEGORICAL_FIELDS)}


@dataclass
class Columns:
    """Rows as two matrices.  `numeric` holds floats (NaN when missing), one column per name in
    `numeric_fields` (the model's numeric inputs, in `numeric_input_order`).  `codes` holds level
    codes (index into the schema's levels, -1 when missing), one column per field of
    CATEGORICAL_FIELDS.

    `ids`: the client's own id of each row, where the records carried one.  `sample_rows` and
    `sample_numeric`: every numeric field (NUMERIC_FIELDS order) of a few evenly spaced rows, for
    input-drift monitoring (None when no sample was asked for)."""

    rows: int
    numeric_fields: tuple[str, ...]
    numeric: np.ndarray                   # rows x len(numeric_fields), float64
    codes: np.ndarray                     # rows x len(CATEGORICAL_FIELDS), int8
    single: bool = False                  # the body was one record, not a list of them
    ids: list | None = None
    sample_rows: np.ndarray | None = None
    sample_numeric: np.ndarray | None = None

    def column(self, field: str) -> np.ndarray:
        """One field's values: floats for a numeric field, level codes for a categorical one."""
        if field in CATEGORICAL_LEVELS:
            return self.codes[:, _CATEGORICAL_COLUMN[field]]
        return self.numeric[:, self.numeric_fields.index(field)]
