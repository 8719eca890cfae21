"""Batch scoring as a Spark job, for what outgrows one machine.

    python score.py IN -o OUT_DIR --engine spark [--master local[*]] [--rejects REJECTS_DIR]
    spark-submit --master yarn score.py IN -o OUT_DIR --engine spark

The job runs the service's own core: Spark reads the file (any path it reads, CSV or Parquet),
hands each executor Arrow batches through `mapInArrow`, and there the decoding core checks every
cell and the prediction service scores the rows, exactly as on one machine.  The model folder is shipped to the executors with the job (`addFile`) and loaded once
per executor process; the package is shipped as a zip the same way.  Scores and rejects are
written as directories of Parquet part files.

PySpark is optional: `pip install pyspark==4.3.0` (it needs a Java 17 runtime).
"""
from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from .. import HOME
from ..atomic import Staged
from ..codecs.arrow_codec import REJECT_SCHEMA_FIELDS, encode, encode_rejects
from ..core import PredictionService
from ..core.decoding import check_fields, fields_of
from ..model import artifacts, load_model
from ..schema import FIELDS, InputError, answer_fields
from .local import ROW_ID_COLUMN, Stopped, describe

STATUS = "_status"                          # "ok" for a scored row, "reject" for a problem
ROW = "_row"                                # the 1-based data-row number the job gives each record
_SERVICES: dict[str, PredictionService] = {}   # per executor process: the model, loaded once


# ---------------------------------------------------------------------------- on the executors

def _service(name: str, fallback: str) -> PredictionService:
    """The model shipped with the job under `name` (or at `fallback`, a path every executor sees)."""
    if name not in _SERVICES:
        from pyspark import SparkFiles
        shipped = Path(SparkFiles.get(name))
        _SERVICES[name] = PredictionService(load_model(shipped if shipped.is_dir() else Path(fallback)))
    return _SERVICES[name]


def score_partition(batches: Iterator[pa.RecordBatch], model_name: str, model_path: str, id_column: str | None,
                    schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """mapInArrow's function: records in, one row out per scored record (status "ok") and one per
    problem of a refused record (status "reject"), in `schema`'s columns."""
    service = _service(model_name, model_path)
    for batch in batches:
        rows = np.asarray(batch.column(ROW).to_numpy(zero_copy_only=False), dtype=np.int64)
        decoded = service.batch_decoder.decode(fields_of(batch), batch.num_rows)
        if decoded.columns.rows:
            kept = None if decoded.kept is None else pa.array(decoded.kept)
            scores = service.predict(decoded.columns).scores
            scored = encode(scores, pa.array(rows if kept is None else rows[decoded.kept]), ROW)
            columns = dict(zip(scored.schema.names, scored.columns))
            if id_column:
                ids = batch.column(id_column)
                columns[id_column] = ids if kept is None else ids.filter(kept)
            yield _in_schema(columns, scored.num_rows, "ok", schema)
        if decoded.total:
            problems = decoded.errors(rows)
            rejected = encode_rejects(problems, {}, ROW)
            columns = dict(zip(rejected.schema.names, rejected.columns))
            if id_column:
                id_of = dict(zip(rows.tolist(), batch.column(id_column).to_pylist()))
                columns[id_column] = pa.array([id_of[p["row"]] for p in problems])
            yield _in_schema(columns, rejected.num_rows, "reject", schema)


def _in_schema(columns: dict[str, pa.Array], count: int, status: str, schema: pa.Schema) -> pa.RecordBatch:
    """`columns` and the status as a batch of the job's rows; the columns not given are null."""
    columns[STATUS] = pa.array([status] * count, type=pa.string())
    return pa.RecordBatch.from_arrays(
        [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(count, f.type) for f in schema], schema=schema)


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
    if "PYSPARK_GATEWAY_PORT" not in os.environ:                 # not under spark-submit: we start the JVM
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        log_config = Path(__file__).with_name("log4j2.properties")
        builder = builder.master(master).config("spark.driver.extraJavaOptions",
                                                f"-Dlog4j2.configurationFile=file:{log_config}")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _ship_package(spark, scratch: Path) -> None:
    """The package as a zip on every executor's path (a cluster's executors have no checkout)."""
    archive = scratch / "ad_purchase.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in (HOME / "ad_purchase").rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                zipped.write(path, path.relative_to(HOME))
    spark.sparkContext.addPyFile(str(archive))


def _is_local(path: str) -> bool:
    return urlparse(path).scheme in ("", "file")


def _read(spark, source: str, id_column: str | None):
    columns = [*FIELDS, *([id_column] if id_column else [])]
    reader = spark.read
    if source.lower().endswith((".parquet", ".pq")) or (Path(source).is_dir() and _is_local(source)):
        frame = reader.parquet(source)
    else:
        # Every column as text (no inference), a malformed line stops the job.
        frame = reader.option("header", True).option("mode", "FAILFAST").option("inferSchema", False).csv(source)
    try:
        check_fields(frame.columns, f"{source}: the file", [id_column] if id_column else [])
    except InputError as exc:
        raise Stopped(exc.detail) from None
    return frame.select(*columns)


def _numbered(frame):
    """The records with their 1-based data-row number, in file order: each partition's count,
    then an offset per partition (one cheap extra scan)."""
    from pyspark.sql import functions as F
    partition = F.spark_partition_id()
    counts = dict(frame.select(partition.alias("p")).groupBy("p").count().collect())
    offsets, total = {}, 0
    for p in sorted(counts):
        offsets[p], total = total, total + counts[p]
    if not offsets:
        return frame.withColumn(ROW, F.lit(None).cast("long"))
    offset = F.create_map(*[F.lit(x) for item in offsets.items() for x in item])
    within = F.monotonically_increasing_id() - F.shiftleft(partition.cast("long"), 33)
    return frame.withColumn(ROW, within + F.element_at(offset, partition) + 1)


def _output_schema(model, frame, id_column: str | None) -> pa.Schema:
    """The job's rows: the data row, the id column if any, the status, the answer's columns (set
    for scored rows) and the problem's (set for rejects)."""
    from pyspark.sql.pandas.types import to_arrow_type
    fields = [pa.field(ROW, pa.int64())]
    if id_column:
        fields.append(pa.field(id_column, to_arrow_type(frame.schema[id_column].dataType)))
    fields.append(pa.field(STATUS, pa.string()))
    fields += [pa.field(name, pa.int64() if name == "business_outcome" else pa.float64())
               for name in answer_fields(model.plan.names)]
    fields += [pa.field(name, pa.string()) for name in REJECT_SCHEMA_FIELDS]
    return pa.schema(fields)


def _write(frame, target: str) -> None:
    """A directory of Parquet part files that appears only when complete (local paths: written
    beside the target and renamed; other file systems: Spark's own job commit)."""
    if not _is_local(target):
        frame.write.mode("overwrite").parquet(target)
        return
    with Staged(Path(urlparse(target).path if target.startswith("file:") else target), folder=True) as staged:
        frame.write.mode("overwrite").parquet(str(staged.path))


def run(args) -> int:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        print("error: --engine spark needs PySpark: pip install pyspark==4.3.0 (and a Java 17 runtime)",
              file=sys.stderr)
        return 1
    from pyspark.errors import AnalysisException, PythonException
    from py4j.protocol import Py4JJavaError

    model_dir = Path(args.model_dir)
    try:
        artifacts.verify(model_dir)
        model = load_model(model_dir)
    except artifacts.ArtifactError as exc:
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return 1
    starting = time.perf_counter()
    spark = _session(args.master, args.no_progress)
    master = spark.sparkContext.master                  # spark-submit's --master when it started us
    started = time.perf_counter()
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema
    try:
        with tempfile.TemporaryDirectory() as scratch:
            _ship_package(spark, Path(scratch))
            spark.sparkContext.addFile(str(model_dir.resolve()), recursive=True)
            frame = _numbered(_read(spark, args.input, args.id_column))
            schema = _output_schema(model, frame, args.id_column)
            scoring = functools.partial(score_partition, model_name=model_dir.resolve().name,
                                        model_path=str(model_dir.resolve()), id_column=args.id_column, schema=schema)
            result = frame.mapInArrow(scoring, from_arrow_schema(schema)).persist()
            rejected = result.filter(F.col(STATUS) == "reject")
            if not args.rejects:
                problems = [row.asDict() for row in rejected.orderBy(ROW).limit(11).collect()]
                if problems:
                    raise Stopped(describe([dict(p, row=p[ROW]) for p in problems], Path(args.input)))
            answers = answer_fields(model.plan.names)
            identity = [F.col(ROW).alias(ROW_ID_COLUMN)] if not args.id_column else [F.col(args.id_column)]
            scored = result.filter(F.col(STATUS) == "ok").select(*identity, *answers)
            _write(scored, args.output)
            set_aside = 0
            if args.rejects:
                _write(rejected.select(*identity, *REJECT_SCHEMA_FIELDS), args.rejects)
                set_aside = rejected.select(ROW).distinct().count()
            rows = result.filter(F.col(STATUS) == "ok").count()
            result.unpersist()
    except AnalysisException as exc:
        raise Stopped(f"{args.input}: {str(exc).splitlines()[0]}") from None
    except PythonException as exc:
        raise Stopped(f"{args.input}: a Spark task failed: {str(exc).strip().splitlines()[-1]}") from None
    except Py4JJavaError as exc:
        raise Stopped(f"{args.input}: {_java_reason(exc)}") from None
    finally:
        spark.stop()
    seconds = time.perf_counter() - started
    aside = f"; set aside {set_aside:,} row(s) in {args.rejects}" if args.rejects else ""
    print(f"scored {rows:,} rows in {seconds:.1f} s with Spark ({master}, which took "
          f"{started - starting:.1f} s to start); wrote {args.output}{aside}", file=sys.stderr)
    return 0


def _java_reason(exc) -> str:
    """The innermost message of a Java exception (a malformed CSV record, say), on one line."""
    cause, message = exc.java_exception, ""
    while cause is not None:
        message = str(cause.getMessage() or message)
        cause = cause.getCause()
    return message.splitlines()[0][:300] if message else "the Spark job failed"
