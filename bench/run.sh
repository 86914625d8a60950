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

# The project's own dependencies plus the bench-only packages (a no-op when they are there).
BENCH_PACKAGES=(wrk libnginx-mod-http-echo)
case " $* " in *" --profile "*) BENCH_PACKAGES+=(linux-perf strace valgrind) ;; esac
scripts/deps.sh "${BENCH_PACKAGES[@]}" >&2

if [ "${BENCH_SKIP_BUILD:-}" != 1 ]; then
    say "swift build -c release --static-swift-stdlib"
    swift build -c release --static-swift-stdlib >&2
fi

install -d -m 0755 "$RUN" "$RUN/bin"
say "building the C floor (bench/floor/floor.c)"
# shellcheck disable=SC2046  # pkg-config output is a list of flags
gcc -O2 -g -Wall -Wextra -pthread bench/floor/floor.c $(pkg-config --cflags --libs fcgi libpq libcurl) -o "$RUN/bin/floor"

exec python3 bench/bench.py --binary "$REPO/.build/release/crm-service" --floor "$RUN/bin/floor" "$@"
