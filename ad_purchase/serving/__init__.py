"""The HTTP service around the model core."""
