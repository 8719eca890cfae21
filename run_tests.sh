#!/usr/bin/env bash
# Install what the tests need into .venv, run the whole suite with coverage, and fail under 95%.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k parity -x
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh

ensure_venv requirements-dev.txt
deploy/k8s/install-tools.sh   # checkov and kubernetes-validate, in a venv of their own
echo "==> running tests"
.venv/bin/python -m pytest \
  --cov --cov-report=term-missing --cov-report=html:htmlcov --cov-fail-under=95 "$@"
echo "==> coverage report: htmlcov/index.html"
