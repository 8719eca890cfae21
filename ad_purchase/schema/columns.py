"""Validated input as the model consumes it: what every codec produces."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .fields import CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, NUMERIC_FIELDS

_CATEGORICAL_COLUMN = {field: column for column, field in enumerate(CATEGORICAL_FIELDS)}


@dataclass
class Columns:
    """Rows as two matrices.  `numeric` holds floats (NaN when missing), one column per name in
    `numeric_fields`: at least the model's numeric inputs, every numeric field where the codec
    read them all anyway.  `codes` holds level codes (index into the schema's levels, -1 when
    missing), one column per field of CATEGORICAL_FIELDS."""

    rows: int
    single: bool                          # the body was one record, not a list of them
    numeric_fields: tuple[str, ...]
    numeric: np.ndarray                   # rows x len(numeric_fields), float64
    codes: np.ndarray                     # rows x len(CATEGORICAL_FIELDS), int8
    # When `numeric` holds only some fields: every numeric field of the given rows, read on demand
    # from what the codec kept (monitoring samples a few rows of every request).
    read_all_numeric: Callable[[np.ndarray], np.ndarray] | None = None

    def column(self, field: str) -> np.ndarray:
        """One field's values: floats for a numeric field, level codes for a categorical one."""
        if field in CATEGORICAL_LEVELS:
            return self.codes[:, _CATEGORICAL_COLUMN[field]]
        return self.numeric[:, self.numeric_fields.index(field)]

    def sample(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every numeric field (rows x 96, schema order) and the level codes of the given rows."""
        if self.numeric_fields == NUMERIC_FIELDS:
            return self.numeric[rows], self.codes[rows]
        return self.read_all_numeric(rows), self.codes[rows]
