#!/usr/bin/env bash
# Regenerates link-order.txt, the order in which the release link lays out the worker's
# functions (Package.swift: lld --symbol-ordering-file). The release worker runs under
# callgrind through a short benchmark (the hot paths: list, event, contact, async + drain)
# and the end-to-end tests (every route, every CRM, the errors); every function that ran is
# listed, hottest first (scripts/link_order.py).
#
#   scripts/link-order.sh          ~15 minutes; then commit link-order.txt
#
# Run it after larger changes. A stale list still links (names it does not know are skipped,
# new functions go after the listed ones): the worker only touches some more pages of code.
# Test failures under callgrind (everything is ~50x slower) do not matter here: only which
# functions ran does.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="$REPO/.run/link-order"
say() { echo "link-order: $*" >&2; }

scripts/deps.sh valgrind wrk libnginx-mod-http-echo >&2
say "swift build -c release --static-swift-stdlib"
swift build -c release --static-swift-stdlib >&2

rm -rf "$OUT"
mkdir -p "$OUT"
# valgrind 3.19 cannot read the DWARF 5 that clang 21 writes: profile a copy without debug
# information (the same code and symbols).
objcopy --strip-debug .build/release/crm-service "$OUT/crm-service"
cat >"$OUT/worker" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --demangle=no --dump-instr=no --dump-line=no --callgrind-out-file=$OUT/callgrind.%p.out $OUT/crm-service "\$@"
EOF
chmod +x "$OUT/worker"

say "benchmark paths under callgrind (log: $OUT/bench.log)"
BENCH_SKIP_BUILD=1 BENCH_SCENARIOS=list,event,slow BENCH_ROUNDS=1 BENCH_SECONDS=3 BENCH_WARMUP_S=1 \
    BENCH_SKIP_INFO=1 BENCH_DRAIN_MAX_S=60 bench/run.sh --binary "$OUT/worker" >"$OUT/bench.log" 2>&1 \
    || say "the benchmark under callgrind exited $? (coverage is what counts)"

say "end-to-end tests under callgrind (log: $OUT/e2e.log)"
started_pg=0
pg_out="$(scripts/pg.sh start 2>&1)" || { echo "$pg_out" >&2; exit 1; }
echo "$pg_out" >&2
case "$pg_out" in *"starting PostgreSQL"*) started_pg=1 ;; esac  # only then stop it at the end
TEST_DB_DSN="$(scripts/pg.sh dsn crm_test)" CRM_BINARY="$OUT/worker" \
    timeout --foreground --kill-after=30 1800 python3 -m pytest -q -o cache_dir="$OUT/pytest_cache" \
    tests/e2e >"$OUT/e2e.log" 2>&1 || say "the e2e tests under callgrind exited $? (coverage is what counts)"
[ "$started_pg" = 1 ] && scripts/pg.sh stop >&2

python3 scripts/link_order.py .build/release/crm-service link-order.txt "$OUT"/callgrind.*.out
