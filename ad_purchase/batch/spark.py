"""Batch scoring as a Spark job, for what outgrows one machine.

    python score.py IN -o OUT_DIR --engine spark [--master local[*]] [--rejects REJECTS_DIR]
    spark-submit --master spark://HOST:7077 score.py IN -o OUT_DIR --engine spark

The job runs the service's own core: Spark reads the file (any path it reads) and hands each
executor Arrow batches through `mapInArrow`; there the decoding core checks every cell and the
prediction service scores the rows, exactly as on one machine.

What the executors are handed, and why (docs/performance.md has the measurements):

  * a CSV file as its lines, one text column: the executor parses a batch of lines with the
    same CSV codec as the local engine (pyarrow, plain numbers typed and proven), where Spark's
    own CSV reader would build a hundred text columns and convert each to Arrow cell by cell,
    and its number rules are not the schema's;
  * a Parquet file as its columns, as Spark reads them, less the plain fields that the file's
    statistics prove valid (as the local engine's Parquet reader proves them): every column
    handed over costs the JVM a conversion per cell.

One action writes the scores.  The executors report what they set aside, and the counts, with
the job (an accumulator keyed by partition, so a task run twice counts once); without
--rejects the first bad value stops the job from the executor.  Only when no id column is
given are the rows numbered, which takes one scan (partition sizes) before the job.

The model folder and the package travel with the job as archives (`addArchive`, `addPyFile`),
so a cluster's executors need neither a checkout nor a shared disk.  On a cluster the Python
environment travels too: see deploy/spark/ and docs/operations.md.

PySpark is optional: `pip install pyspark==4.3.0` (it needs a Java 17 runtime).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import HOME
from ..atomic import Staged
from ..codecs.arrow_codec import encode, encode_rejects
from ..codecs.csv_codec import header_names, read_records, unreadable, without_blank_lines
from ..core import PredictionService
from ..core.decoding import check_fields, fields_of
from ..model import artifacts, load_model
from ..schema import FIELDS, PLAIN_FIELDS, SHOWN_ERRORS, InputError, answer_fields
from .files import _vouched_by_statistics
from .local import ROW_ID_COLUMN, SCORED_AT_COLUMN, VERSION_COLUMN, Stopped, describe, run_stamp

LINE = "value"                  # the one column of Spark's text source
STOP_MARK = "ad-purchase-stop:"  # starts the message of an executor that stops the job at a bad value
# Problems an executor hands back with the job, per partition; beyond that the rejects are
# written by a second pass over the input instead (memory on the driver stays bounded).
REJECTS_IN_MEMORY = 20_000
# Where Spark cannot win (measured in docs/performance.md): the local engine scores this many
# rows in about the time a Spark job takes to start, before its first row.
SMALL_JOB_ROWS = 1_500_000
CSV_BYTES_PER_ROW = 1_200
CODEGEN_MAX_FIELDS = 400
MAX_SPLIT_BYTES = "1g"
LOCAL_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"     # a local master's JVM: the quick JIT tier only       # the client's rows, as written to CSV (for the estimate above)

_SERVICES: dict[str, PredictionService] = {}   # per executor process: the model, loaded once


@dataclass(frozen=True)
class Plan:
    """What every task of the job needs to know, shipped with the function."""
    model: str                     # the model archive's name among the job's files
    model_path: str                # the model folder on the driver (local masters fall back to it)
    lines: bool                    # CSV lines (parsed by the codec) rather than columns
    names: tuple[str, ...]         # the CSV header's names
    id_column: str | None
    offsets: dict[int, int] | None  # rows before each partition; None: numbered within partitions
    stop: bool                     # no rejects: the first bad value stops the job
    vouched: tuple[str, ...] = ()   # Parquet fields its statistics prove valid: not read at all
    stamp: tuple[tuple[str, str], ...] = ()   # the model version and the run's start, on every row
    emit: str = "scores"           # "scores", or "rejects" (the second pass, when there were many)
    kept_rejects: int = REJECTS_IN_MEMORY   # problems a partition hands back with the job, at most

    @property
    def columns(self) -> list[str]:
        return [*FIELDS, *([self.id_column] if self.id_column else [])]


# ---------------------------------------------------------------------------- on the executors

def _service(plan: Plan) -> PredictionService:
    """The model shipped with the job (its archive, unpacked by Spark), loaded once per process."""
    if plan.model not in _SERVICES:
        from pyspark import SparkFiles
        shipped = Path(SparkFiles.get(plan.model))
        _SERVICES[plan.model] = PredictionService(load_model(shipped if shipped.is_dir() else Path(plan.model_path)))
    return _SERVICES[plan.model]


def _records(batch: pa.RecordBatch, plan: Plan, before: int, partition: int
             ) -> tuple[pa.RecordBatch, np.ndarray, frozenset]:
    """A batch as the decoding core takes it: the records, their data-row numbers (`before`
    rows precede the batch) and the fields its reader proved valid in every row."""
    count = batch.num_rows
    rows = np.arange(before + 1, before + 1 + count, dtype=np.int64)
    if not plan.lines:
        return batch, rows, frozenset(plan.vouched)
    lines = batch.column(0)
    # One buffer of the lines, each ending in a line break, parsed as the local engine parses a
    # piece of a file.  The empty string added last gives the last line its line break.
    listed = pa.ListArray.from_arrays(pa.array([0, count + 1], pa.int32()),
                                      pa.concat_arrays([lines.cast(pa.string()), pa.array([""])]))
    text = pc.binary_join(listed, "\n")[0].as_buffer()
    try:
        records, typed = read_records(text, plan.names, plan.columns)
    except pa.ArrowInvalid as exc:
        row, why = unreadable(text, exc, plan.names, plan.columns)
        raise _stop("data row {row} cannot be read as CSV: " + why, row=before + (row or 1), partition=partition,
                    numbered=plan.offsets is not None) from None
    if records.num_rows != count:
        raise _stop("near data row {row}: a quoted value holds a line break, which Spark splits into separate "
                    "lines: score this file with the local engine", row=before + 1, partition=partition,
                    numbered=plan.offsets is not None)
    records, rows = without_blank_lines(text, records, rows)     # a blank line: a row, not scored
    return records, rows, frozenset(PLAIN_FIELDS) if typed else frozenset()


def _stop(message: str, **extra) -> RuntimeError:
    return RuntimeError(STOP_MARK + json.dumps({"message": message, **extra}, default=str))


def score_partition(batches: Iterator[pa.RecordBatch], plan: Plan, schema: pa.Schema,
                    report=None) -> Iterator[pa.RecordBatch]:
    """mapInArrow's function: a partition's records in, their scores out in `schema` (or, in
    the rejects pass, a row per problem).  `report` (an accumulator) gets the partition's
    counts and, when few enough, its problems as Arrow IPC bytes."""
    from pyspark import TaskContext
    service = _service(plan)
    context = TaskContext.get()
    partition = context.partitionId() if context is not None else 0
    before = plan.offsets.get(partition, 0) if plan.offsets is not None else 0
    id_name = plan.id_column or ROW_ID_COLUMN
    scored = set_aside = problems = 0
    rejects: list[pa.RecordBatch] | None = []
    for batch in batches:
        records, rows, vouched = _records(batch, plan, before, partition)
        before += batch.num_rows
        if not records.num_rows:
            continue
        decoded = service.batch_decoder.decode(fields_of(records), records.num_rows,
                                               vouched=tuple(vouched))
        ids = records.column(plan.id_column) if plan.id_column else pa.array(rows, type=pa.int64())
        if decoded.total:
            errors = decoded.errors(rows)
            if plan.stop:
                raise _stop("", problems=errors[:SHOWN_ERRORS + 1], partition=partition,
                            numbered=plan.offsets is not None)
            id_of = dict(zip(rows.tolist(), ids.to_pylist())) if plan.id_column else {}
            found = encode_rejects(errors, id_of, id_name)
            if plan.emit == "rejects":
                yield _conform(found, schema)
            elif rejects is not None:
                rejects.append(found)
                if sum(b.num_rows for b in rejects) > plan.kept_rejects:
                    rejects = None               # too many to hand back: a second pass writes them
            problems += len(errors)
            set_aside += records.num_rows - decoded.columns.rows
            ids = ids.filter(pa.array(decoded.kept))
        if decoded.columns.rows and plan.emit == "scores":
            yield _conform(encode(service.predict(decoded.columns).scores, ids, id_name, stamp=dict(plan.stamp)),
                           schema)
        scored += decoded.columns.rows
    if report is not None:
        report.add({partition: (scored, set_aside, problems, _ipc(rejects))})


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch in the job's declared types (an id column read as text, say, declared long)."""
    if batch.schema.equals(schema):
        return batch
    return pa.RecordBatch.from_arrays([batch.column(i).cast(f.type) for i, f in enumerate(schema)], schema=schema)


def _ipc(batches: list[pa.RecordBatch] | None) -> bytes | None:
    if batches is None:
        return None
    if not batches:
        return b""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


# ---------------------------------------------------------------------------- on the driver

# PySpark warns that it does not yet fully support pandas 3; mapInArrow uses none of pandas.
_PANDAS_WARNING = "ignore:PySpark does not yet fully support pandas:FutureWarning"


def _session(master: str, quiet_progress: bool):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)      # executors run this interpreter
    os.environ.setdefault("PYTHONWARNINGS", _PANDAS_WARNING)      # executors inherit it
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    from pyspark.sql import SparkSession
    builder = SparkSession.builder.appName("ad-purchase-score").config("spark.ui.enabled", "false")
    builder = builder.config("spark.ui.showConsoleProgress", "false" if quiet_progress else "true")
    # A row of the input has 100 fields, Spark's default limit for compiling a stage: above it
    # the Parquet scan and the check of the typed fields ran interpreted, row by row.
    builder = builder.config("spark.sql.codegen.maxFields", str(CODEGEN_MAX_FIELDS))
    # Splits of about a core's share of the input (Spark's own rule, without its 128 MB cap): a
    # Parquet row group goes whole to the split holding its middle, and 128 MB splits of four
    # row groups gave two cores three tasks, one of them twice as long.
    builder = builder.config("spark.sql.files.maxPartitionBytes", MAX_SPLIT_BYTES)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:                 # not under spark-submit: we start the JVM
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        log_config = Path(__file__).with_name("log4j2.properties")
        options = f"-Dlog4j2.configurationFile=file:{log_config}"
        if master.startswith("local"):
            # The driver is the executor, and lives for one job: the JIT's optimising tier cost
            # more CPU than it saved (half the JVM's CPU on a 400,000-row file, measured).
            options += " " + LOCAL_JVM_OPTIONS
        builder = builder.master(master).config("spark.driver.extraJavaOptions", options)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _ship(spark, model_dir: Path, scratch: Path) -> str:
    """The package and the model folder as archives every executor gets with the job (a
    cluster's executors have no checkout, and Spark ships no local folder to them).  Returns
    the model archive's name."""
    package = scratch / "ad_purchase.zip"
    with zipfile.ZipFile(package, "w") as zipped:
        for path in sorted((HOME / "ad_purchase").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zipped.write(path, path.relative_to(HOME))
    spark.sparkContext.addPyFile(str(package))
    digest = hashlib.sha256()
    files = [model_dir / name for name in (*artifacts.ARTIFACT_FILES, artifacts.METADATA_FILE)]
    for path in files:
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0" + path.read_bytes())
    name = f"model-{digest.hexdigest()[:16]}.zip"        # a new model is a new name on long-lived executors
    with zipfile.ZipFile(scratch / name, "w") as zipped:
        for path in files:
            zipped.write(path, path.relative_to(model_dir))
    spark.sparkContext.addArchive(str(scratch / name))
    return name


def _is_local(path: str) -> bool:
    return urlparse(path).scheme in ("", "file")


def _local_path(path: str) -> Path:
    return Path(urlparse(path).path if path.startswith("file:") else path)


def _is_parquet(source: str) -> bool:
    return source.lower().endswith((".parquet", ".pq")) or (_is_local(source) and _local_path(source).is_dir()
                                                             and any(_local_path(source).glob("*.parquet")))


def _header(spark, source: str) -> str:
    """A CSV source's first line as Spark's text source gives it."""
    if _is_local(source) and _local_path(source).is_file():
        with open(_local_path(source), "rb") as handle:
            return handle.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    first = spark.read.text(source).first()
    return first[0] if first is not None else ""


def _read(spark, source: str, id_column: str | None, inputs=()) -> tuple:
    """The input as Spark hands it to the executors, the CSV header's names (if CSV), whether
    it is CSV lines, and the Parquet fields left unread (proven valid by the files' statistics)."""
    from pyspark.sql import functions as F
    also = [id_column] if id_column else []
    if _is_parquet(source):
        frame = spark.read.parquet(source)
        _check(frame.columns, f"{source}: the file", also)
        vouched = _vouched(source, inputs)
        return frame.select(*[f for f in FIELDS if f not in vouched], *also), (), False, vouched
    line = _header(spark, source)
    try:
        names = tuple(header_names(line.encode()))
    except ValueError:
        raise Stopped(f"{source}: the header row cannot be read as CSV") from None
    if not names:
        raise Stopped(f"{source}: the file is empty; it needs a header row naming x0..x99")
    _check(names, f"{source}: the file", also)
    # Each file's header line is not a record (a directory of CSV files has one per file).
    return spark.read.text(source).filter(F.col(LINE) != line), names, True, ()


def _vouched(source: str, inputs) -> tuple[str, ...]:
    """Plain fields, not model inputs, that every row group's statistics prove valid (the local
    Parquet reader's proof): Spark need not read them, nor hand them to Python, where each of the
    hundred columns costs the JVM a conversion per cell.  Local files only (their footers are
    read here); elsewhere every field is read."""
    if not _is_local(source):
        return ()
    path = _local_path(source)
    proven = None
    try:
        for name in [path] if path.is_file() else sorted(path.glob("*.parquet")):
            footer = pq.ParquetFile(name)
            for group in range(footer.metadata.num_row_groups):
                found = _vouched_by_statistics(footer.schema_arrow, footer.metadata.row_group(group))
                proven = found if proven is None else proven & found
    except (OSError, pa.ArrowException):
        return ()
    return tuple(sorted((proven or frozenset()) - set(inputs)))


def _check(names, where: str, also: list[str]) -> None:
    try:
        check_fields(names, where, also)
    except InputError as exc:
        raise Stopped(exc.detail) from None


def _offsets(frame) -> dict[int, int]:
    """Rows before each partition, in file order: one scan of the input that only counts."""
    from pyspark.sql import functions as F
    counts = dict(frame.select(F.spark_partition_id().alias("p")).groupBy("p").count().collect())
    offsets, total = {}, 0
    for p in sorted(counts):
        offsets[p], total = total, total + counts[p]
    return offsets


def _score_schema(model, frame, id_column: str | None) -> pa.Schema:
    """The local engine's columns: the id, the answer's, then the run's stamp."""
    fields = [_id_field(frame, id_column)]
    fields += [pa.field(name, pa.int64() if name == "business_outcome" else pa.float64())
               for name in answer_fields(model.plan.names)]
    fields += [pa.field(name, pa.string()) for name in (VERSION_COLUMN, SCORED_AT_COLUMN)]
    return pa.schema(fields)


def _rejects_schema(frame, id_column: str | None) -> pa.Schema:
    return pa.schema([_id_field(frame, id_column), *(pa.field(n, pa.string()) for n in ("field", "value", "message"))])


def _id_field(frame, id_column: str | None) -> pa.Field:
    if not id_column:
        return pa.field(ROW_ID_COLUMN, pa.int64())
    if LINE in frame.columns:                          # parsed from CSV text
        return pa.field(id_column, pa.string())
    from pyspark.sql.pandas.types import to_arrow_type
    return pa.field(id_column, to_arrow_type(frame.schema[id_column].dataType))


def _write(frame, target: str) -> None:
    """A directory of Parquet part files that appears only when complete (local paths: written
    beside the target and renamed; other file systems: Spark's own job commit)."""
    if not _is_local(target):
        frame.write.mode("overwrite").parquet(target)
        return
    with Staged(_local_path(target), folder=True) as staged:
        frame.write.mode("overwrite").parquet(str(staged.path))


def _write_table(spark, table: pa.Table, target: str) -> None:
    """Rejects handed back with the job, written as the scores are: a directory of Parquet."""
    if not _is_local(target):
        spark.createDataFrame(table).write.mode("overwrite").parquet(target)
        return
    with Staged(_local_path(target), folder=True) as staged:
        staged.path.mkdir()
        pq.write_table(table, staged.path / "part-00000.parquet")


class _Reports:
    """The accumulator's arithmetic: dictionaries of partition -> report, merged."""

    @staticmethod
    def zero(value):
        return {}

    @staticmethod
    def addInPlace(one, other):
        one.update(other)
        return one


def small_job_note(source: str, master: str) -> str | None:
    """One line when the input is small enough that the local engine would be faster."""
    if not _is_local(source):
        return None
    path = _local_path(source)
    try:
        if _is_parquet(source):
            files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
            rows = sum(pq.read_metadata(f).num_rows for f in files)
        elif path.is_file():
            rows = path.stat().st_size // CSV_BYTES_PER_ROW
        else:
            return None
    except (OSError, pa.ArrowException):
        return None
    if rows >= SMALL_JOB_ROWS:
        return None
    return (f"note: about {rows:,} rows is below what Spark can win on (about {SMALL_JOB_ROWS:,}, its start-up "
            f"alone takes as long as the local engine takes for that many): drop --engine spark to score faster")


def run(args) -> int:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        print("error: --engine spark needs PySpark: pip install pyspark==4.3.0 (and a Java 17 runtime)",
              file=sys.stderr)
        return 1
    from pyspark.errors import AnalysisException
    from py4j.protocol import Py4JJavaError

    model_dir = Path(args.model_dir)
    try:
        artifacts.verify(model_dir)
        model = load_model(model_dir)
    except artifacts.ArtifactError as exc:
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return 1
    note = small_job_note(args.input, args.master)
    if note:
        print(note, file=sys.stderr)
    starting = time.perf_counter()
    spark = _session(args.master, args.no_progress)
    master = spark.sparkContext.master                  # spark-submit's --master when it started us
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            shipped = _ship(spark, model_dir.resolve(), Path(scratch))
            frame, names, lines, vouched = _read(spark, args.input, args.id_column, model.numeric_inputs)
            plan = Plan(shipped, str(model_dir.resolve()), lines, names, args.id_column,
                        None if args.id_column else _offsets(frame), stop=not args.rejects, vouched=vouched,
                        stamp=tuple(run_stamp(model).items()),
                        kept_rejects=REJECTS_IN_MEMORY)
            outcome = _score(spark, frame, plan, model, args)
    except AnalysisException as exc:
        raise Stopped(f"{args.input}: {str(exc).splitlines()[0]}") from None
    except Py4JJavaError as exc:
        raise Stopped(f"{args.input}: {_java_reason(exc)}") from None
    finally:
        spark.stop()
    rows, set_aside = outcome
    seconds = time.perf_counter() - started
    aside = f"; set aside {set_aside:,} row(s) in {args.rejects}" if args.rejects else ""
    print(f"scored {rows:,} rows in {seconds:.1f} s with Spark ({master}, which took "
          f"{started - starting:.1f} s to start); wrote {args.output}{aside}", file=sys.stderr)
    return 0


def _score(spark, frame, plan: Plan, model, args) -> tuple[int, int]:
    """The one job: scores written, rejects and counts handed back; the rejects written after."""
    from pyspark.sql.pandas.types import from_arrow_schema
    reports = spark.sparkContext.accumulator({}, _Reports())
    schema = _score_schema(model, frame, args.id_column)

    def scoring(batches, plan=plan, schema=schema, report=reports):
        return score_partition(batches, plan, schema, report)
    try:
        _write(frame.mapInArrow(scoring, from_arrow_schema(schema)), args.output)
    except Exception as exc:                              # noqa: BLE001  (a stop from an executor, or not)
        stop = _stopped(exc)
        if stop is None:
            raise
        raise Stopped(_stop_message(stop, frame, plan, args.input)) from None
    found = reports.value
    rows = sum(r[0] for r in found.values())
    set_aside = sum(r[1] for r in found.values())
    if args.rejects:
        rejects_schema = _rejects_schema(frame, args.id_column)
        if any(r[3] is None for r in found.values()):        # too many to hand back: a pass of their own
            again = Plan(**{**plan.__dict__, "emit": "rejects"})

            def rejecting(batches, plan=again, schema=rejects_schema):
                return score_partition(batches, plan, schema)
            _write(frame.mapInArrow(rejecting, from_arrow_schema(rejects_schema)), args.rejects)
        else:
            batches = [batch for _, report in sorted(found.items()) if report[3]
                       for batch in pa.ipc.open_stream(report[3])]
            table = pa.Table.from_batches([_conform(b, rejects_schema) for b in batches], rejects_schema)
            _write_table(spark, table, args.rejects)
    return rows, set_aside


def _stopped(exc: BaseException) -> dict | None:
    """What an executor said when it stopped the job, found in the failure Spark reports."""
    found = re.search(re.escape(STOP_MARK) + r"(\{.*\})", str(exc))
    return json.loads(found.group(1)) if found else None


def _stop_message(stop: dict, frame, plan: Plan, source: str) -> str:
    # Rows counted within their partition (no row numbers were needed): numbered now.
    before = 0 if stop["numbered"] else _offsets(frame).get(stop["partition"], 0)
    if stop["message"]:
        return f"{source}: " + stop["message"].format(row=stop["row"] + before)
    problems = [dict(p, row=p["row"] + before) for p in stop["problems"]]
    shown = describe(problems[:SHOWN_ERRORS], Path(source))
    return shown + ("\n... and more invalid value(s)" if len(problems) > SHOWN_ERRORS else "")


def _java_reason(exc) -> str:
    """The innermost message of a Java exception (a malformed CSV record, say), on one line."""
    cause, message = exc.java_exception, ""
    while cause is not None:
        message = str(cause.getMessage() or message)
        cause = cause.getCause()
    return message.splitlines()[0][:300] if message else "the Spark job failed"
