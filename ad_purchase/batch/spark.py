"""Batch scoring as a Spark job, for what outgrows one machine.

    python score.py IN -o OUT_DIR --engine spark [--master local[*]] [--rejects REJECTS_DIR]
    spark-submit --master spark://HOST:7077 score.py IN -o OUT_DIR --engine spark

Spark schedules; the tasks do the work.  The driver cuts the input into shares (batch/shares.py:
byte ranges of a CSV, runs of Parquet row groups) and each task runs the local engine's own
loop over its share: the file reader, the decoding core, the prediction service, and a Parquet
part file written by the task itself.  Rows never pass through the JVM: handing them to Spark
and back cost the JVM a conversion per cell, and on the CSV path that was half of all the
work (docs/performance.md).  Spark gives what it is good at: tasks spread over a cluster's
cores, a task that fails run again, the package, the model and the Python environment shipped
to every executor.

Rows are numbered only when no id column is given, from a count of each CSV share's line
breaks (on the driver for a local file, else by a short job first; Parquet footers say it for
free).  Without --rejects the first bad value
stops the job from the executor that met it; with an id column its data row is then found by
counting on the driver.

Every path must mean the same file on every machine: a shared disk, or a URI of a file system
pyarrow reaches (hdfs://, s3:// or s3a://, gs://, abfs://).  PySpark is optional:
`pip install pyspark==4.3.0` (it needs a Java 17 runtime).
"""
from __future__ import annotations

import hashlib
import json
import re
import os
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .. import HOME
from ..core import PredictionService
from ..model import Model, artifacts, load_model
from ..schema import InputError
from .files import Sink, Source
from .local import ROW_ID_COLUMN, BadValues, Stopped, describe, no_rejects, no_scores, run_stamp, score_batches
from .shares import Share, count_lines, input_files, numbered, plan
from .storage import Location, PartFolder, StorageError, part_name

STOP_MARK = "ad-purchase-stop:"  # starts the message of an executor that stops the job at a bad value
# Where Spark cannot win on one machine (docs/performance.md): the local engine scores this many
# rows in about the time a Spark job takes to start, before its first row.
SMALL_JOB_ROWS = 1_500_000
CSV_BYTES_PER_ROW = 1_200       # the client's rows, as written to CSV (for the estimate above)

_SERVICES: dict[str, PredictionService] = {}   # per executor process: the model, loaded once


class JobFailed(Exception):
    """The job failed for a reason other than the input's values (a task's error, a lost
    cluster): the message says why."""


@dataclass(frozen=True)
class Plan:
    """What every task needs to know, shipped with the function."""
    model: str                      # the model archive's name among the job's files
    model_path: str                 # the model folder on the driver (local masters fall back to it)
    id_column: str | None
    scores: str                     # the folder the tasks write their scores' parts into
    scores_schema: pa.Schema
    rejects: str | None = None      # the rejects' folder; None: the first bad value stops the job
    rejects_schema: pa.Schema | None = None
    stamp: tuple[tuple[str, str], ...] = ()   # the model version and the run's start, on every row
    chunk_rows: int = 10_000


# ---------------------------------------------------------------------------- on the executors

def _service(plan: Plan) -> PredictionService:
    """The model shipped with the job (its archive, unpacked by Spark), loaded once per process."""
    if plan.model not in _SERVICES:
        from pyspark import SparkFiles
        shipped = Path(SparkFiles.get(plan.model))
        _SERVICES[plan.model] = PredictionService(load_model(shipped if shipped.is_dir() else Path(plan.model_path)))
    return _SERVICES[plan.model]


def _task_cores() -> int:
    """The cores Spark gave this task: the task keeps no more busy (no read-ahead thread)."""
    from pyspark import TaskContext
    context = TaskContext.get()
    return max(1, context.cpus()) if context is not None else 1


def score_share(share: Share, plan: Plan, cores: int = 1) -> tuple[int, int, int, int]:
    """One task's work: its share read, checked, scored; the scores (and rejects) written as its
    own part files.  Returns (share, rows scored, rows set aside, problems)."""
    service = _service(plan)
    source = Source(Location.of(share.uri), plan.id_column, inputs=service.model.numeric_inputs,
                    text_by_default=True, threads=cores)
    shift = 0 if plan.id_column else share.rows_before_file or 0   # row numbers count the earlier files' rows
    scores = Sink(Location.of(plan.scores).child(part_name(share.index)))
    rejects = Sink(Location.of(plan.rejects).child(part_name(share.index))) if plan.rejects else None
    try:
        counts = score_batches(
            source.read(share.part), service, dict(plan.stamp), id_column=plan.id_column, chunk_rows=plan.chunk_rows,
            write=lambda batch: scores.write(_conform(batch, plan.scores_schema, shift)),
            reject=(lambda batch: rejects.write(_conform(batch, plan.rejects_schema, shift))) if rejects else None)
        for sink in (scores, rejects):
            if sink is not None and sink.rows:
                sink.commit()
            elif sink is not None:                    # a share with nothing to write leaves no part
                sink.discard()
    except BaseException as exc:
        for sink in (scores, rejects):
            if sink is not None:
                sink.discard()
        if isinstance(exc, (BadValues, InputError)):
            raise _stop(share, exc) from None
        raise
    return share.index, counts.scored, counts.set_aside, counts.problems


def _conform(batch: pa.RecordBatch, schema: pa.Schema, shift: int) -> pa.RecordBatch:
    """A batch in the job's declared types (an id column read as text, say, declared long, so
    that every part agrees), its first column (the row numbers) moved on by `shift`."""
    columns = [batch.column(i).cast(field.type) if batch.column(i).type != field.type else batch.column(i)
               for i, field in enumerate(schema)]
    if shift:
        columns[0] = pc.add(columns[0], shift)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _stop(share: Share, exc: BaseException) -> RuntimeError:
    """What stops the job: the message, when the share's rows have their numbers; otherwise just
    the share, whose rows the driver numbers to say where."""
    message = None
    if share.numbered:
        message = describe(exc.errors, share.uri) if isinstance(exc, BadValues) else exc.detail
    return RuntimeError(STOP_MARK + json.dumps({"share": share.index, "message": message}))


# ---------------------------------------------------------------------------- on the driver

# PySpark warns that it does not yet fully support pandas 3; the job uses none of pandas.
_PANDAS_WARNING = "ignore:PySpark does not yet fully support pandas:FutureWarning"


def _context(master: str, quiet_progress: bool):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)      # executors run this interpreter
    os.environ.setdefault("PYTHONWARNINGS", _PANDAS_WARNING)      # executors inherit it
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    from pyspark import SparkConf, SparkContext
    conf = SparkConf().setAppName("ad-purchase-score").set("spark.ui.enabled", "false")
    conf.set("spark.ui.showConsoleProgress", "false" if quiet_progress else "true")
    if "PYSPARK_GATEWAY_PORT" not in os.environ:                 # not under spark-submit: we start the JVM
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        log_config = Path(__file__).with_name("log4j2.properties")
        conf.setMaster(master).set("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log_config}")
    context = SparkContext.getOrCreate(conf)
    context.setLogLevel("ERROR")
    return context


def _ship(context, model_dir: Path, scratch: Path) -> str:
    """The package and the model folder as archives every executor gets with the job (a
    cluster's executors have no checkout, and Spark ships no local folder to them).  Returns
    the model archive's name."""
    package = scratch / "ad_purchase.zip"
    with zipfile.ZipFile(package, "w") as zipped:
        for path in sorted((HOME / "ad_purchase").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zipped.write(path, path.relative_to(HOME))
    context.addPyFile(str(package))
    digest = hashlib.sha256()
    files = [model_dir / name for name in (*artifacts.ARTIFACT_FILES, artifacts.METADATA_FILE)]
    for path in files:
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0" + path.read_bytes())
    name = f"model-{digest.hexdigest()[:16]}.zip"        # a new model is a new name on long-lived executors
    with zipfile.ZipFile(scratch / name, "w") as zipped:
        for path in files:
            zipped.write(path, path.relative_to(model_dir))
    context.addArchive(str(scratch / name))
    return name


def _sources(uri: str, id_column: str | None, model: Model) -> list[Source]:
    """The input's files, opened on the driver: every header or footer checked before any task."""
    try:
        files = input_files(Location.of(uri))
        if not files:
            raise Stopped(f"{uri}: the folder holds no files to score")
        sources = [Source(f, id_column, inputs=model.numeric_inputs, text_by_default=True) for f in files]
    except (InputError, StorageError) as exc:
        raise Stopped(exc.detail if isinstance(exc, InputError) else str(exc)) from None
    except OSError as exc:
        raise Stopped(f"{uri}: {exc.strerror or exc}") from None
    return sources


def _id_type(sources: list[Source], id_column: str | None) -> pa.DataType:
    if not id_column:
        return pa.int64()
    if sources[0].format == "csv":
        return pa.string()
    return sources[0].parquet_metadata.schema.to_arrow_schema().field(id_column).type


def small_job_note(sources: list[Source]) -> str | None:
    """One line when the input is small enough that the local engine would be faster."""
    rows = sum(s.total_rows if s.format == "parquet" else s.location.size() // CSV_BYTES_PER_ROW for s in sources)
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
    model_dir = Path(args.model_dir)
    try:
        artifacts.verify(model_dir)
        model = load_model(model_dir)
    except artifacts.ArtifactError as exc:
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return 1
    sources = _sources(args.input, args.id_column, model)
    note = small_job_note(sources)
    if note:
        print(note, file=sys.stderr)
    starting = time.perf_counter()
    context = _context(args.master, args.no_progress)
    master = context.master                          # spark-submit's --master when it started us
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            shipped = _ship(context, model_dir.resolve(), Path(scratch))
            rows, set_aside = _score(context, sources, shipped, model_dir.resolve(), model, args)
    except JobFailed as exc:
        print(f"error: the Spark job failed: {exc}\nerror: no output was written", file=sys.stderr)
        return 1
    finally:
        context.stop()
    seconds = time.perf_counter() - started
    aside = f"; set aside {set_aside:,} row(s) in {args.rejects}" if args.rejects else ""
    print(f"scored {rows:,} rows in {seconds:.1f} s with Spark ({master}, which took "
          f"{started - starting:.1f} s to start); wrote {args.output}{aside}", file=sys.stderr)
    return 0


def _score(context, sources: list[Source], shipped: str, model_dir: Path, model: Model, args) -> tuple[int, int]:
    """The job: shares planned (and numbered, when rows need numbers), scored by the tasks into
    part folders that appear whole at the end."""
    shares = plan(sources, context.defaultParallelism)
    if not args.id_column and not all(share.numbered for share in shares):
        if all(Location.of(share.uri).local for share in shares):
            # A count of line breaks goes at the speed of reading (memory bandwidth, for a file
            # the system has cached): here it costs less than starting the executors' Python
            # workers for a job of its own.
            counted = [count_lines(share) for share in shares]
        else:                                         # elsewhere: counted next to the data
            counted = context.parallelize(shares, len(shares)).map(count_lines).collect()
        shares = numbered(shares, dict(counted))
    id_name, id_type = args.id_column or ROW_ID_COLUMN, _id_type(sources, args.id_column)
    stamp = run_stamp(model)
    outputs = [PartFolder(Location.of(args.output))]
    if args.rejects:
        outputs.append(PartFolder(Location.of(args.rejects)))
    try:
        job = Plan(shipped, str(model_dir), args.id_column,
                   scores=outputs[0].where.address, scores_schema=no_scores(model, id_name, stamp, id_type),
                   rejects=outputs[1].where.address if args.rejects else None,
                   rejects_schema=no_rejects(id_name, id_type) if args.rejects else None,
                   stamp=tuple(stamp.items()), chunk_rows=args.chunk_rows)

        def scoring(shares, job=job):
            from threadpoolctl import threadpool_limits
            cores = _task_cores()
            pa.set_cpu_count(cores)                       # pyarrow's threads, and BLAS's, to the task's cores
            with threadpool_limits(limits=cores):
                return [score_share(share, job, cores) for share in shares]
        try:
            reports = context.parallelize(shares, len(shares)).mapPartitions(scoring).collect()
        except Exception as exc:                          # noqa: BLE001  (a stop from an executor, or not)
            stop = _stopped(exc)
            if stop is None:
                raise JobFailed(_failure(exc)) from None
            raise Stopped(stop["message"] or _explain(shares[stop["share"]], shares, job, model)) from None
        rows, set_aside = sum(r[1] for r in reports), sum(r[2] for r in reports)
        if not rows and not set_aside:
            raise Stopped(f"{args.input}: the input has a header row but no data rows")
        for folder, schema, written in ((outputs[0], job.scores_schema, rows),
                                        *([(outputs[1], job.rejects_schema, sum(r[3] for r in reports))]
                                          if args.rejects else [])):
            if not written:                               # an empty part: the folder still has the columns
                sink = Sink(folder.where.child(part_name(0)))
                sink.write_empty(schema)
                sink.commit()
            folder.commit()
    except BaseException:
        for folder in outputs:
            folder.discard()
        raise
    return rows, set_aside


def _explain(failed: Share, shares: list[Share], job: Plan, model: Model) -> str:
    """Where a share stopped, said with data-row numbers: the rows before it in its file counted
    here, and the share read again on the driver up to its first problem."""
    in_file = [count_lines(s)[1] for s in shares[:failed.index] if s.uri == failed.uri]
    share = failed.with_rows(sum(in_file), 0)
    service = PredictionService(model)
    source = Source(Location.of(share.uri), job.id_column, inputs=model.numeric_inputs, text_by_default=True)
    try:
        score_batches(source.read(share.part), service, dict(job.stamp), id_column=job.id_column,
                      write=lambda batch: None, reject=None, chunk_rows=job.chunk_rows)
    except BadValues as exc:
        return describe(exc.errors, share.uri)
    except InputError as exc:
        return exc.detail
    return f"{share.uri}: a task stopped, and its share reads cleanly on the driver"


def _stopped(exc: BaseException) -> dict | None:
    """What an executor said when it stopped the job, found in the failure Spark reports."""
    text = str(exc)
    at = text.find(STOP_MARK)
    if at == -1:
        return None
    try:
        return json.JSONDecoder().raw_decode(text, at + len(STOP_MARK))[0]
    except ValueError:
        return None


def _failure(exc: BaseException) -> str:
    """Why a task failed other than at a bad value, in one line: the Python exception the task
    raised (the last line of its traceback, within Spark's report), else Spark's first line."""
    text = str(exc)
    raised = re.findall(r"^(\w+(?:Error|Exception|Exit|Interrupt)\b.*)$", text, flags=re.MULTILINE)
    if raised:
        return raised[-1][:300]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__
