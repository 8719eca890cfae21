#!/usr/bin/env bash
# Run every benchmark and print one combined table (about 10 minutes on 2 cores).
#   bench/run_all.sh            in-process, HTTP, memory, batch files, speed tricks, then a profile
#   bench/run_all.sh --quick    short runs, to check that everything works (about 2 minutes)
# Installs what it needs first: the Python packages in bench/requirements-bench.txt into .venv,
# and wrk with apt-get when it is not on PATH.  Servers it starts listen on 127.0.0.1 only and
# are stopped at the end, also on error or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
case "${1:-}" in
  --quick) quick="--quick" ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "error: no .venv; create it first (./run_tests.sh or ./run_api.sh --local set it up)" >&2
  exit 1
fi
if ! "$PY" -c "import orjson, pyinstrument" 2>/dev/null || [ ! -x .venv/bin/py-spy ]; then
  echo "==> installing bench/requirements-bench.txt into .venv"
  "$PY" -m pip install --quiet -r bench/requirements-bench.txt
fi
if ! command -v wrk >/dev/null 2>&1; then
  echo "==> installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

child=""
cleanup() {
  # Each script stops its own servers; this stops a script still running when we are interrupted.
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p bench/results
rm -f bench/results/*.json
status=0
start=$(date +%s)
# The batch benchmark adds Spark's local runs when PySpark and Java are there.
spark=""
if "$PY" -c "import pyspark" 2>/dev/null && command -v java >/dev/null 2>&1; then spark="--spark"; fi
for script in inprocess.py http_bench.py memory.py batch_bench.py tricks.py; do
  extra=""; [ "$script" = batch_bench.py ] && extra="$spark"
  echo
  echo "==> bench/$script $quick $extra"
  "$PY" "bench/$script" $quick $extra &
  child=$!
  wait "$child" || { rc=$?; echo "!! bench/$script failed with exit code $rc"; status=1; }
  child=""
done

echo
echo "==> bench/profile_hotpath.py"
seconds=3; [ -n "$quick" ] && seconds=1
"$PY" bench/profile_hotpath.py --server --seconds "$seconds" --lines 30 &
child=$!
wait "$child" || { echo "!! bench/profile_hotpath.py failed"; status=1; }
child=""

echo
echo "==================================== summary ($(( $(date +%s) - start )) s)"
"$PY" bench/summary.py || status=1
exit "$status"
