#!/usr/bin/env python3
"""Score a file of any size with the served model (python score.py --help)."""
import sys

from ad_purchase.cli.score import main

if __name__ == "__main__":
    sys.exit(main())
