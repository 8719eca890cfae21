"""Wire formats: bytes to raw columns the decoding core checks, and predictions back to bytes.
Each codec reads and writes one format; none knows the model's internals or HTTP."""
from .csv_codec import decode_csv, encode_csv
from .json_codec import JsonDecoder, JsonEncoder
