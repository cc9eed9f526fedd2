#!/usr/bin/env bash
# Build and run every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (default 600),
# one after another, then print a summary: executions, execs/s, coverage (libFuzzer's
# `cov:` and `ft:`) and new corpus units per target. Fails if any target crashes.
#
#   FUZZ_SECONDS=600      seconds per target
#   FUZZ_TARGETS="a b"    targets to run (default: all, from `cargo fuzz list`)
#   FUZZ_SANITIZER=address  `none` to run without AddressSanitizer (faster)
#   FUZZ_JOBS=1           libFuzzer -fork workers per target (the machine has 2 cores)
#   FUZZ_ARGS="..."       extra cargo-fuzz flags, e.g. --debug-assertions
#
# Only the stable toolchain is installed: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's
# nightly flags (-Zsanitizer, -Cpasses=sancov-module). Seeds come from fuzz/corpus/<t>
# (read only); what the fuzzer finds goes to fuzz/target/corpus/<t> (kept between runs,
# git-ignored); crashes to fuzz/artifacts/<t>/; logs to fuzz/target/logs/<t>.log.
set -uo pipefail

cd "$(dirname "$0")/../../fuzz"
export RUSTC_BOOTSTRAP=1
# Not the main target dir: these builds use other RUSTFLAGS.
unset CARGO_TARGET_DIR

seconds="${FUZZ_SECONDS:-600}"
sanitizer="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-1}"
read -r -a extra <<<"${FUZZ_ARGS:-}"
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"

mkdir -p target/logs
echo "building: $targets (sanitizer: $sanitizer)"
for t in $targets; do
    cargo fuzz build -O --sanitizer "$sanitizer" "${extra[@]}" "$t" || exit 1
done

failed=()
summary=()
for t in $targets; do
    log="target/logs/$t.log"
    mkdir -p "target/corpus/$t" "corpus/$t"
    echo "== $t: ${seconds}s (log: fuzz/$log)"
    fork=()
    [ "$jobs" -gt 1 ] && fork=(-fork="$jobs")
    cargo fuzz run -O --sanitizer "$sanitizer" "${extra[@]}" "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        "${fork[@]}" >"$log" 2>&1
    rc=$?
    # The last status line (`#N ... cov: C ft: F corp: U/S ... exec/s: E`) and the final stats.
    status=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)
    cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$status")
    ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$status")
    corp=$(sed -nE 's/.*corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$status")
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -1)
    rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -1)
    rss=$(sed -nE 's/^stat::peak_rss_mb: *([0-9]+).*/\1/p' "$log" | tail -1)
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        echo "!! $t failed (exit $rc); see fuzz/$log and fuzz/artifacts/$t/"
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -5
    fi
    summary+=("$(printf '%-15s %-6s %10s %8s %6s %6s %12s %6s' "$t" "$([ $rc -eq 0 ] && echo ok || echo CRASH)" \
        "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "${corp:--}" "${rss:--}")")
done

echo
echo "fuzzing summary (${seconds}s per target, sanitizer $sanitizer)"
printf '%-15s %-6s %10s %8s %6s %6s %12s %6s\n' target result execs exec/s cov ft corpus rss_mb
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashed: ${failed[*]}"
    exit 1
fi
