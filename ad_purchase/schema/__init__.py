"""The input schema: the only place that defines the fields, their types and levels, how values
are written (missing spellings included), the limits and the kinds of error.  Validation, the
OpenAPI document, training, batch scoring and the tests all read it from here."""
from .columns import Columns
from .fields import (CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, CATEGORICAL_MEANING, CURRENCY_EXAMPLES, CURRENCY_FIELD,
                     EXAMPLES_DIR, FIELDS, FORMATTED_FIELDS, LEVEL_CODES, MISSING_CODE, NUMERIC_FIELDS,
                     PERCENT_EXAMPLES, PERCENT_FIELD, PLAIN_FIELDS, PROFILE_PATH, TARGET, Profile, all_model_columns,
                     answer_fields,
                     dummy_columns, load_example, numeric_input_order, split_dummy)
from .limits import MAX_BATCH_ROWS, MAX_ECHOED_CHARS, MAX_MAGNITUDE, MAX_REPORTED_ERRORS, SHOWN_ROWS
from .problems import ABSENT, InputError, Problem, field_error
from .values import (COMMON_CODES, MISSING_STRINGS, SPACE, SPACE_CHARS, FieldError, currency_pattern, is_missing,
                     level_code, missing_spellings, number_pattern, numeric_parser, parse_column, parse_currency,
                     parse_level, parse_number, parse_percent, percent_pattern)
