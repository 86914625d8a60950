#!/usr/bin/env bash
# Cloud Run entrypoint: nginx on $PORT in front of one crm-service worker, in one container.
#
#   (no arguments)      render nginx.conf for $PORT, run `crm-service migrate` when
#                       MIGRATE_ON_START=true, start the worker (as user crm-service), wait
#                       for its socket, start nginx in the foreground; SIGTERM/SIGINT stop
#                       both gracefully; when either exits, the other is stopped and the
#                       container exits (non-zero unless a stop was asked for).
#   render-nginx DIR    only write DIR/nginx.conf (used by the tests) and exit.
#   COMMAND ...         run COMMAND as user crm-service, e.g. `crm-service migrate` in a
#                       Cloud Run job with this image.
#
# Environment (besides the worker's own, see README.md "Configuration"):
#   PORT                     set by Cloud Run (default 8080)
#   MIGRATE_ON_START         true: migrate before starting (safe with many instances: advisory lock)
#   METRICS_PORT             127.0.0.1 port serving /metrics for a sidecar (default 9464)
#   NGINX_WORKER_PROCESSES   default 2
#   FCGI_SOCKET              default /run/crm-service/fcgi-<random>.sock (also read by the worker)
#   NGINX_TEMPLATE           default /usr/local/share/crm-service/cloudrun-nginx.conf
set -euo pipefail

BIN=/usr/local/bin/crm-service
NGINX_RUN_DIR=/run/crm-nginx
NGINX_TEMPLATE="${NGINX_TEMPLATE:-/usr/local/share/crm-service/cloudrun-nginx.conf}"
PORT="${PORT:-8080}"
METRICS_PORT="${METRICS_PORT:-9464}"
NGINX_WORKER_PROCESSES="${NGINX_WORKER_PROCESSES:-2}"
# The worker's delivery identity is host name + socket ("a restarted worker takes back its own
# in-flight deliveries at once"). Cloud Run instances need not have distinct host names, so the
# default socket name is unique per container start.
if [ -z "${FCGI_SOCKET:-}" ]; then
    FCGI_SOCKET="/run/crm-service/fcgi-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n').sock"
fi
export FCGI_SOCKET

log() { echo "entrypoint: $*" >&2; }
die() { log "error: $*"; exit 1; }

is_port() { [[ "$1" =~ ^[0-9]{1,5}$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
is_true() { case "${1,,}" in 1|true|yes|on) return 0 ;; *) return 1 ;; esac; }

# sed replacement text: escape \, | and &.
esc() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

# nginx's address for FCGI_SOCKET: /path -> unix:/path, :port -> 127.0.0.1:port, host:port.
fcgi_upstream() {
    case "$FCGI_SOCKET" in
        /*) printf 'unix:%s' "$FCGI_SOCKET" ;;
        :*) printf '127.0.0.1%s' "$FCGI_SOCKET" ;;
        *:*) printf '%s' "$FCGI_SOCKET" ;;
        *) return 1 ;;
    esac
}

render_nginx() { # render_nginx DIR
    local dir="$1" upstream
    is_port "$PORT" || die "PORT must be a port number (got '$PORT')"
    is_port "$METRICS_PORT" || die "METRICS_PORT must be a port number (got '$METRICS_PORT')"
    [ "$METRICS_PORT" != "$PORT" ] || die "METRICS_PORT must differ from PORT ($PORT)"
    [[ "$NGINX_WORKER_PROCESSES" =~ ^([1-9][0-9]{0,2}|auto)$ ]] \
        || die "NGINX_WORKER_PROCESSES must be a number or auto (got '$NGINX_WORKER_PROCESSES')"
    upstream="$(fcgi_upstream)" || die "FCGI_SOCKET must be a /path, :port or host:port (got '$FCGI_SOCKET')"
    [ -r "$NGINX_TEMPLATE" ] || die "nginx template $NGINX_TEMPLATE not found"
    mkdir -p -- "$dir"
    sed -e "s|__PORT__|$(esc "$PORT")|g" \
        -e "s|__METRICS_PORT__|$(esc "$METRICS_PORT")|g" \
        -e "s|__FCGI_UPSTREAM__|$(esc "$upstream")|g" \
        -e "s|__RUN_DIR__|$(esc "$dir")|g" \
        -e "s|__WORKERS__|$(esc "$NGINX_WORKER_PROCESSES")|g" \
        "$NGINX_TEMPLATE" >"$dir/nginx.conf"
}

# The worker and its commands run as crm-service when we are root (Cloud Run's default).
as_service_user=()
if [ "$(id -u)" -eq 0 ] && getent passwd crm-service >/dev/null; then
    as_service_user=(setpriv --reuid=crm-service --regid=crm-service --init-groups --no-new-privs --)
fi

case "${1:-}" in
    render-nginx)
        [ $# -eq 2 ] || die "usage: $0 render-nginx DIR"
        render_nginx "$2"
        echo "$2/nginx.conf"
        exit 0
        ;;
    "") ;;
    *)
        cd /var/lib/crm-service 2>/dev/null || true
        exec "${as_service_user[@]}" "$@"
        ;;
esac

# --- start ------------------------------------------------------------------------------
render_nginx "$NGINX_RUN_DIR"
nginx -t -q -p "$NGINX_RUN_DIR/" -c "$NGINX_RUN_DIR/nginx.conf" -e stderr || die "nginx -t failed"

if [ -n "${INSTANCE_CONNECTION_NAME:-}" ] && [ ! -e "/cloudsql/$INSTANCE_CONNECTION_NAME" ]; then
    log "warning: /cloudsql/$INSTANCE_CONNECTION_NAME does not exist: deploy with --add-cloudsql-instances=$INSTANCE_CONNECTION_NAME"
fi

case "$FCGI_SOCKET" in
    /*)
        sock_dir="$(dirname -- "$FCGI_SOCKET")"
        if [ "$(id -u)" -eq 0 ] && [ "${#as_service_user[@]}" -gt 0 ]; then
            install -d -m 0755 -o crm-service -g crm-service -- "$sock_dir"
        else
            mkdir -p -- "$sock_dir"
        fi
        # A socket left by an earlier run would pass the readiness check below at once.
        if [ -S "$FCGI_SOCKET" ]; then rm -f -- "$FCGI_SOCKET"; fi
        ;;
esac
cd /var/lib/crm-service 2>/dev/null || cd /

# From here on SIGTERM/SIGINT only set a flag (bash as PID 1 would otherwise ignore them).
stop_requested=0
trap 'stop_requested=1' TERM INT

if is_true "${MIGRATE_ON_START:-false}"; then
    log "migrating the database (MIGRATE_ON_START=true)"
    "${as_service_user[@]}" "$BIN" migrate || die "crm-service migrate failed"
    if [ "$stop_requested" = 1 ]; then log "stopped during migration"; exit 0; fi
fi

worker_pid="" nginx_pid=""
"${as_service_user[@]}" "$BIN" serve &
worker_pid=$!

# Wait for the worker's socket (it checks the configuration first and exits 2 on problems).
ready=0
for _ in $(seq 1 300); do
    [ "$stop_requested" = 1 ] && break
    if ! kill -0 "$worker_pid" 2>/dev/null; then
        set +e; wait "$worker_pid"; status=$?; set -e
        log "crm-service serve exited during start-up (status $status)"
        exit "$(( status == 0 ? 1 : status ))"
    fi
    case "$FCGI_SOCKET" in
        /*) [ -S "$FCGI_SOCKET" ] && { ready=1; break; } ;;
        *) (exec 3<>"/dev/tcp/$(fcgi_upstream | sed 's/:[0-9]*$//')/${FCGI_SOCKET##*:}") 2>/dev/null && { ready=1; break; } ;;
    esac
    sleep 0.1
done
if [ "$ready" = 1 ]; then
    nginx -p "$NGINX_RUN_DIR/" -c "$NGINX_RUN_DIR/nginx.conf" -e stderr -g 'daemon off;' &
    nginx_pid=$!
    log "nginx on :$PORT -> crm-service on $FCGI_SOCKET"
elif [ "$stop_requested" = 0 ]; then
    log "crm-service did not listen on $FCGI_SOCKET within 30 s"
fi

# stop PID SIGNAL SECONDS: signal PID, wait up to SECONDS for it, and reap it.
stop() {
    local pid="$1" sig="$2" seconds="$3" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null && kill "-$sig" "$pid" 2>/dev/null || true
    for (( i = 0; i < seconds * 10; i++ )); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Run until a stop is asked for or either process exits.
exit_status=0
if [ "$ready" = 1 ]; then
    while [ "$stop_requested" = 0 ]; do
        finished=""
        set +e
        wait -n -p finished "$worker_pid" "$nginx_pid"
        status=$?
        set -e
        [ "$stop_requested" = 1 ] && break
        if [ -n "$finished" ]; then
            if [ "$finished" = "$worker_pid" ]; then
                log "crm-service exited (status $status); stopping nginx"
                worker_pid=""
            else
                log "nginx exited (status $status); stopping crm-service"
                nginx_pid=""
            fi
            exit_status=$(( status == 0 ? 1 : status ))
            break
        fi
    done
else
    exit_status=1
fi
if [ "$stop_requested" = 1 ]; then
    log "stopping (signal)"
    exit_status=0
fi

# nginx first (graceful: in-flight requests, which need the worker, finish), then the worker
# (stops accepting, drains, exits 0). Cloud Run allows 10 s after SIGTERM before SIGKILL.
stop "$nginx_pid" QUIT "${NGINX_STOP_SECONDS:-5}"
if [ -n "$worker_pid" ]; then
    kill -TERM "$worker_pid" 2>/dev/null || true
    while :; do
        set +e; wait "$worker_pid"; status=$?; set -e
        # Above 128: the worker died of a signal, or another signal interrupted wait (loop).
        if [ "$status" -le 128 ] || ! kill -0 "$worker_pid" 2>/dev/null; then break; fi
    done
    # A stop asked for ends 0 only if the worker drained cleanly.
    if [ "$stop_requested" = 1 ] && [ "$status" -ne 0 ]; then exit_status="$status"; fi
fi
log "exit $exit_status"
exit "$exit_status"
