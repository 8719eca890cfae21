#!/usr/bin/env python3
"""Train the purchase model and write the serving artifacts (python train.py --help)."""
import sys

from ad_purchase.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
