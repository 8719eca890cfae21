"""The input schema: the only place that defines the fields, their kinds and levels, how values
are written (missing spellings included), the limits, how much of a problem is reported, and
the kinds of error.  The decoding core, the OpenAPI document, training, batch scoring, the docs'
tables and the tests all read it from here; none of it knows HTTP or files."""
from .columns import Columns
from .fields import (CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, CATEGORICAL_MEANING, CURRENCY_EXAMPLES, CURRENCY_FIELD,
                     FIELDS, FORMATTED_FIELDS, LEVEL_CODES, MISSING_CODE, NUMERIC_FIELDS, PERCENT_EXAMPLES,
                     PERCENT_FIELD, PLAIN_FIELDS, TARGET, all_model_columns, answer_fields, dummy_columns,
                     numeric_input_order, split_dummy)
from .limits import (DRIFT_SAMPLE_ROWS, MAX_BATCH_ROWS, MAX_ECHOED_CHARS, MAX_MAGNITUDE, MAX_REPORTED_ERRORS,
                     MIN_DRIFT_ROWS, PSI_ALERT, PSI_WATCH, SHOWN_ERRORS, SHOWN_ROWS)
from .problems import ABSENT, InputError, Problem, field_error
from .values import (AMOUNT_MARKS, MISSING_STRINGS, NEGATIVE_CLOSE, NEGATIVE_OPEN, PERCENT_MARK, SPACE, SPACE_CHARS,
                     currency_pattern, missing_spellings, number_pattern, percent_pattern)
