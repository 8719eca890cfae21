#!/usr/bin/env bash
# Install what the tests need and this project (editable) into .venv, run the whole suite with
# coverage, and fail under 95%.
#   ./run_tests.sh               everything (what CI runs)
#   ./run_tests.sh --quick       the in-process tier (marker "quick"), in under a minute, no coverage
# Extra arguments go to pytest, e.g. ./run_tests.sh -k parity -x; such a run reports coverage but
# is not held to the 95% floor, which only the whole suite can reach.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh

ensure_venv requirements-dev.txt
if [ "${1:-}" = "--quick" ]; then
  shift
  echo "==> running the quick tier"
  exec .venv/bin/python -m pytest -m quick -q "$@"
fi
deploy/k8s/install-tools.sh   # checkov and kubernetes-validate, in a venv of their own
echo "==> running tests"
floor=(--cov-fail-under=95)
[ "$#" -eq 0 ] || floor=()
.venv/bin/python -m pytest \
  --cov --cov-report=term-missing --cov-report=html:htmlcov ${floor[@]+"${floor[@]}"} "$@"
echo "==> coverage report: htmlcov/index.html"
