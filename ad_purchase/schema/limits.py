"""The limits of the input contract, and how much of a problem is reported."""
MAX_BATCH_ROWS = 10_000         # records in one request (413 beyond); the default of the setting
# A model input larger than this would overflow to infinity once standardised and weighted, so
# it is refused like any other unusable value.
MAX_MAGNITUDE = 1e300
MAX_REPORTED_ERRORS = 100       # problems listed in one refusal; total_errors counts them all
MAX_ECHOED_CHARS = 200          # of a value quoted back in an error
SHOWN_ROWS = 20                 # rows a refusal's detail names
SHOWN_ERRORS = 10               # problems a command prints on a terminal (all are counted)

# Input drift: a field's population stability index above WATCH is worth a look, above ALERT
# it has shifted; with fewer than MIN_ROWS rows counted it says little.
PSI_WATCH = 0.1
PSI_ALERT = 0.2
MIN_DRIFT_ROWS = 100
DRIFT_SAMPLE_ROWS = 200         # rows of one request offered to the drift sample (evenly spaced)
