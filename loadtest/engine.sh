#!/usr/bin/env bash
# The embedded ONNX engine's continuous batching: output tokens/s and time to first token
# (TTFT) at several concurrencies, with batching on (max_batch_size = 32) and off
# (max_batch_size = 1); then structured generation (llguidance constraints) on vs off, for
# tool calls and for json_schema answers. All measured in one run against one sluice.
# `make bench-engine` runs it after `make ort`. Everything on 127.0.0.1; every phase is
# bounded in time, and all processes started here are stopped on exit.
#
#   loadtest/engine.sh                              # the target run (about 3 min plus builds)
#   CONCURRENCY=1,16 DURATION=4 loadtest/engine.sh  # a quicker look
#   STRUCTURED_CONCURRENCY= loadtest/engine.sh      # the batching cells only
#
# Steps: build sluice (release) and the bench tools (loadtest/bench), write a config with
# two onnx backends over the same model folder and tier, `batched` (max_batch_size 32) and
# `unbatched` (max_batch_size 1), each served as a model with `ignore_eos = true` so every
# request generates exactly its max_tokens (MAX_TOKENS on average, varied by prompt so
# answers differ in length as real ones do) and `structured = false` (free sampling, as
# these cells always measured: a completed grammar would end an answer early); plus two
# models on `batched` without ignore_eos: `structured` (constraint on) and
# `free` (`structured = false`). Start sluice, wait for /readyz, then run
# bench-engine: for each CONCURRENCY C, one closed-loop cell per batching model (the order
# alternates between concurrencies), each WARMUP s of load then DURATION s measured; then
# for each STRUCTURED_CONCURRENCY C and workload (tools: the three demo tools with
# tool_choice auto; json: response_format json_schema), one cell per structured model, each
# measured in STRUCTURED_ROUNDS windows of DURATION/STRUCTURED_ROUNDS s (each after WARMUP s)
# interleaved with the other model's (A B B A ...), so drift on the machine falls on both.
# Prints a table and writes loadtest/results/engine-<UTC time>.md and .json (every cell);
# the config, sluice's log and the machine context go to loadtest/results/engine-<UTC time>/.
# Exit status: 0 targets met, 3 targets missed, anything else an error.
#
# Targets: at concurrency 16, batched tokens/s >= 3x the max_batch_size=1 tokens/s; batched
# TTFT p50 at concurrency 16 <= 2x batched TTFT p50 at concurrency 1; for tools and for
# json, constrained tokens/s at concurrency 16 >= 0.9x unconstrained, and the p99 of
# sluice_engine_mask_seconds at concurrency 32 < 1 ms; no errors.
#
# Environment (defaults in brackets):
#   CONCURRENCY [1,4,16,32]  closed-loop workers per batching cell (the targets need 1 and 16)
#   STRUCTURED_CONCURRENCY [16,32]  the same for the structured cells (the targets need 16
#                            and 32); empty = no structured cells
#   STRUCTURED_ROUNDS [4]    measurement windows per structured cell
#   DURATION [8] s measured per cell     WARMUP [1] s of load before each cell's window
#   MAX_TOKENS [64] tokens per answer of the batching cells on average (4/8..12/8 of it by prompt)
#   MODEL [sluice-tiny] the model folder under models/ (smollm2-135m after `make models`)
#   TIER [int8] model tier (int8, int4, fp32); int8 is what the default config serves
#   MAX_CONTEXT [512] max_context of both backends (at most the model's context)
#   THREADS [unset = one per core] ONNX Runtime threads per engine (`threads` in both backends)
#   REQUEST_TIMEOUT [60] s per request   TARGET_SPEEDUP [3]   TARGET_TTFT_RATIO [2]
#   TARGET_STRUCTURED_RATIO [0.9]   TARGET_MASK_P99_MS [1]
#   SLUICE_BIN  use this binary instead of building target/release/sluice
#   SLUICE_LOG  [warn] RUST_LOG for sluice
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
CONCURRENCY="${CONCURRENCY:-1,4,16,32}"
STRUCTURED_CONCURRENCY="${STRUCTURED_CONCURRENCY-16,32}"
STRUCTURED_ROUNDS="${STRUCTURED_ROUNDS:-4}"
DURATION="${DURATION:-8}"
WARMUP="${WARMUP:-1}"
MAX_TOKENS="${MAX_TOKENS:-64}"
TIER="${TIER:-int8}"
MODEL="${MODEL:-sluice-tiny}"
MAX_CONTEXT="${MAX_CONTEXT:-512}"
THREADS="${THREADS:-}"
REQUEST_TIMEOUT="${REQUEST_TIMEOUT:-60}"
TARGET_SPEEDUP="${TARGET_SPEEDUP:-3}"
TARGET_TTFT_RATIO="${TARGET_TTFT_RATIO:-2}"
TARGET_STRUCTURED_RATIO="${TARGET_STRUCTURED_RATIO:-0.9}"
TARGET_MASK_P99_MS="${TARGET_MASK_P99_MS:-1}"
SLUICE_LOG="${SLUICE_LOG:-warn}"
CARGO="${CARGO:-cargo}"
MODEL_DIR="models/$MODEL"

log() { printf '[engine.sh] %s\n' "$*" >&2; }

[[ "$TIER" =~ ^[a-z0-9]+$ ]] || { log "TIER must be a tier name such as int4"; exit 2; }
[[ "$MODEL" =~ ^[a-z0-9][a-z0-9.-]*$ ]] || { log "MODEL must be a folder name under models/"; exit 2; }
[[ "$MAX_CONTEXT" =~ ^[1-9][0-9]*$ ]] || { log "MAX_CONTEXT must be a positive integer"; exit 2; }
[[ -z "$THREADS" || "$THREADS" =~ ^[1-9][0-9]*$ ]] || { log "THREADS must be a positive integer"; exit 2; }
[[ "$STRUCTURED_ROUNDS" =~ ^[1-9][0-9]*$ ]] || { log "STRUCTURED_ROUNDS must be a positive integer"; exit 2; }
[[ -z "$STRUCTURED_CONCURRENCY" || "$STRUCTURED_CONCURRENCY" =~ ^[0-9]+(,[0-9]+)*$ ]] || {
  log "STRUCTURED_CONCURRENCY must be a comma-separated list of numbers, or empty"
  exit 2
}
[[ -f "$root/.ort/libonnxruntime.so" || -n "${ORT_DYLIB_PATH:-}" ]] || {
  log "no .ort/libonnxruntime.so: run \`make ort\` first (or set ORT_DYLIB_PATH)"
  exit 2
}
[[ -f "$root/$MODEL_DIR/model.$TIER.onnx" ]] || { log "no $MODEL_DIR/model.$TIER.onnx"; exit 2; }

# Upper bound on the whole run: per cell warm-up, window and up to 15 s for the requests in
# flight to finish, plus start-up slack. The load generator and sluice stop by themselves.
# Two batching cells per CONCURRENCY value; four structured cells per STRUCTURED_CONCURRENCY
# value, each STRUCTURED_ROUNDS windows of DURATION/STRUCTURED_ROUNDS s.
n_conc=$(( $(tr -cd ',' <<<"$CONCURRENCY" | wc -c) + 1 ))
n_sconc=0
if [[ -n "$STRUCTURED_CONCURRENCY" ]]; then
  n_sconc=$(( $(tr -cd ',' <<<"$STRUCTURED_CONCURRENCY" | wc -c) + 1 ))
fi
budget=$(awk -v n="$(( 2 * n_conc ))" -v s="$(( 4 * n_sconc * STRUCTURED_ROUNDS ))" \
  -v r="$STRUCTURED_ROUNDS" -v w="$WARMUP" -v d="$DURATION" \
  'BEGIN { printf "%d", n * (w + d + 15) + s * (w + d / r + 15) + 30 }')
(( budget <= 900 )) || { log "the run would be longer than 15 minutes ($budget s); shorten it"; exit 2; }

# --- build, results directory, cleanup on exit -----------------------------------------
# shellcheck source=loadtest/common.sh
source "$here/common.sh"
bench_setup engine

# --- sluice -----------------------------------------------------------------------------
port="$("$BIN/bench-loadgen" free-port)"
# backend NAME MAX_BATCH_SIZE [STRUCTURED]
backend() {
  cat <<EOF
[backends.$1]
kind = "onnx"
model_dir = "$MODEL_DIR"
tiers = ["$TIER"]
max_batch_size = $2
queue_size = 512
max_context = $MAX_CONTEXT
EOF
  [[ -z "$THREADS" ]] || echo "threads = $THREADS"
  [[ -z "${3:-}" ]] || echo "structured = $3"
  echo
}
{
  echo "# Written by loadtest/engine.sh: the same model and tier with batching on and off,"
  echo "# and with structured generation on and off."
  echo "[server]"
  echo "listen = \"127.0.0.1:$port\""
  echo
  echo "# Every request is temperature 0: with the default cache mode (deterministic) all but"
  echo "# the first of each prompt would be answered from the cache, not by the engine."
  echo "[cache]"
  echo "mode = \"off\""
  echo
  backend batched 32
  backend unbatched 1 false
  cat <<EOF
# ignore_eos: every request generates exactly max_tokens tokens, so both do equal work.
# structured = false: free sampling (a completed grammar would end an answer early).
[[models]]
name = "batched"
backend = "batched"
tier = "$TIER"
structured = false
options = { ignore_eos = true }

[[models]]
name = "unbatched"
backend = "unbatched"
tier = "$TIER"
options = { ignore_eos = true }

# Structured generation on and off over the same backend and tier; answers end where the
# model (or the completed grammar) ends them.
[[models]]
name = "structured"
backend = "batched"
tier = "$TIER"
structured = true

[[models]]
name = "free"
backend = "batched"
tier = "$TIER"
structured = false
EOF
} >"$out/sluice.toml"

start_sluice "$out/sluice.toml" "$(( budget + 60 ))" "$port"
log "sluice pid $sluice_pid on :$port ($MODEL, tier $TIER, threads ${THREADS:-default}), run budget $budget s"

# --- machine context --------------------------------------------------------------------
write_context "MODEL=$MODEL MAX_CONTEXT=$MAX_CONTEXT CONCURRENCY=$CONCURRENCY STRUCTURED_CONCURRENCY=$STRUCTURED_CONCURRENCY STRUCTURED_ROUNDS=$STRUCTURED_ROUNDS DURATION=$DURATION WARMUP=$WARMUP MAX_TOKENS=$MAX_TOKENS TIER=$TIER THREADS=${THREADS:-} loadtest/engine.sh"

# --- load -------------------------------------------------------------------------------
# In the background and waited for, so that a signal to this script stops it at once.
result="$here/results/engine-$stamp"
structured=()
if [[ -n "$STRUCTURED_CONCURRENCY" ]]; then
  structured=(--structured structured --free free
    --structured-concurrency "$STRUCTURED_CONCURRENCY" --structured-rounds "$STRUCTURED_ROUNDS"
    --target-structured-ratio "$TARGET_STRUCTURED_RATIO"
    --target-mask-p99-ms "$TARGET_MASK_P99_MS")
fi
timeout -s TERM "$budget" "$BIN/bench-engine" \
  --url "http://127.0.0.1:$port/v1" --batched batched --unbatched unbatched \
  --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" \
  --max-tokens "$MAX_TOKENS" --timeout-s "$REQUEST_TIMEOUT" --max-seconds "$budget" \
  --target-speedup "$TARGET_SPEEDUP" --target-ttft-ratio "$TARGET_TTFT_RATIO" \
  "${structured[@]}" \
  --title "$MODEL, tier $TIER, threads ${THREADS:-default}" \
  --sluice-pid "$sluice_pid" --json "$result.json" >"$result.md" &
pids+=($!)
status=0
wait "${pids[-1]}" || status=$?
cat "$result.md"

finish_report "$result"
exit "$status"
