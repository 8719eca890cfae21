#!/usr/bin/env bash
# Serve the model on PORT (default 1313).
#   ./run_api.sh           Docker when an engine answers, otherwise a local .venv and gunicorn
#   ./run_api.sh --local   always the local .venv and gunicorn
#   ./run_api.sh --docker  always Docker (fails if no engine answers)
# Ctrl-C or SIGTERM stops the server; in-flight requests finish first.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh

PORT="${PORT:-1313}"
IMAGE="${IMAGE:-ad-purchase-api:local}"
mode="auto"
case "${1:-}" in
  --local) mode="local" ;;
  --docker) mode="docker" ;;
  "") ;;
  *) echo "usage: $0 [--local|--docker]" >&2; exit 2 ;;
esac

if [ "$mode" != "local" ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "==> building image $IMAGE"
  docker build --tag "$IMAGE" .
  tty_flag=""; [ -t 0 ] && tty_flag="-t"
  echo "==> starting the image; it answers on http://localhost:$PORT once it logs 'ready'"
  exec docker run --rm -i $tty_flag --init --read-only --tmpfs /tmp \
    --publish "$PORT:1313" --env WEB_CONCURRENCY --env WORKER_CLASS --env THREADS "$IMAGE"
fi
if [ "$mode" = "docker" ]; then
  echo "error: no Docker engine answers (docker info failed)" >&2
  exit 1
fi

if [ ! -d "${MODEL_DIR:-objs}" ]; then
  echo "error: MODEL_DIR ${MODEL_DIR:-objs} is not a folder; train a model with train.py or set MODEL_DIR" >&2
  exit 1
fi
ensure_venv requirements.txt
echo "==> starting gunicorn; it answers on http://localhost:$PORT once it logs 'ready'"
export PORT
exec .venv/bin/gunicorn --config gunicorn.conf.py api:app
