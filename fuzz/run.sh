#!/usr/bin/env bash
# Runs every fuzz target for a bounded time each and prints how many inputs it executed.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; the targets default to all of them. Needs a nightly
# toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target keeps its corpus in
# fuzz/corpus/<target>/ (reused by the next run) and writes any crashing input to
# fuzz/artifacts/<target>/. Exits non-zero if any target found a crash.
set -euo pipefail

cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(capture_reader compress_inbound framed_lines framed_write tls_inbound)
fi

cargo +nightly fuzz build >/dev/null

status=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="$(mktemp)"
    echo "== $target: ${secs}s"
    if cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$secs" -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
        result="ok"
    else
        result="FAILED (see fuzz/artifacts/$target/)"
        status=1
        grep -E "panicked at|^ *(left|right):|Test unit written" "$log" || tail -20 "$log"
    fi
    execs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")"
    cov="$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)"
    summary+=("$(printf '%-18s %6ss %12s executions  %-10s %s' "$target" "$secs" "$execs" "$cov" "$result")")
    rm -f "$log"
done

echo
printf '%s\n' "${summary[@]}"
exit "$status"
