#!/usr/bin/env bash
# `make fuzz`: the libFuzzer harness (fuzz/crm-fuzz), built with AddressSanitizer into
# .build-fuzz, run on each target for FUZZ_SECONDS (default 60) from its seeds in
# fuzz/corpus/<target>. Not part of `make test`: a cold build takes minutes, and a fuzzer's
# run is not repeatable. What the targets check: fuzz/README.md.
#   FUZZ_TARGETS="json request"   only these targets
#   FUZZ_SECONDS=600              longer runs
# A finding stops its target's run and the script (exit 1); libFuzzer's input is kept in
# .run/fuzz/findings/<target>/. Replay one: CRM_FUZZ_TARGET=<target> .build-fuzz/release/crm-fuzz FILE
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(${FUZZ_TARGETS:-json request fastcgi stored retry-after crm-replies})
seconds=${FUZZ_SECONDS:-60}
scripts/deps.sh

echo "fuzz.sh: building crm-fuzz (-sanitize=fuzzer,address, .build-fuzz)"
# lld: gold stops with an internal error on this link (dwarf_reader.cc, format_file_lineno).
CRM_FUZZ=1 swift build -c release --product crm-fuzz --scratch-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld
binary=.build-fuzz/release/crm-fuzz

failed=()
for target in "${targets[@]}"; do
    [ -d "fuzz/corpus/$target" ] || { echo "fuzz.sh: no target '$target' (fuzz/corpus/ has: $(ls fuzz/corpus | xargs))" >&2; exit 2; }
    # The corpus grows as libFuzzer finds new paths: a working copy, seeded from the repository's.
    work=.run/fuzz/corpus/$target findings=.run/fuzz/findings/$target
    mkdir -p "$work" "$findings"
    echo "fuzz.sh: $target for $seconds s"
    # Swift's backtracer would catch the crash before AddressSanitizer reports it.
    if ! SWIFT_BACKTRACE=enable=no CRM_FUZZ_TARGET=$target "$binary" "$work" "fuzz/corpus/$target" \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$findings/" 2>&1 | tail -n 40; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: findings in ${failed[*]} (inputs in .run/fuzz/findings/)" >&2
    exit 1
fi
echo "fuzz.sh: no findings in ${targets[*]} ($seconds s each)"
