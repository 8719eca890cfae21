#!/usr/bin/env bash
# A Spark standalone cluster on this machine, on loopback, from the PySpark package's own
# launcher (no separate Spark download): one master and N workers, each its own JVM, as on a
# real cluster.  Also packs the Python environment the executors run the job with.
#
#   deploy/spark/cluster.sh start [N]   # a master and N workers (default 2), wait until all registered
#   deploy/spark/cluster.sh status      # the master and its live workers; exit 0 only when all are up
#   deploy/spark/cluster.sh stop        # stop the workers, then the master
#   deploy/spark/cluster.sh pack        # the executors' Python environment as one archive (venv-pack)
#
# Then, from the repository (the driver runs here, the executors get the package, the model
# and the packed environment with the job; they need nothing but Java):
#
#   SPARK_LOCAL_IP=127.0.0.1 PYSPARK_DRIVER_PYTHON=.venv/bin/python PYSPARK_PYTHON=./environment/bin/python \
#       .venv/bin/spark-submit --master spark://127.0.0.1:7177 \
#       --archives /tmp/ad-purchase-spark/executor-env.tar.gz#environment \
#       score.py rows.parquet -o scores/ --engine spark
#
# (the driver runs this checkout's .venv; each executor unpacks the archive beside it as
# ./environment and runs its Python)
#
# Everything it writes is under the run folder (default /tmp/ad-purchase-spark):
#   pids/master.pid  pids/worker-I.pid      the JVMs started (stop and status read them)
#   logs/master.log  logs/worker-I.log      their logs
#   work/worker-I/APP/EXECUTOR/stderr       each executor's log (which tasks it ran)
#   executor-venv/  executor-env.tar.gz     the executors' environment, and as packed
#   cluster.env                             the ports it was started with
#
# Environment knobs (all optional):
#   SPARK_MASTER_PORT    the master's port            (default 7177)
#   SPARK_MASTER_UI      the master's web UI port     (default 8177; its JSON status: /json/)
#   SPARK_WORKER_CORES   cores per worker             (default 1)
#   SPARK_WORKER_MEMORY  memory per worker            (default 1g)
#   SPARK_RUN_DIR        the run folder               (default /tmp/ad-purchase-spark)
#   PYTHON               the Python with PySpark and venv-pack (default: the repository's .venv)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
RUN_DIR="${SPARK_RUN_DIR:-/tmp/ad-purchase-spark}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
WAIT_SECONDS=90

die() { echo "error: $*" >&2; exit 1; }

load_ports() {
  if [ -f "$RUN_DIR/cluster.env" ]; then
    # shellcheck disable=SC1091
    source "$RUN_DIR/cluster.env"
  fi
  MASTER_PORT="${SPARK_MASTER_PORT:-${MASTER_PORT:-7177}}"
  MASTER_UI="${SPARK_MASTER_UI:-${MASTER_UI:-8177}}"
}

spark_home() {
  # The PySpark package is a Spark distribution: bin/spark-class, jars/.
  "$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null \
    || die "no PySpark in $PYTHON: pip install -r requirements-dev.txt"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

master_json() {
  "$PYTHON" - "$MASTER_UI" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=3) as answer:
        status = json.load(answer)
except OSError:
    sys.exit(1)
alive = [w for w in status.get("workers", []) if w.get("state") == "ALIVE"]
print(status.get("status", "?"), len(alive), " ".join(w["id"] for w in alive))
EOF
}

launch() {   # name, then the spark-class arguments: a JVM in the background, its pid and log kept
  local name="$1"; shift
  if alive "$RUN_DIR/pids/$name.pid"; then
    die "$name is already running (pid $(cat "$RUN_DIR/pids/$name.pid")); stop the cluster first"
  fi
  SPARK_HOME="$SPARK_HOME" SPARK_LOCAL_IP=127.0.0.1 SPARK_NO_DAEMONIZE=1 \
    nohup "$SPARK_HOME/bin/spark-class" "$@" >"$RUN_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/pids/$name.pid"
}

start() {
  local workers="${1:-2}"
  [[ "$workers" =~ ^[1-9][0-9]*$ ]] || die "the number of workers must be a positive integer, not '$workers'"
  command -v java >/dev/null || die "no Java runtime on PATH (Spark needs Java 17)"
  load_ports
  SPARK_HOME="$(spark_home)"
  mkdir -p "$RUN_DIR/pids" "$RUN_DIR/logs" "$RUN_DIR/work"
  printf 'MASTER_PORT=%s\nMASTER_UI=%s\n' "$MASTER_PORT" "$MASTER_UI" >"$RUN_DIR/cluster.env"
  launch master org.apache.spark.deploy.master.Master \
    --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "$MASTER_UI"
  local i
  for i in $(seq 1 "$workers"); do
    mkdir -p "$RUN_DIR/work/worker-$i"
    # Web UI port 0: any free port, so several workers share the machine.
    launch "worker-$i" org.apache.spark.deploy.worker.Worker \
      --host 127.0.0.1 --webui-port 0 --cores "${SPARK_WORKER_CORES:-1}" --memory "${SPARK_WORKER_MEMORY:-1g}" \
      --work-dir "$RUN_DIR/work/worker-$i" "spark://127.0.0.1:$MASTER_PORT"
  done
  local deadline=$((SECONDS + WAIT_SECONDS)) seen=""
  while [ "$SECONDS" -lt "$deadline" ]; do
    if seen="$(master_json)" && [ "$(echo "$seen" | cut -d' ' -f2)" -ge "$workers" ]; then
      echo "master spark://127.0.0.1:$MASTER_PORT (UI http://127.0.0.1:$MASTER_UI) with $workers worker(s); logs in $RUN_DIR/logs"
      return 0
    fi
    for pid_file in "$RUN_DIR"/pids/*.pid; do
      alive "$pid_file" || { stop >/dev/null; die "$(basename "$pid_file" .pid) exited; see $RUN_DIR/logs"; }
    done
    sleep 1
  done
  stop >/dev/null
  die "the workers did not all register with the master within ${WAIT_SECONDS}s; see $RUN_DIR/logs"
}

stop() {
  local pid_file name pid stopped=0
  # Workers first (each stops its executors), then the master.
  for pid_file in $(ls "$RUN_DIR"/pids/worker-*.pid 2>/dev/null) "$RUN_DIR/pids/master.pid"; do
    [ -f "$pid_file" ] || continue
    name="$(basename "$pid_file" .pid)"
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "stopped $name (pid $pid)"
      stopped=$((stopped + 1))
    fi
    rm -f "$pid_file"
  done
  [ "$stopped" -gt 0 ] || echo "nothing was running"
}

status() {
  load_ports
  local up=0 total=0 pid_file
  for pid_file in "$RUN_DIR"/pids/*.pid; do
    [ -f "$pid_file" ] || continue
    total=$((total + 1))
    if alive "$pid_file"; then
      up=$((up + 1)); echo "$(basename "$pid_file" .pid): running (pid $(cat "$pid_file"))"
    else
      echo "$(basename "$pid_file" .pid): not running"
    fi
  done
  [ "$total" -gt 0 ] || { echo "no cluster started from $RUN_DIR"; return 1; }
  local seen
  seen="$(master_json)" || { echo "the master does not answer on port $MASTER_UI"; return 1; }
  echo "master spark://127.0.0.1:$MASTER_PORT: $(echo "$seen" | cut -d' ' -f1), $(echo "$seen" | cut -d' ' -f2) live worker(s)"
  [ "$up" -eq "$total" ] && [ "$(echo "$seen" | cut -d' ' -f2)" -eq $((total - 1)) ]
}

pack() {
  # The runtime requirements (not PySpark: executors take it from the worker's Spark) in a
  # venv of their own, packed with venv-pack; Spark unpacks it beside each executor
  # (--archives ...#environment) and runs ./environment/bin/python.
  mkdir -p "$RUN_DIR"
  local venv="$RUN_DIR/executor-venv" archive="$RUN_DIR/executor-env.tar.gz"
  local stamp="$venv/.requirements.txt"
  if ! cmp -s "$REPO/requirements.txt" "$stamp" 2>/dev/null; then
    rm -rf "$venv"
    "$(readlink -f "$PYTHON")" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet -r "$REPO/requirements.txt"
    cp "$REPO/requirements.txt" "$stamp"
    rm -f "$archive"
  fi
  if [ ! -f "$archive" ]; then
    "$PYTHON" -m venv_pack --prefix "$venv" --output "$archive.partial" --format tar.gz --compress-level 1 \
      --force --quiet
    mv "$archive.partial" "$archive"
  fi
  echo "$archive"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  pack) pack ;;
  *) echo "usage: $0 start [N] | status | stop | pack" >&2; exit 2 ;;
esac
