"""Scoring a file on this machine: read in record batches, checked by the decoding core, scored
by the prediction service, the answers written batch by batch.

By default the first batch holding a bad value stops the run and nothing is written.  With a
rejects file, rows with bad values are set aside there (one line per problem) and every other
row is scored.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa

from ..codecs.arrow_codec import encode, encode_rejects
from ..core import PredictionService
from ..core.decoding import fields_of
from ..model import Model, Scores
from ..schema import SHOWN_ERRORS, InputError
from .files import Batch, Sink, Source, WriteBehind, read_ahead

ROW_ID_COLUMN = "row"          # the id column when the file has none: the 1-based data row
# Every output row says which model scored it and when: a scored file is a record of decisions.
VERSION_COLUMN, SCORED_AT_COLUMN = "model_version", "scored_at"


def run_stamp(model: Model) -> dict[str, str]:
    """The model version and the run's start (UTC, ISO 8601) that every output row carries."""
    return {VERSION_COLUMN: model.version,
            SCORED_AT_COLUMN: datetime.now(timezone.utc).isoformat(timespec="seconds")}


class Stopped(Exception):
    """The file cannot be scored; the message says where and why."""


@dataclass
class Outcome:
    rows_scored: int
    rows_set_aside: int
    problems: int
    seconds: float


def describe(problems: list[dict], source: Path) -> str:
    """Problems as lines for a person reading a terminal; `row` is a data row, the file's line
    less the header (unless quoted values hold line breaks)."""
    lines = [f"{source}: line {p['row'] + 1} (data row {p['row']}), field {p['field']}, "
             f"value {p.get('value', '(absent)')!r}: {p['message']}" for p in problems[:SHOWN_ERRORS]]
    if len(problems) > SHOWN_ERRORS:
        lines.append(f"... and {len(problems) - SHOWN_ERRORS} more invalid value(s) in the same batch")
    return "\n".join(lines)


def _slices(records: pa.RecordBatch, rows: np.ndarray, limit: int):
    for start in range(0, records.num_rows, limit):
        yield records.slice(start, limit), rows[start:start + limit]


class BadValues(Exception):
    """Bad values met where nothing sets them aside: the problems (data row, field, value, why)."""

    def __init__(self, errors: list[dict]) -> None:
        super().__init__(f"{len(errors)} problem(s)")
        self.errors = errors


@dataclass
class Counts:
    scored: int = 0
    set_aside: int = 0
    problems: int = 0


def score_batches(batches: Iterable[Batch], service: PredictionService, stamp: dict[str, str], *,
                  write: Callable[[pa.RecordBatch], None], reject: Callable[[pa.RecordBatch], None] | None,
                  id_column: str | None = None, chunk_rows: int = 10_000, for_csv: bool = False,
                  progress: Callable[[int], None] = lambda rows: None) -> Counts:
    """What both engines do with a file's records: check each batch with the decoding core,
    score what passes, hand the answers to `write` and the problems to `reject` (one line per
    problem); without `reject`, the first batch holding a bad value raises BadValues."""
    id_name = id_column or ROW_ID_COLUMN
    counts = Counts()
    for batch in batches:
        for records, rows in _slices(batch.records, batch.rows, chunk_rows):
            decoded = service.batch_decoder.decode(fields_of(records), records.num_rows, vouched=batch.vouched)
            ids = records.column(id_column) if id_column else pa.array(rows, type=pa.int64())
            if decoded.total:
                errors = decoded.errors(rows)
                if reject is None:
                    raise BadValues(errors)
                id_of = dict(zip(rows.tolist(), ids.to_pylist())) if id_column else {}
                reject(encode_rejects(errors, id_of, id_name))
                counts.problems += len(errors)
                counts.set_aside += records.num_rows - decoded.columns.rows
                ids = ids.filter(pa.array(decoded.kept))
            if decoded.columns.rows:
                scores = service.predict(decoded.columns).scores
                write(encode(scores, ids, id_name, for_csv=for_csv, stamp=stamp))
            counts.scored += decoded.columns.rows
            progress(records.num_rows)
    return counts


def no_scores(model: Model, id_name: str, stamp: dict[str, str], ids: pa.DataType = pa.int64()) -> pa.Schema:
    """The columns of a scores file with no rows (every row set aside)."""
    return encode(_no_scores(model), pa.array([], type=ids), id_name, stamp=stamp).schema


def no_rejects(id_name: str, ids: pa.DataType | None = None) -> pa.Schema:
    """The columns of a rejects file with no rows; `ids`: the id column's type (None: the type
    an empty column of ids gets, as the local engine has always written it)."""
    schema = encode_rejects([], {}, id_name).schema
    return schema.set(0, pa.field(id_name, ids)) if ids is not None else schema


def score_file(source_path: Path, target_path: Path, model: Model, *, id_column: str | None = None,
               rejects_path: Path | None = None, chunk_rows: int = 10_000,
               progress: Callable[[int], None] = lambda rows: None) -> Outcome:
    """Score `source_path` (CSV or Parquet) into `target_path` (CSV or Parquet, by extension)."""
    started = time.perf_counter()
    try:
        source = Source(source_path, id_column, inputs=model.numeric_inputs)
    except InputError as exc:
        raise Stopped(exc.detail) from None
    service = PredictionService(model)
    stamp = run_stamp(model)
    id_name = id_column or ROW_ID_COLUMN
    sink = Sink(target_path)
    rejects = Sink(rejects_path) if rejects_path is not None else None
    writer = WriteBehind(sink)
    try:
        try:
            counts = score_batches(read_ahead(iter(source)), service, stamp, write=writer.write,
                                   reject=rejects.write if rejects is not None else None, id_column=id_column,
                                   chunk_rows=chunk_rows, for_csv=sink.format == "csv", progress=progress)
        except BadValues as exc:
            raise Stopped(describe(exc.errors, source_path)) from None
        writer.close()
        if not counts.scored and not counts.set_aside:
            raise Stopped(f"{source_path}: the file has a header row but no data rows")
        if not sink.rows:                            # every row set aside: the columns all the same
            sink.write_empty(no_scores(model, id_name, stamp))
        if rejects is not None and not rejects.rows:
            rejects.write_empty(no_rejects(id_name))
        sink.commit()
        if rejects is not None:
            rejects.commit()
    except InputError as exc:                      # the file itself cannot be read on
        _abandon(writer, sink, rejects)
        raise Stopped(exc.detail) from None
    except BaseException:
        _abandon(writer, sink, rejects)
        raise
    return Outcome(counts.scored, counts.set_aside, counts.problems, time.perf_counter() - started)


def _abandon(writer: WriteBehind, sink: Sink, rejects: Sink | None) -> None:
    """Nothing of a run that fails is left behind."""
    try:
        writer.close()
    except BaseException:
        pass                                         # the first failure is the one reported
    sink.discard()
    if rejects is not None:
        rejects.discard()


def _no_scores(model: Model) -> Scores:
    names = model.plan.names
    return Scores(names, np.empty((0, len(names))), np.empty(0), np.empty(0, dtype=np.int64))
