#!/usr/bin/env bash
# A private PostgreSQL 15 cluster for development and tests, under .run/pg in the repo.
#
#   scripts/pg.sh start    initialise (first time) and start; already running -> ok
#   scripts/pg.sh stop     stop it (pg_ctl stop -m fast) and wait; not running -> ok
#   scripts/pg.sh status   print running/stopped; exit 0 when running, 3 when not
#   scripts/pg.sh dsn [DB] print the libpq DSN (DB defaults to crm; crm_test also exists)
#
# THROWAWAY CLUSTER: authentication is `trust` for local sockets and loopback TCP, and it
# listens on 127.0.0.1 only. It holds development and test data, never anything real.
# Production uses its own PostgreSQL (DB_DSN); nothing here is meant for it.
#
# Environment: PGPORT (default 54329).
# PostgreSQL refuses to run as root, so the cluster belongs to the `postgres` system user
# (created by Debian's postgresql package) and its commands run through runuser.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${PGPORT:-54329}"
PGBIN=/usr/lib/postgresql/15/bin
RUN="$REPO/.run"
ROOT="$RUN/pg"
DATA="$ROOT/data"
SOCK="$ROOT/sock"
LOG="$ROOT/log"
PIDFILE="$ROOT/postgres.pid"
DATABASES=(crm crm_test)

die() { echo "pg.sh: $*" >&2; exit 1; }

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    elif [ "$(id -un)" = postgres ]; then
        "$@"
    else
        die "must run as root (or as postgres)"
    fi
}

dsn() { echo "host=127.0.0.1 port=$PORT dbname=${1:-crm} user=postgres"; }

# PID of the running postmaster, or nothing.
running_pid() {
    local pid=""
    [ -f "$PIDFILE" ] && pid="$(head -n1 "$PIDFILE" 2>/dev/null || true)"
    if [ -z "$pid" ] && [ -f "$DATA/postmaster.pid" ]; then
        pid="$(head -n1 "$DATA/postmaster.pid" 2>/dev/null || true)"
    fi
    case "$pid" in ''|*[!0-9]*) return 0 ;; esac
    # Only a postgres process counts (a stale pid may have been reused by something else).
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ]; then
        echo "$pid"
    fi
}

ready() { "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -d postgres -U postgres -t 2; }

psql_admin() { # psql_admin DB SQL
    PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" "$(dsn "$1")" -X -q -v ON_ERROR_STOP=1 -At -c "$2"
}

prepare_dirs() {
    [ -x "$PGBIN/initdb" ] || die "$PGBIN/initdb not found: run scripts/deps.sh"
    id postgres >/dev/null 2>&1 || die "no 'postgres' system user: run scripts/deps.sh"
    install -d -m 0755 "$RUN"
    install -d -m 0755 -o postgres -g postgres "$ROOT"
    # The postgres user must be able to reach .run/pg through the repo's parent folders.
    as_pg test -w "$ROOT" ||
        die "user postgres cannot reach $ROOT (a parent folder is not traversable; chmod o+x it)"
    install -d -m 0755 -o postgres -g postgres "$SOCK"
    [ -e "$LOG" ] || install -m 0600 -o postgres -g postgres /dev/null "$LOG"
}

init_cluster() {
    [ -f "$DATA/PG_VERSION" ] && return 0
    echo "pg.sh: initialising a new cluster in $DATA"
    rm -rf "$DATA"
    install -d -m 0700 -o postgres -g postgres "$DATA"
    as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        --no-instructions >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "initdb failed"; }
    # Throwaway dev/test cluster: trust on the unix socket and on loopback only.
    as_pg tee "$DATA/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
host    all       all   ::1/128        trust
EOF
    echo "include_if_exists = 'crm-dev.conf'" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
}

write_settings() {
    # Rewritten on every start so PGPORT and the repo location may change between runs.
    as_pg tee "$DATA/crm-dev.conf" >/dev/null <<EOF
# Written by scripts/pg.sh on every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 200
fsync = on
synchronous_commit = on
# Keep bound parameters (the encryption key among them) out of the server log.
log_parameter_max_length = 0
log_parameter_max_length_on_error = 0
logging_collector = off
log_timezone = 'UTC'
timezone = 'UTC'
EOF
}

create_databases() {
    local db
    for db in "${DATABASES[@]}"; do
        if [ "$(psql_admin postgres "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
            psql_admin postgres "CREATE DATABASE $db" >/dev/null
        fi
        psql_admin "$db" "CREATE EXTENSION IF NOT EXISTS pgcrypto" >/dev/null
    done
}

start() {
    prepare_dirs
    local pid
    pid="$(running_pid)"
    if [ -n "$pid" ]; then
        echo "$pid" >"$PIDFILE"
        local i
        for i in $(seq 1 60); do ready && break; sleep 0.5; done
        ready || die "postgres (pid $pid) is running but not answering on port $PORT; see $LOG"
        create_databases
        echo "pg.sh: already running (pid $pid, port $PORT)"
        return 0
    fi
    init_cluster
    write_settings
    if ready; then
        die "something else already answers on 127.0.0.1:$PORT (set PGPORT to another port)"
    fi
    echo "pg.sh: starting PostgreSQL on 127.0.0.1:$PORT (log: $LOG)"
    # 9>&-: the server must not inherit the lock's descriptor (it would hold the lock forever).
    if ! as_pg "$PGBIN/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 -s >/dev/null 2>>"$LOG" 9>&-; then
        tail -n 20 "$LOG" >&2
        die "could not start PostgreSQL"
    fi
    local i
    for i in $(seq 1 60); do ready && break; sleep 0.5; done
    ready || { tail -n 20 "$LOG" >&2; die "PostgreSQL did not become ready"; }
    pid="$(head -n1 "$DATA/postmaster.pid")"
    echo "$pid" >"$PIDFILE"
    create_databases
    echo "pg.sh: running (pid $pid)"
}

stop() {
    local pid
    pid="$(running_pid)"
    if [ -z "$pid" ]; then
        rm -f "$PIDFILE"
        echo "pg.sh: not running"
        return 0
    fi
    echo "pg.sh: stopping PostgreSQL (pid $pid)"
    as_pg "$PGBIN/pg_ctl" stop -D "$DATA" -m fast -w -t 60 -s 2>>"$LOG" || true
    local i
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "pg.sh: pid $pid still running after fast shutdown; sending SIGQUIT" >&2
        kill -QUIT "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    kill -0 "$pid" 2>/dev/null && die "could not stop pid $pid"
    rm -f "$PIDFILE"
    echo "pg.sh: stopped"
}

status() {
    local pid
    pid="$(running_pid)"
    if [ -n "$pid" ]; then
        echo "running (pid $pid, port $PORT)"
    else
        echo "stopped"
        return 3
    fi
}

# Serialise start/stop between concurrent callers (make run and make test, say).
with_lock() {
    install -d -m 0755 "$RUN"
    exec 9>"$RUN/pg.lock"
    flock -w 120 9 || die "timed out waiting for $RUN/pg.lock"
    "$@"
}

case "${1:-}" in
    start) with_lock start ;;
    stop) with_lock stop ;;
    status) status ;;
    dsn) dsn "${2:-crm}" ;;
    *) echo "usage: $0 {start|stop|status|dsn [DB]}" >&2; exit 2 ;;
esac
