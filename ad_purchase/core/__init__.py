"""The core every way in shares: one decoding core (raw columns to checked Columns) and one
prediction service (checked Columns to scores, contributions and what monitoring observes)."""
from .decoding import Decoded, Decoder, FieldError, check_fields
from .prediction import Prediction, PredictionService
