r"""The ad purchase propensity service.

A request travels one way through the package:

    bytes --codecs--> Columns --model--> Scores --codecs--> bytes
                         \                   /
                          +--> monitoring <-+          (fed columns and scores, never calls back)

    schema/      the one definition of the input: fields, levels, how values are written,
                 missing spellings, limits, error kinds, and the validated Columns
    codecs/      JSON and CSV bodies to Columns, and Scores back to JSON and CSV
    model/       the trained artifacts: verified, loaded, applied (matrices in, matrices out)
    serving/     the Flask application, its routes, problem details, settings, the OpenAPI
                 document and the gunicorn worker
    monitoring/  Prometheus metrics, input drift, request ids
    training/    reading training data, the published method, the report, synthetic rows
    cli/         the train, score and sample commands
"""
from pathlib import Path

# The repository (or the image's /app): data/, examples/ and objs/ sit beside the package.
HOME = Path(__file__).resolve().parent.parent
