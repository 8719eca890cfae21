"""The limits of the input contract."""
MAX_BATCH_ROWS = 10_000         # records in one request (413 beyond); the default of the setting
# A model input larger than this would overflow to infinity once standardised and weighted, so
# it is refused like any other unusable value.
MAX_MAGNITUDE = 1e300
MAX_REPORTED_ERRORS = 100       # problems listed in one 422; total_errors counts them all
MAX_ECHOED_CHARS = 200          # of a value quoted back in an error
SHOWN_ROWS = 20                 # rows a 422's detail names
