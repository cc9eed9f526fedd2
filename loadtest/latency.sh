#!/usr/bin/env bash
# The latency sluice adds over calling the upstream directly, at a fixed arrival rate,
# and sluice's peak memory during that run. Everything on 127.0.0.1; every phase is
# bounded in requests and time, and all processes started here are stopped on exit.
#
#   loadtest/latency.sh                      # 2,000 req/s, 2 rounds x 15 s per target
#   RATE=1000 DURATION=10 ROUNDS=1 MODES=nonstream loadtest/latency.sh
#
# Steps: build sluice (release) and the bench tools (loadtest/bench), start the fast test
# upstream and sluice on free loopback ports, then run bench-loadgen: per mode, a warm-up
# of each target, then ROUNDS rounds of direct and gateway phases in alternating order.
# Prints a table and writes it (plus JSON with every phase) to loadtest/results/.
# Exit status: 0 target met, 3 target missed, anything else an error.
#
# Environment (defaults in brackets):
#   RATE [2000] req/s   DURATION [15] s per phase   WARMUP [3] s   ROUNDS [2]
#   MODES [nonstream,stream]   TOKENS [8] content chunks per answer
#   UPSTREAM_THREADS [1]   TARGET_P50_US [200]   TARGET_P99_US [500]   TARGET_RSS_MB [50]
#               (the added latency of every mode; the hot-path issue's targets)
#   SLUICE_BIN  use this binary instead of building target/release/sluice
#   SLUICE_LOG  [warn] RUST_LOG for sluice
#   PERF=1      also record a `perf record -g` profile of sluice during the run
#   WORKERS     sluice's `server.worker_threads` (default: sluice's own, one worker)
#   LIMITS=1    with every limit on (rates, tokens, in-flight and model caps), set high
#               enough to admit every request: what enforcing them costs
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
RATE="${RATE:-2000}"
DURATION="${DURATION:-15}"
WARMUP="${WARMUP:-3}"
ROUNDS="${ROUNDS:-2}"
MODES="${MODES:-nonstream,stream}"
TOKENS="${TOKENS:-8}"
UPSTREAM_THREADS="${UPSTREAM_THREADS:-1}"
TARGET_P50_US="${TARGET_P50_US:-200}"
TARGET_P99_US="${TARGET_P99_US:-500}"
TARGET_RSS_MB="${TARGET_RSS_MB:-50}"
SLUICE_LOG="${SLUICE_LOG:-warn}"
PERF="${PERF:-0}"
LIMITS="${LIMITS:-0}"
CARGO="${CARGO:-cargo}"
MODEL="bench-model"

# Upper bound on the whole run: phases plus slack; the servers also stop by themselves.
n_modes=$(( $(tr -cd ',' <<<"$MODES" | wc -c) + 1 ))
budget=$(awk -v m="$n_modes" -v w="$WARMUP" -v d="$DURATION" -v r="$ROUNDS" \
  'BEGIN { printf "%d", m * (2 * w + 2 * r * d) + 120 }')

log() { printf '[latency.sh] %s\n' "$*" >&2; }

# --- build, results directory, cleanup on exit -----------------------------------------
# shellcheck source=loadtest/common.sh
source "$here/common.sh"
bench_setup latency

# --- upstream ---------------------------------------------------------------------------
up_port="$("$BIN/bench-loadgen" free-port)"
timeout -s TERM "$budget" "$BIN/bench-upstream" --listen "127.0.0.1:$up_port" \
  --threads "$UPSTREAM_THREADS" --tokens "$TOKENS" --max-seconds "$budget" \
  >"$out/upstream.log" 2>&1 &
pids+=($!)
"$BIN/bench-loadgen" wait-ready "http://127.0.0.1:$up_port/v1/models" --timeout 20
# `timeout` forks the server: watch the child, not the wrapper.
upstream_pid="$(pgrep -P "${pids[-1]}" | head -n1)"
[[ -n "$upstream_pid" ]] || { log "cannot find the upstream process"; exit 1; }

# --- sluice -----------------------------------------------------------------------------
gw_port="$("$BIN/bench-loadgen" free-port)"
proxy_config "$out/sluice.toml" "$gw_port" "$up_port" "$MODEL" "${WORKERS:+worker_threads = $WORKERS}"
if [[ "$LIMITS" == 1 ]]; then
  cat >>"$out/sluice.toml" <<EOF
max_concurrency = 100000

# LIMITS=1: every limit on, high enough to admit every request.
[limits]
max_in_flight = 100000
requests_per_second = 1000000
requests_per_minute = 60000000
tokens_per_minute = 2000000000
EOF
fi
RUST_LOG="$SLUICE_LOG" timeout -s TERM "$budget" "$SLUICE_BIN" serve \
  --config "$out/sluice.toml" --listen "127.0.0.1:$gw_port" >"$out/sluice.log" 2>&1 &
pids+=($!)
"$BIN/bench-loadgen" wait-ready "http://127.0.0.1:$gw_port/readyz" --timeout 30
sluice_pid="$(pgrep -P "${pids[-1]}" | head -n1)"
[[ -n "$sluice_pid" ]] || { log "cannot find the sluice process"; exit 1; }
log "upstream pid $upstream_pid on :$up_port, sluice pid $sluice_pid on :$gw_port"

perf_attach "$budget"

# --- machine context --------------------------------------------------------------------
write_context "LIMITS=$LIMITS RATE=$RATE DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS MODES=$MODES TOKENS=$TOKENS UPSTREAM_THREADS=$UPSTREAM_THREADS loadtest/latency.sh"

# --- load -------------------------------------------------------------------------------
# In the background and waited for, so that a signal to this script stops it at once.
timeout -s TERM "$budget" "$BIN/bench-loadgen" run \
  --direct "http://127.0.0.1:$up_port/v1" \
  --gateway "http://127.0.0.1:$gw_port/v1" \
  --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" --rounds "$ROUNDS" \
  --modes "$MODES" --model "$MODEL" \
  --gateway-pid "$sluice_pid" --upstream-pid "$upstream_pid" \
  --target-p50-us "$TARGET_P50_US" --target-p99-us "$TARGET_P99_US" --target-rss-mb "$TARGET_RSS_MB" \
  --json "$out/result.json" >"$out/result.md" &
pids+=($!)
status=0
wait "${pids[-1]}" || status=$?
cat "$out/result.md"

cat "$out/context.txt" >>"$out/result.md"
log "results in ${out#"$root"/}/ (result.md, result.json, logs)"
if [[ "$PERF" == 1 ]]; then
  log "perf profile: perf report -i ${out#"$root"/}/perf.data --no-children"
fi
exit "$status"
