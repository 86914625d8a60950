#!/usr/bin/env bash
# `make bench`: installs what the benchmark needs (once), builds the release worker and the C floor,
# then runs bench/bench.py (which starts and stops everything else by PID).
#
#   bench/run.sh             the benchmark: a Markdown table on stdout, bench/results/latest.json
#   bench/run.sh --profile perf   the worker under `perf record` at load: top symbols
#
# Knobs (environment): see bench/README.md. Not part of `make test`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
RUN="$REPO/.run/bench"

say() { echo "bench: $*" >&2; }

# The project's own dependencies (a no-op when they are there), then the bench-only packages.
scripts/deps.sh >&2

BENCH_PACKAGES=(wrk libnginx-mod-http-echo)
case " $* " in *" --profile "*) BENCH_PACKAGES+=(linux-perf) ;; esac
missing=()
for p in "${BENCH_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { say "missing ${missing[*]}; run as root to install"; exit 1; }
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Installing an nginx module may try to (re)start the system nginx: forbid service starts.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        own_policy=1
    fi
    cleanup_policy() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; own_policy=0; }
    trap cleanup_policy EXIT
    apt-get install -y -q "${missing[@]}" >&2 || { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
    cleanup_policy
    trap - EXIT
fi

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
    say "swift build -c release"
    swift build -c release >&2
fi

install -d -m 0755 "$RUN" "$RUN/bin"
say "building the C floor (bench/floor/floor.c)"
# shellcheck disable=SC2046  # pkg-config output is a list of flags
gcc -O2 -g -Wall -Wextra -pthread bench/floor/floor.c $(pkg-config --cflags --libs fcgi libpq libcurl) -o "$RUN/bin/floor"

exec python3 bench/bench.py --binary "$REPO/.build/release/crm-service" --floor "$RUN/bin/floor" "$@"
