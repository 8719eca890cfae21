#!/usr/bin/env bash
# Start/stop a Docker engine by hand, for machines without systemd (dev sandbox, CI).
#
#   deploy/docker-local/dockerd.sh start    # install docker.io if needed, start dockerd, wait until it answers
#   deploy/docker-local/dockerd.sh status   # exit 0 when the engine answers
#   deploy/docker-local/dockerd.sh stop     # stop dockerd (and its containers) cleanly
#   deploy/docker-local/dockerd.sh restart
#
# Everything the daemon writes lives under $PROJECT_DOCKERD_ROOT (default /tmp/project-dockerd):
#   data/ (images, containers), exec/ (runtime state, containerd), dockerd.pid, dockerd.log
# The API socket is the standard /var/run/docker.sock, so a plain `docker` client works.
#
# Environment knobs (all optional):
#   PROJECT_DOCKERD_ROOT     state folder                      (default /tmp/project-dockerd)
#   PROJECT_DOCKERD_SOCK     API unix socket                   (default /var/run/docker.sock)
#   PROJECT_DOCKERD_TIMEOUT  seconds to wait for the engine    (default 60)
#   PROJECT_DOCKERD_NETWORK  "bridge" (default) or "host": "host" starts dockerd with
#                            --iptables=false --bridge=none; containers then need --network host.
#                            The script falls back to "host" by itself if iptables does not work.
#   PROJECT_DOCKERD_EXTRA    extra dockerd flags, e.g. "--storage-driver vfs"
#
# Tried in the sandbox (Debian bookworm VM, cgroup v1, root, no systemd): the defaults work as is:
# iptables (nf_tables backend) + docker0 bridge with NAT, storage driver overlay2 (auto-picked;
# dockerd falls back to vfs by itself where overlay is unavailable). So the only forced options are
# the cgroupfs driver (no systemd) and --mtu = uplink MTU (1400 here). Ports published to the host
# loopback (-p 127.0.0.1:1313:1313) work via docker-proxy; --network host works too.
# Containers whose PID 1 is python ignore SIGTERM: run them with --init (tini) to stop fast.
#
# Client notes: Debian's engine is 20.10 (API 1.41); a newer docker CLI first on PATH (28.x here)
# negotiates down to it. No buildx plugin is installed, so `docker build` uses the classic builder
# (it prints a DEPRECATED warning; that is expected). Don't set DOCKER_BUILDKIT=1 with the 28.x CLI:
# it then demands buildx and fails. For BuildKit-only syntax (RUN --mount) use Debian's own 20.10
# client, which has BuildKit built in: DOCKER_BUILDKIT=1 /usr/bin/docker build ...
set -euo pipefail

ROOT=${PROJECT_DOCKERD_ROOT:-/tmp/project-dockerd}
SOCK=${PROJECT_DOCKERD_SOCK:-/var/run/docker.sock}
TIMEOUT=${PROJECT_DOCKERD_TIMEOUT:-60}
NETWORK_MODE=${PROJECT_DOCKERD_NETWORK:-bridge}
DATA_ROOT=$ROOT/data
EXEC_ROOT=$ROOT/exec
PIDFILE=$ROOT/dockerd.pid
LOGFILE=$ROOT/dockerd.log

log() { printf '[dockerd.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Talk to *our* socket whatever DOCKER_HOST the caller has.
dkr() { DOCKER_HOST="unix://$SOCK" docker "$@"; }

engine_answers() { command -v docker >/dev/null 2>&1 && dkr info >/dev/null 2>&1; }

our_pid() {
    # Prints the pid of the dockerd we started, if it is still alive.
    [[ -s $PIDFILE ]] || return 1
    local pid
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    # Guard against pid reuse: the process must be a dockerd.
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] || return 1
    echo "$pid"
}

ensure_installed() {
    # The engine (dockerd) may be missing even when a docker *client* is on PATH.
    if command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "docker engine missing and not root: cannot apt-get install docker.io"
    log "docker engine not found: installing Debian's docker.io (brings containerd, runc, iptables, tini)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # --no-install-recommends: skips needrestart (interactive prompts), apparmor, criu, git...
    apt-get install -y -q --no-install-recommends docker.io
    command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"
}

uplink_mtu() {
    # MTU of the interface carrying the default route (1400 in this sandbox). docker0 defaults to
    # 1500; a larger MTU inside than outside can stall TLS downloads (pip) in containers.
    local dev
    dev=$(ip -o route show default 2>/dev/null | awk '{for (i=1;i<NF;i++) if ($i=="dev") {print $(i+1); exit}}')
    if [[ -n ${dev:-} && -r /sys/class/net/$dev/mtu ]]; then cat "/sys/class/net/$dev/mtu"; fi
}

launch() {
    # $1 = bridge|host. Starts dockerd in the background, detached from this shell.
    local mode=$1
    local -a args=(
        --data-root "$DATA_ROOT"
        --exec-root "$EXEC_ROOT"
        --pidfile "$PIDFILE"
        --host "unix://$SOCK"
        # No systemd here: let dockerd manage cgroups itself.
        --exec-opt native.cgroupdriver=cgroupfs
    )
    local mtu
    mtu=$(uplink_mtu)
    if [[ $mode == host ]]; then
        # No iptables (NAT/port publishing impossible): only host networking works then.
        args+=(--iptables=false --ip-masq=false --bridge=none)
    elif [[ -n $mtu && $mtu -lt 1500 ]]; then
        args+=(--mtu "$mtu")
    fi
    # shellcheck disable=SC2206  # word splitting of the extra flags is intended
    [[ -n ${PROJECT_DOCKERD_EXTRA:-} ]] && args+=(${PROJECT_DOCKERD_EXTRA})

    mkdir -p "$DATA_ROOT" "$EXEC_ROOT" "$(dirname "$SOCK")"
    rm -f "$PIDFILE"
    {
        echo "==== $(date -u +%FT%TZ) starting: dockerd ${args[*]}"
    } >>"$LOGFILE"
    log "starting dockerd (network mode: $mode), log: $LOGFILE"
    # setsid+nohup: the daemon must outlive this script and its terminal/session.
    setsid nohup dockerd "${args[@]}" >>"$LOGFILE" 2>&1 </dev/null &
    echo $! >"$ROOT/dockerd.launch.pid"
}

wait_ready() {
    # Returns 0 when `docker info` answers, 1 if dockerd died or the timeout passed.
    local launched deadline=$((SECONDS + TIMEOUT))
    launched=$(<"$ROOT/dockerd.launch.pid")
    while ((SECONDS < deadline)); do
        if engine_answers; then return 0; fi
        if ! kill -0 "$launched" 2>/dev/null; then
            log "dockerd exited during startup"
            return 1
        fi
        sleep 1
    done
    log "engine did not answer within ${TIMEOUT}s"
    return 1
}

stop_pid() {
    # Stop a process: TERM, wait up to $2 s, then KILL.
    local pid=$1 grace=$2 deadline
    kill -TERM "$pid" 2>/dev/null || return 0
    deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still alive after ${grace}s: sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
}

cmd_start() {
    local pid
    if pid=$(our_pid); then
        if engine_answers; then
            log "already running (pid $pid), socket $SOCK"
            return 0
        fi
        log "dockerd pid $pid alive but not answering: restarting it"
        cmd_stop
    elif engine_answers; then
        # Some other engine (e.g. a real Docker install) owns the socket: use it, don't fight it.
        log "an engine not started by this script already answers on $SOCK: using it"
        return 0
    fi
    ensure_installed
    [[ $(id -u) -eq 0 ]] || die "dockerd must run as root"
    mkdir -p "$ROOT"

    launch "$NETWORK_MODE"
    if ! wait_ready; then
        # A daemon that exited because iptables/NAT is unavailable can still work without
        # bridge networking; containers then use --network host.
        if [[ $NETWORK_MODE == bridge ]] && ! kill -0 "$(<"$ROOT/dockerd.launch.pid")" 2>/dev/null \
            && tail -n 40 "$LOGFILE" | grep -qiE 'iptables|nat chain|bridge'; then
            log "bridge networking failed (see log); retrying with --iptables=false --bridge=none"
            launch host
            NETWORK_MODE=host
            wait_ready || { tail -n 30 "$LOGFILE" >&2; cmd_stop || true; die "dockerd failed to start"; }
        else
            tail -n 30 "$LOGFILE" >&2
            cmd_stop || true
            die "dockerd failed to start"
        fi
    fi
    echo "$NETWORK_MODE" >"$ROOT/network-mode"
    log "engine ready: $(dkr version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null)," \
        "storage $(dkr info --format '{{.Driver}}' 2>/dev/null), pid $(our_pid || echo '?')"
    [[ $NETWORK_MODE == host ]] && log "NOTE: no bridge network; use 'docker build/run --network host'"
    [[ $SOCK != /var/run/docker.sock ]] && log "NOTE: export DOCKER_HOST=unix://$SOCK"
    return 0
}

cmd_stop() {
    local pid m containerd_pid=""
    # dockerd's own containerd writes its pid here; remember it in case dockerd must be KILLed.
    [[ -s $EXEC_ROOT/containerd/containerd.pid ]] && containerd_pid=$(<"$EXEC_ROOT/containerd/containerd.pid")
    if pid=$(our_pid); then
        log "stopping dockerd (pid $pid); running containers get stopped by the daemon"
        stop_pid "$pid" 45
    else
        log "dockerd not running (no live pid in $PIDFILE)"
    fi
    if [[ $containerd_pid =~ ^[0-9]+$ ]] && kill -0 "$containerd_pid" 2>/dev/null \
        && [[ $(cat "/proc/$containerd_pid/comm" 2>/dev/null) == containerd ]]; then
        log "stopping leftover containerd (pid $containerd_pid)"
        stop_pid "$containerd_pid" 15
    fi
    if ! our_pid >/dev/null; then
        # With the daemon gone, nothing owns mounts left under our root (e.g. the nsfs mount of
        # exec/netns/default, overlays after a KILL); drop them so the folder can be deleted.
        awk -v r="$ROOT" 'index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done
    fi
    rm -f "$PIDFILE" "$ROOT/dockerd.launch.pid"
    log "stopped"
}

cmd_status() {
    local pid
    if engine_answers; then
        if pid=$(our_pid); then
            log "running: pid $pid, socket $SOCK, data root $DATA_ROOT, network mode $(cat "$ROOT/network-mode" 2>/dev/null || echo '?')"
        else
            log "an engine answers on $SOCK (not started by this script)"
        fi
        return 0
    fi
    if pid=$(our_pid); then
        log "dockerd pid $pid alive but the engine does not answer on $SOCK"
    else
        log "not running"
    fi
    return 1
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
