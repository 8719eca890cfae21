"""Training: rows in the client's raw format to the artifacts serving loads, plus the model report
and synthetic rows drawn from the client's published profile."""
