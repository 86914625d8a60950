#!/usr/bin/env bash
# `make fuzz`: the libFuzzer harness (fuzz/crm-fuzz), built with AddressSanitizer into
# .build-fuzz, run on each target for FUZZ_SECONDS (default 60) from its seeds in
# fuzz/corpus/<target>. Not part of `make test`: a fuzzer's run is not repeatable. What the
# targets check: fuzz/README.md.
#   FUZZ_TARGETS="json request"   only these targets
#   FUZZ_SECONDS=600              longer runs
# A finding stops its target's run (the other targets still run, then the script exits 1);
# libFuzzer's input is kept in .run/fuzz/findings/<target>/, its output in .run/fuzz/<target>.log. Replay one: CRM_FUZZ_TARGET=<target> .build-fuzz/release/crm-fuzz FILE
#
# `scripts/fuzz.sh --replay` (part of `make test`): each target's seeds run once under
# AddressSanitizer, no fuzzing; the last line is "fuzz replay: N passed, M failed" (targets).
set -euo pipefail
cd "$(dirname "$0")/.."

replay=0
[ "${1:-}" = "--replay" ] && replay=1
targets=(${FUZZ_TARGETS:-json request fastcgi stored retry-after crm-replies})
seconds=${FUZZ_SECONDS:-60}
[ "$replay" = 1 ] || scripts/deps.sh

echo "fuzz.sh: building crm-fuzz (-sanitize=fuzzer,address, .build-fuzz)"
# lld: gold stops with an internal error on this link (dwarf_reader.cc, format_file_lineno).
CRM_FUZZ=1 swift build -c release --product crm-fuzz --scratch-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld
binary=.build-fuzz/release/crm-fuzz

passed=() failed=()
for target in "${targets[@]}"; do
    [ -d "fuzz/corpus/$target" ] || { echo "fuzz.sh: no target '$target' (fuzz/corpus/ has: $(ls fuzz/corpus | xargs))" >&2; exit 2; }
    findings=.run/fuzz/findings/$target
    mkdir -p "$findings"
    if [ "$replay" = 1 ]; then
        # Every seed once, in one process (state carried from input to input is part of the test).
        echo "fuzz.sh: $target: replaying $(ls "fuzz/corpus/$target" | wc -l) seeds"
        args=(-runs=0 "fuzz/corpus/$target")
    else
        # The corpus grows as libFuzzer finds new paths: a working copy, seeded from the repository's.
        work=.run/fuzz/corpus/$target
        mkdir -p "$work"
        echo "fuzz.sh: $target for $seconds s"
        args=("$work" "fuzz/corpus/$target" -max_total_time="$seconds" -max_len=8192 -print_final_stats=1)
    fi
    # Swift's backtracer would catch the crash before AddressSanitizer reports it.
    if SWIFT_BACKTRACE=enable=no CRM_FUZZ_TARGET=$target "$binary" "${args[@]}" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$findings/" > ".run/fuzz/$target.log" 2>&1; then
        passed+=("$target")
    else
        failed+=("$target")
        grep -E "crm-fuzz:|ERROR|SUMMARY|Test unit written" ".run/fuzz/$target.log" | head -20 >&2 || true
    fi
    tail -n 8 ".run/fuzz/$target.log" | grep -E "^stat::(number_of_executed_units|new_units_added)|^Done" || true
done

if [ "$replay" = 1 ]; then
    echo "fuzz replay: ${#passed[@]} passed, ${#failed[@]} failed${failed:+ (${failed[*]}; logs in .run/fuzz/)}"
    [ "${#failed[@]}" -eq 0 ]
    exit
fi
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: findings in ${failed[*]} (inputs in .run/fuzz/findings/, logs in .run/fuzz/)" >&2
    exit 1
fi
echo "fuzz.sh: no findings in ${targets[*]} ($seconds s each)"
