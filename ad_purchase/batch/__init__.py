"""Batch scoring: whole files through the service's schema, codecs and model core, on this
machine (local.py) or as a Spark job (spark.py)."""
