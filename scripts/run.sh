#!/usr/bin/env bash
# `make run`: build the release binary, start PostgreSQL (unless DB_DSN is given), apply the
# schema, start the FastCGI worker and nginx in front of it, and stay in the foreground.
# Ctrl-C (or SIGTERM) stops nginx, the worker, and PostgreSQL if this script started it —
# each by its PID.
#
# Configuration comes from the environment or ./.env (see README / API.md "Configuration").
# Defaults here: PORT=8001, FCGI_SOCKET=.run/crm.sock, a local dev database, and a dev-only
# CRM_ENCRYPTION_KEY kept in .run/dev-encryption-key.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
RUN="$REPO/.run"

log() { echo "run.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# The value of KEY in ./.env, if it sets one (KEY=value, optionally quoted or `export`ed).
env_file_get() {
    [ -f .env ] || return 1
    local line
    line="$(grep -E "^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=" .env | tail -n1)" || return 1
    line="${line#*=}"
    line="${line#"${line%%[![:space:]]*}"}"   # trim leading blanks
    line="${line%"${line##*[![:space:]]}"}"   # trim trailing blanks
    case "$line" in
        \"*\") line="${line:1:${#line}-2}" ;;
        \'*\') line="${line:1:${#line}-2}" ;;
    esac
    printf '%s\n' "$line"
}

# Use the environment's value, else .env's, else the default; export the result.
setting() { # setting NAME DEFAULT
    local value
    if [ -n "${!1:-}" ]; then value="${!1}"
    elif value="$(env_file_get "$1")" && [ -n "$value" ]; then :
    else value="$2"; fi
    export "$1=$value"
}

nginx_pid="" worker_pid="" started_pg=0 cleaned=0
cleanup() {
    [ "$cleaned" = 1 ] && return 0
    cleaned=1
    trap - INT TERM
    local pid i
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        log "stopping nginx (pid $nginx_pid)"
        kill -QUIT "$nginx_pid" 2>/dev/null || true
        for i in $(seq 1 100); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$nginx_pid" 2>/dev/null && kill -TERM "$nginx_pid" 2>/dev/null
        wait "$nginx_pid" 2>/dev/null || true
    fi
    if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
        log "stopping crm-service (pid $worker_pid)"
        kill -TERM "$worker_pid" 2>/dev/null || true
        for i in $(seq 1 300); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$worker_pid" 2>/dev/null; then
            log "crm-service did not stop within 30 s; killing it"
            kill -KILL "$worker_pid" 2>/dev/null || true
        fi
        wait "$worker_pid" 2>/dev/null || true
    fi
    if [ "$started_pg" = 1 ]; then
        scripts/pg.sh stop || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/deps.sh
swift build -c release --static-swift-stdlib
BIN="$REPO/.build/release/crm-service"
[ -x "$BIN" ] || die "$BIN was not built"
install -d -m 0755 "$RUN"

# Database: the given DB_DSN, else the private cluster under .run/pg.
if [ -z "${DB_DSN:-}" ] && ! env_file_get DB_DSN >/dev/null && ! env_file_get INSTANCE_CONNECTION_NAME >/dev/null \
        && [ -z "${INSTANCE_CONNECTION_NAME:-}" ]; then
    pg_out="$(scripts/pg.sh start 2>&1)" || { echo "$pg_out" >&2; exit 1; }
    echo "$pg_out"
    case "$pg_out" in *"starting PostgreSQL"*) started_pg=1 ;; esac  # only then stop it at the end
    DB_DSN="$(scripts/pg.sh dsn)"
    export DB_DSN
fi

setting PORT 8001
setting FCGI_SOCKET "$RUN/crm.sock"

if [ -z "${CRM_ENCRYPTION_KEY:-}" ] && ! env_file_get CRM_ENCRYPTION_KEY >/dev/null; then
    keyfile="$RUN/dev-encryption-key"
    if [ ! -s "$keyfile" ]; then
        (umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$keyfile")
    fi
    CRM_ENCRYPTION_KEY="$(cat "$keyfile")"
    export CRM_ENCRYPTION_KEY
    log "WARNING: using the development encryption key in $keyfile."
    log "WARNING: production must set its own CRM_ENCRYPTION_KEY (32 characters) and keep it safe."
fi

"$BIN" migrate || die "crm-service migrate failed"

# A socket file left by an earlier run would make the wait below pass at once.
if [ -S "$FCGI_SOCKET" ]; then
    if python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$FCGI_SOCKET" 2>/dev/null; then
        die "another process is serving $FCGI_SOCKET already"
    fi
    rm -f "$FCGI_SOCKET"
fi

# As deploy/ runs it: GnuTLS (loaded for libcurl's LDAP and RTMP, never used) skips its initialisation.
GNUTLS_NO_IMPLICIT_INIT=1 "$BIN" serve &
worker_pid=$!
for i in $(seq 1 300); do
    [ -S "$FCGI_SOCKET" ] && break
    kill -0 "$worker_pid" 2>/dev/null || { wait "$worker_pid" || true; worker_pid=""; die "crm-service serve exited during start-up"; }
    sleep 0.1
done
[ -S "$FCGI_SOCKET" ] || die "crm-service did not create $FCGI_SOCKET within 30 s"

# nginx, rendered from the template into .run/.
esc() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
sed -e "s|__PORT__|$(esc "$PORT")|g" \
    -e "s|__FCGI_SOCKET__|$(esc "$FCGI_SOCKET")|g" \
    -e "s|__RUN_DIR__|$(esc "$RUN")|g" nginx.conf >"$RUN/nginx.conf"
rm -f "$RUN/nginx.pid"
nginx -p "$RUN/" -c "$RUN/nginx.conf" -e "$RUN/error.log" -g 'daemon off;' &
nginx_pid=$!
for i in $(seq 1 100); do
    kill -0 "$nginx_pid" 2>/dev/null || { wait "$nginx_pid" || true; nginx_pid=""; die "nginx failed to start; see $RUN/error.log"; }
    [ -s "$RUN/nginx.pid" ] && curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health" && break
    sleep 0.1
done

echo "crm-service listening on http://127.0.0.1:$PORT"

# Stay in the foreground until either process ends (or we are interrupted).
set +e
wait -n "$worker_pid" "$nginx_pid"
status=$?
set -e
if ! kill -0 "$worker_pid" 2>/dev/null; then
    log "crm-service exited (status $status)"; worker_pid=""
elif ! kill -0 "$nginx_pid" 2>/dev/null; then
    log "nginx exited (status $status)"; nginx_pid=""
fi
exit "$status"
