# Shared by latency.sh and engine.sh (sourced, not run): build sluice and the bench tools,
# create the run's results directory, and stop every process the run started on exit.
#
# Expects: $root (repository), $here (loadtest/), $CARGO, and a log() function.
# bench_setup NAME sets SLUICE_BIN (unless given), BIN (the bench tools), stamp, out
# (loadtest/results/NAME-<UTC time>) and pids (append the PID of each process started).

bench_cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  exit "$status"
}

bench_setup() {
  local name="$1"
  if [[ -z "${SLUICE_BIN:-}" ]]; then
    log "building sluice (release)"
    (cd "$root" && "$CARGO" build --release --locked --bin sluice)
    SLUICE_BIN="$root/target/release/sluice"
  fi
  log "building the bench tools (loadtest/bench)"
  "$CARGO" build --release --locked --manifest-path "$here/bench/Cargo.toml" \
    --target-dir "$here/target"
  BIN="$here/target/release"

  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  out="$here/results/$name-$stamp"
  mkdir -p "$out"
  pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
