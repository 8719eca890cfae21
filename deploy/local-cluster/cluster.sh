#!/usr/bin/env bash
# The multi-instance topology without containers, for tests and demos: several gunicorn
# instances of the service on loopback ports behind one nginx load balancer.
#
#   deploy/local-cluster/cluster.sh start    # start instances + nginx (daemon), wait until ready
#   deploy/local-cluster/cluster.sh status   # what is up; exit 0 only when everything is
#   deploy/local-cluster/cluster.sh stop     # stop nginx, then every instance, gracefully
#   deploy/local-cluster/cluster.sh run      # start instances, nginx in the foreground;
#                                            # Ctrl-C / SIGTERM stops everything
#
#   client -> nginx 127.0.0.1:$PORT (least_conn, passive health checks, retry elsewhere)
#               -> gunicorn 127.0.0.1:18001 | 127.0.0.1:18002 | 127.0.0.1:18003
#
# Everything it writes is under the run folder (default /tmp/ad-purchase-cluster):
#   cluster.env          the ports the cluster was started with (stop/status read it back)
#   nginx.conf           rendered from nginx.conf.template beside this script
#   nginx.pid  pids/instance-PORT.pid
#   logs/nginx-access.log (upstream=... names the instance of each request)
#   logs/nginx-error.log  logs/instance-PORT.log (the instance's request log and gunicorn's log)
#   metrics/instance-PORT/ each instance's PROMETHEUS_MULTIPROC_DIR
#   nginx-temp/           nginx's request-body and proxy buffers
#
# Environment knobs (all optional):
#   PORT                      nginx's port                                (default 1313)
#   CLUSTER_PORTS             instance ports, space-separated     (default "18001 18002 18003")
#   WEB_CONCURRENCY           gunicorn workers per instance               (default 2)
#   WORKER_CLASS, THREADS     as for ./run_api.sh (default: the gevent worker of gunicorn.conf.py)
#   MODEL_DIR                 the model artifacts the instances load      (default: repo's objs/)
#   CLUSTER_RUN_DIR           the run folder                 (default /tmp/ad-purchase-cluster)
#   CLUSTER_MAX_FAILS, CLUSTER_FAIL_TIMEOUT   passive health check        (default 1 and 10s)
#   CLUSTER_START_TIMEOUT     seconds to wait for every /ready and nginx  (default 120)
#   CLUSTER_STOP_TIMEOUT      seconds to wait for a graceful stop         (default 40)
#   CLUSTER_GUNICORN          the gunicorn to run               (default REPO/.venv/bin/gunicorn)
#   CLUSTER_NGINX             the nginx binary                  (default: nginx on PATH or /usr/sbin)
#                             (not NGINX: nginx itself reads that variable, for socket handover)
# nginx comes from Debian's `nginx` package: apt-get update && apt-get install -y nginx
# Run as root, nginx's worker process runs as `nobody` and writes request-body buffers under the
# run folder: keep that folder readable by all (the default under /tmp is).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TEMPLATE=$HERE/nginx.conf.template
RUN_DIR=${CLUSTER_RUN_DIR:-/tmp/ad-purchase-cluster}
START_TIMEOUT=${CLUSTER_START_TIMEOUT:-120}
STOP_TIMEOUT=${CLUSTER_STOP_TIMEOUT:-40}
GUNICORN=${CLUSTER_GUNICORN:-$REPO/.venv/bin/gunicorn}

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_nginx() {
    if [[ -n ${CLUSTER_NGINX:-} ]]; then echo "$CLUSTER_NGINX"; return; fi
    command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true
}

# The settings of a running cluster come from its cluster.env, so stop/status act on what was
# started whatever the caller's environment says now; a new start takes them from the environment.
load_settings() {
    if [[ ${1:-} != fresh && -f $RUN_DIR/cluster.env ]]; then
        # shellcheck disable=SC1091
        source "$RUN_DIR/cluster.env"
    else
        NGINX_PORT=${PORT:-1313}
        INSTANCE_PORTS=${CLUSTER_PORTS:-18001 18002 18003}
    fi
    read -r -a PORTS <<<"$INSTANCE_PORTS"
    ((${#PORTS[@]} > 0)) || die "no instance ports"
}

pidfile() { echo "$RUN_DIR/pids/instance-$1.pid"; }

# The pid in FILE if that process is alive and is the program we expect (a stale pidfile whose
# pid was reused by something else must never be signalled).
live_pid() {
    local file=$1 expect=$2 pid
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    grep -qa -- "$expect" "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

http_code() {   # prints the HTTP status of GET URL, 000 when nothing answers
    curl --silent --noproxy '*' --output /dev/null --max-time 3 --write-out '%{http_code}' "$1" 2>/dev/null || true
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# shellcheck disable=SC2016
render_nginx_conf() {   # $1 = on | off (nginx's daemon directive)
    local max_fails=${CLUSTER_MAX_FAILS:-1} fail_timeout=${CLUSTER_FAIL_TIMEOUT:-10s}
    local servers="" p text
    for p in "${PORTS[@]}"; do
        servers+="        server 127.0.0.1:$p max_fails=$max_fails fail_timeout=$fail_timeout;"$'\n'
    done
    text=$(<"$TEMPLATE")
    # The placeholders are literal text, hence the single quotes below.
    # Replacements in double quotes: taken literally (an & in a path stays an &).
    servers=${servers%$'\n'}
    text=${text//'${DAEMON}'/"$1"}
    text=${text//'${LISTEN}'/"127.0.0.1:$NGINX_PORT"}
    text=${text//'${UPSTREAM_SERVERS}'/"$servers"}
    text=${text//'${RUN_DIR}'/"$RUN_DIR"}
    printf '%s\n' "$text" >"$RUN_DIR/nginx.conf"
}

# env -u NGINX: nginx takes that variable as a list of listening sockets handed over to it.
nginx_cmd() { env -u NGINX "$NGINX_BIN" -p "$RUN_DIR/" -c "$RUN_DIR/nginx.conf" -e "$RUN_DIR/logs/nginx-error.log" "$@"; }

declare -A LAUNCHED=()   # port -> pid of the process started for it (gunicorn's master)

start_instances() {
    local p
    for p in "${PORTS[@]}"; do
        if live_pid "$(pidfile "$p")" gunicorn >/dev/null; then
            log "instance :$p already running"
            continue
        fi
        port_busy "$p" && die "port $p is in use by another program"
        rm -f "$(pidfile "$p")"
        # setsid: each instance is its own process group (master + workers), so stop can reach
        # the workers too, and a terminal's Ctrl-C does not hit instances started by `start`.
        (
            cd "$REPO"
            export PORT=$p WEB_CONCURRENCY=${WEB_CONCURRENCY:-2}
            # Each instance its own metrics folder (gunicorn.conf.py empties it at start).
            export PROMETHEUS_MULTIPROC_DIR=$RUN_DIR/metrics/instance-$p
            exec setsid "$GUNICORN" --config gunicorn.conf.py --bind "127.0.0.1:$p" \
                --pid "$(pidfile "$p")" api:app
        ) >>"$RUN_DIR/logs/instance-$p.log" 2>&1 </dev/null &
        LAUNCHED[$p]=$!
        log "instance :$p starting (log: $RUN_DIR/logs/instance-$p.log)"
    done
}

wait_ready() {   # every instance's /ready answers 200, within START_TIMEOUT seconds
    local deadline=$((SECONDS + START_TIMEOUT)) p pending
    while :; do
        pending=()
        for p in "${PORTS[@]}"; do
            [[ $(http_code "http://127.0.0.1:$p/ready") == 200 ]] || pending+=("$p")
        done
        ((${#pending[@]} == 0)) && return 0
        for p in "${pending[@]}"; do
            # An instance whose process is gone will not become ready: say so now instead of
            # waiting out the timeout.
            if [[ -n ${LAUNCHED[$p]:-} ]] && ! kill -0 "${LAUNCHED[$p]}" 2>/dev/null; then
                tail -n 20 "$RUN_DIR/logs/instance-$p.log" >&2 || true
                die "instance :$p exited during start"
            fi
        done
        ((SECONDS < deadline)) || {
            for p in "${pending[@]}"; do tail -n 20 "$RUN_DIR/logs/instance-$p.log" >&2 || true; done
            die "instances not ready after ${START_TIMEOUT}s: ${pending[*]}"
        }
        sleep 0.5
    done
}

wait_nginx() {
    local deadline=$((SECONDS + 15))
    until [[ $(http_code "http://127.0.0.1:$NGINX_PORT/ready") == 200 ]]; do
        ((SECONDS < deadline)) || die "nginx does not answer on 127.0.0.1:$NGINX_PORT (see $RUN_DIR/logs/nginx-error.log)"
        sleep 0.2
    done
}

prepare() {   # $1 = on | off
    NGINX_BIN=$(find_nginx)
    [[ -n $NGINX_BIN ]] || die "nginx not found: apt-get update && apt-get install -y nginx"
    [[ -x $GUNICORN ]] || die "$GUNICORN not found: create the venv first (./run_tests.sh or pip install -r requirements.txt)"
    mkdir -p "$RUN_DIR"/{logs,pids,metrics,nginx-temp}
    printf 'NGINX_PORT=%q\nINSTANCE_PORTS=%q\n' "$NGINX_PORT" "${PORTS[*]}" >"$RUN_DIR/cluster.env"
    render_nginx_conf "$1"
    nginx_cmd -t -q || die "generated $RUN_DIR/nginx.conf does not pass nginx -t"
}

# After a failed start: stop nginx and the instances, including those still loading the model
# (they have written no pidfile yet; their launch pid is their process group).
abort_start() {
    local p pid deadline=$((SECONDS + 15))
    log "start failed: stopping what was started"
    cmd_stop >/dev/null 2>&1 || true
    for p in "${!LAUNCHED[@]}"; do
        kill -TERM -- "-${LAUNCHED[$p]}" 2>/dev/null || true
    done
    for p in "${!LAUNCHED[@]}"; do
        pid=${LAUNCHED[$p]}
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
}

cmd_start() {
    load_settings fresh
    if live_pid "$RUN_DIR/nginx.pid" nginx >/dev/null; then
        die "a cluster already runs from $RUN_DIR (stop it first, or set CLUSTER_RUN_DIR)"
    fi
    port_busy "$NGINX_PORT" && die "port $NGINX_PORT is in use by another program"
    prepare on
    # A start that fails half-way stops what it started, rather than leave it running.
    trap 'if (($? != 0)); then abort_start; fi' EXIT
    start_instances
    wait_ready
    # The daemon must not keep the caller's stdout/stderr open (a caller reading them to the end
    # would wait forever); what nginx prints goes to its error log.
    nginx_cmd </dev/null >>"$RUN_DIR/logs/nginx-error.log" 2>&1 || {
        tail -n 20 "$RUN_DIR/logs/nginx-error.log" >&2
        die "nginx did not start"
    }
    wait_nginx
    trap - EXIT
    log "ready: http://127.0.0.1:$NGINX_PORT -> ${PORTS[*]/#/127.0.0.1:}"
}

cmd_run() {
    load_settings fresh
    port_busy "$NGINX_PORT" && die "port $NGINX_PORT is in use by another program"
    prepare off
    trap 'cmd_stop_instances' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_instances
    wait_ready
    log "serving on http://127.0.0.1:$NGINX_PORT (nginx in the foreground; Ctrl-C stops)"
    # Not exec: this shell stays to stop the instances once nginx exits. nginx runs in the
    # background of this shell and `wait` returns on a signal, so Ctrl-C / TERM get handled.
    # A simple command, not the nginx_cmd function: $! must be nginx itself, not a subshell.
    env -u NGINX "$NGINX_BIN" -p "$RUN_DIR/" -c "$RUN_DIR/nginx.conf" -e "$RUN_DIR/logs/nginx-error.log" &
    NGINX_FG_PID=$!
    trap 'kill -QUIT "$NGINX_FG_PID" 2>/dev/null; wait "$NGINX_FG_PID" 2>/dev/null; exit 130' INT
    trap 'kill -QUIT "$NGINX_FG_PID" 2>/dev/null; wait "$NGINX_FG_PID" 2>/dev/null; exit 143' TERM
    wait "$NGINX_FG_PID"
}

# Stop the instances, all at once: TERM to each master (gunicorn lets workers finish the requests
# in flight, then exits), then KILL to the process group (master + workers) of any still there
# after STOP_TIMEOUT seconds, and to workers left behind by a master that was killed.
cmd_stop_instances() {
    local p pid deadline
    local -A masters=()
    for p in "${PORTS[@]}"; do
        if pid=$(live_pid "$(pidfile "$p")" gunicorn); then
            log "stopping instance :$p (pid $pid)"
            kill -TERM "$pid" 2>/dev/null && masters[$p]=$pid
        fi
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    for p in "${!masters[@]}"; do
        pid=${masters[$p]}
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && log "instance :$p did not stop in ${STOP_TIMEOUT}s: killing"
    done
    for p in "${PORTS[@]}"; do
        # The group id is the master's pid (setsid); also when the master is already gone.
        pid=${masters[$p]:-$(cat "$(pidfile "$p")" 2>/dev/null || true)}
        if [[ $pid =~ ^[0-9]+$ ]]; then
            pgrep -g "$pid" -f gunicorn | xargs -r kill -KILL 2>/dev/null || true
        fi
        rm -f "$(pidfile "$p")"
    done
}

cmd_stop() {
    load_settings
    local pid deadline
    if pid=$(live_pid "$RUN_DIR/nginx.pid" nginx); then
        log "stopping nginx (pid $pid)"
        kill -QUIT "$pid" 2>/dev/null || true     # graceful: finish requests in flight
        deadline=$((SECONDS + STOP_TIMEOUT))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && { log "nginx did not stop: killing"; kill -KILL "$pid" 2>/dev/null || true; }
        # Its worker processes exit with the master; any left are in the same process group only
        # when nginx was started from an interactive shell, so find them by parent pid instead.
        pkill -KILL -P "$pid" 2>/dev/null || true
    fi
    cmd_stop_instances
    rm -f "$RUN_DIR/nginx.pid"
    log "stopped"
}

cmd_status() {
    load_settings
    local p pid code ok=0
    if pid=$(live_pid "$RUN_DIR/nginx.pid" nginx); then
        code=$(http_code "http://127.0.0.1:$NGINX_PORT/ready")
        printf '%-22s %-8s pid %-8s /ready %s\n' "nginx 127.0.0.1:$NGINX_PORT" up "$pid" "$code"
        [[ $code == 200 ]] || ok=1
    else
        printf '%-22s %s\n' "nginx 127.0.0.1:$NGINX_PORT" down
        ok=1
    fi
    for p in "${PORTS[@]}"; do
        if pid=$(live_pid "$(pidfile "$p")" gunicorn); then
            code=$(http_code "http://127.0.0.1:$p/ready")
            printf '%-22s %-8s pid %-8s /ready %s  workers %s\n' "instance 127.0.0.1:$p" up "$pid" "$code" \
                "$(pgrep -c -P "$pid" 2>/dev/null || true)"
            [[ $code == 200 ]] || ok=1
        else
            printf '%-22s %s\n' "instance 127.0.0.1:$p" down
            ok=1
        fi
    done
    return "$ok"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    run) cmd_run ;;
    -h | --help | help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" ;;
    *) echo "usage: $0 start|stop|status|run" >&2; exit 2 ;;
esac
