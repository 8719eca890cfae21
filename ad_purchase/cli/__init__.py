"""The commands users type: train.py, score.py and sample.py at the repository root run these."""
