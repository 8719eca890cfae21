r"""The ad purchase propensity service.

Rows travel one way through the package, whichever way they came in:

    bytes --codecs--> raw columns --core.decoding--> Columns --core.prediction--> Prediction --codecs--> bytes
                                                                                    \--> monitoring
    (JSON and CSV requests, CSV and Parquet files, Spark tasks' shares and training files all
     reach the model through the same decoding core and the same prediction service)

    schema/      the one definition of the input: fields, levels, how values are written,
                 missing spellings, limits, error kinds, and the checked Columns
    core/        decoding.py: every field kind's rule, applied column-wise;
                 prediction.py: checked Columns to scores, contributions and observations
    codecs/      JSON bodies, CSV text and Arrow batches to raw columns, and answers back
    model/       the trained artifacts: verified, loaded, applied (matrices in, matrices out)
    serving/     the Flask application, its routes, problem details, settings, the OpenAPI
                 document and the gunicorn worker
    monitoring/  Prometheus metrics, input drift, request ids
    batch/       files read and written in record batches; score.py locally and on Spark
    training/    reading training data, the published method, the report, synthetic rows
    cli/         the train, score and sample commands
    atomic.py    all-or-nothing writes of files and folders; resources.py: shipped files
"""
import os
from pathlib import Path

# The repository (or the image's /app): data/, examples/ and objs/ sit beside the package.
HOME = Path(__file__).resolve().parent.parent


def machine_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                      # not Linux
        return os.cpu_count() or 1
