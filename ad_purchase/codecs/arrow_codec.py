"""Scores to Arrow record batches: what score.py and Spark write, and what the CSV answer is
written from.  (Arrow batches coming in go straight to the decoding core.)"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..model import Scores
from ..schema import answer_fields, split_dummy

CONTRIBUTION_PREFIX = "contribution_"


def encode(scores: Scores, ids: pa.Array | None = None, id_column: str | None = None, *,
           contributions: np.ndarray | None = None, for_csv: bool = False,
           stamp: dict[str, str] | None = None) -> pa.RecordBatch:
    """Scores as a record batch: the id column (when given), the answer's columns, then each
    input's contribution (when given) as contribution_<input>, then a column per item of `stamp`
    holding the same text in every row (which model scored the rows, and when).  `for_csv`: the
    0/1 inputs are int8, which a CSV writer gives as "0" and "1" without formatting a float each."""
    position = {name: i for i, name in enumerate(scores.names)}
    columns, names = ([ids], [id_column]) if ids is not None else ([], [])
    for name in answer_fields(scores.names):
        if name == "business_outcome":
            columns.append(pa.array(scores.outcome, type=pa.int64()))
        elif name == "phat":
            columns.append(pa.array(scores.phat, type=pa.float64()))
        elif for_csv and split_dummy(name) is not None:
            columns.append(pa.array(scores.inputs[:, position[name]].astype(np.int8), type=pa.int8()))
        else:
            columns.append(pa.array(scores.inputs[:, position[name]], type=pa.float64()))
        names.append(name)
    if contributions is not None:
        for name in sorted(scores.names):
            columns.append(pa.array(contributions[:, position[name]], type=pa.float64()))
            names.append(CONTRIBUTION_PREFIX + name)
    for name, text in (stamp or {}).items():
        columns.append(pa.repeat(pa.scalar(text, type=pa.string()), len(scores.phat)))
        names.append(name)
    return pa.RecordBatch.from_arrays(columns, names=names)


REJECT_SCHEMA_FIELDS = ("field", "value", "message")


def encode_rejects(problems: list[dict], ids: dict[int, object], id_column: str) -> pa.RecordBatch:
    """One line per problem: the row's id (or data-row number), field, value as text, and why."""
    return pa.RecordBatch.from_arrays(
        [pa.array([ids.get(p["row"], p["row"]) for p in problems]),
         pa.array([p["field"] for p in problems], type=pa.string()),
         pa.array(["" if "value" not in p or p["value"] is None else str(p["value"]) for p in problems],
                  type=pa.string()),
         pa.array([p["message"] for p in problems], type=pa.string())],
        names=[id_column, *REJECT_SCHEMA_FIELDS])
