#!/usr/bin/env bash
# End-to-end check of the local Docker setup: engine up, python:3.11-slim stand-in present,
# an unmodified `FROM python:3.11-slim` Dockerfile builds (pip reaches the index), the container
# serves on 127.0.0.1:1313 via a published port, and runs with --read-only + tmpfs /tmp.
#
#   deploy/docker-local/selftest.sh          # starts the engine / builds the base if needed;
#                                            # leaves the engine as it found it
# Only loopback is used for the HTTP checks.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PORT=${SELFTEST_PORT:-1313}
IMAGE=project-docker-local-selftest:latest
NAME=project-docker-local-selftest-$$

log() { printf '[selftest] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

started_engine=0
"$HERE/dockerd.sh" status >/dev/null 2>&1 || { "$HERE/dockerd.sh" start; started_engine=1; }

# Containers get --network host if the engine runs without a bridge (iptables unavailable).
net_args=()
mode=$(cat "${PROJECT_DOCKERD_ROOT:-/tmp/project-dockerd}/network-mode" 2>/dev/null || echo bridge)
[[ $mode == host ]] && net_args=(--network host)

CTX=$(mktemp -d /tmp/project-docker-selftest.XXXXXX)
cleanup() {
    docker rm -f "$NAME" "$NAME-ro" >/dev/null 2>&1 || true
    docker rmi "$IMAGE" >/dev/null 2>&1 || true
    rm -rf "$CTX"
    if ((started_engine)); then "$HERE/dockerd.sh" stop; fi
}
trap cleanup EXIT

t0=$SECONDS
"$HERE/build_base_image.sh"
log "base image step: $((SECONDS - t0)) s"

cat >"$CTX/Dockerfile" <<EOF
FROM python:3.11-slim
RUN useradd -m app && python -m pip install --no-cache-dir six==1.16.0 && python -c "import six, ssl; print(six.__version__)"
USER app
CMD ["python","-m","http.server","$PORT"]
EOF
t0=$SECONDS
if ! docker build --no-cache "${net_args[@]}" -t "$IMAGE" "$CTX" 2>&1 | sed 's/^/    /' >&2; then
    die "docker build failed"
fi
log "docker build: $((SECONDS - t0)) s"

wait_http() {
    # The port opens (docker-proxy) before the server inside listens: retry, bounded.
    for _ in $(seq 1 40); do
        if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/" 2>/dev/null; then return 0; fi
        sleep 0.25
    done
    return 1
}

if [[ $mode == host ]]; then publish=(--network host); else publish=(-p "127.0.0.1:$PORT:$PORT"); fi

docker run -d --init --name "$NAME" "${publish[@]}" "$IMAGE" >/dev/null
wait_http || { docker logs "$NAME" >&2; die "no HTTP answer on 127.0.0.1:$PORT"; }
log "HTTP 200 from 127.0.0.1:$PORT (${publish[*]})"
docker rm -f "$NAME" >/dev/null

docker run -d --init --name "$NAME-ro" --read-only --tmpfs /tmp "${publish[@]}" "$IMAGE" >/dev/null
wait_http || { docker logs "$NAME-ro" >&2; die "read-only container: no HTTP answer"; }
docker exec "$NAME-ro" sh -c 'touch /tmp/ok' || die "tmpfs /tmp not writable"
if docker exec "$NAME-ro" sh -c 'touch /home/app/x' 2>/dev/null; then die "--read-only not enforced"; fi
log "--read-only + --tmpfs /tmp: serves, /tmp writable, rest read-only"
docker rm -f "$NAME-ro" >/dev/null

log "OK: all checks passed"
