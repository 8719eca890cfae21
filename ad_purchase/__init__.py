"""The ad purchase propensity service: schema, codecs, model core, serving, monitoring, training."""
