#!/usr/bin/env bash
# The headline benchmark of quantization-tier routing: one mixed workload (a model's
# held-out prompts, with repeats) through several sluice set-ups, one after another on the
# same machine in one run, each compared with the naive set-up: requests/s, tokens/s,
# p50/p95 latency, throughput x naive, quality retained (answers equal to the naive
# set-up's), acceptable answers (the prompts' checks, as calibration judges them), share
# per tier, route reasons, cache hits. `make bench-mixed` runs it after
# `make ort` and `make models`. Everything on 127.0.0.1; every set-up is bounded in time,
# and all processes started here are stopped on exit.
#
#   loadtest/mixed.sh                                        # the target run (smollm2-135m)
#   MODEL=sluice-tiny loadtest/mixed.sh                      # the bundled demo model
#   SETUPS=naive,routed REQUESTS=60 loadtest/mixed.sh        # a quicker look
#
# Set-ups (SETUPS, in this order; `naive` is required, it is the reference):
#   naive        the model pinned to its most precise tier, max_batch_size = 1, cache off
#   routed       batching (MAX_BATCH) + cache (mode deterministic) + routing between the
#                model's tiers with its shipped thresholds, load policy off
#   routed-load  the same with [route.load] enabled = true
#   pinned       batching + cache, pinned to the most precise tier (no routing): what
#                batching and the cache give without routing
# Each set-up gets its own sluice (a fresh process, so an empty cache) on a free port with a
# config written here: the model's [[models]] block (with its [models.*] tables) and its
# backend's table are taken from ROUTE_CONFIG, and so are the global [route] tables (scorer
# weights) for the routed set-ups; this script sets max_batch_size and queue_size of the
# backend, [cache], [route.load], and for naive and pinned the tier (the backend loads only
# that one; the block's tier/tiers and [models.route] are dropped; naive also drops
# [models.cache]). The request body is the same everywhere (`model` = MODEL).
#
# Load (bench-mixed, see loadtest/bench/src/bin/bench-mixed/): REQUESTS requests over the
# prompts of DATA (each prompt first in a seeded shuffle: the held-out files are grouped by
# category), REPEAT_SHARE of them repeating a prompt sent earlier (seeded schedule, the same
# for every set-up; repeats drawn Zipf-like with exponent ZIPF by a seeded popularity
# rank), temperature 0, non-streaming, CONCURRENCY closed-loop clients. Then `bench-mixed
# compare` prints the table, written to loadtest/results/mixed-$MODEL.md; every run's
# records (per request: id, status, latency, tokens, tier/reason/complexity/cache headers,
# answer), the configs, sluice's logs and the machine context go to
# loadtest/results/mixed-$MODEL-<UTC time>/. Exit status: 0 target met, 3 missed, anything
# else an error.
#
# Target: `routed` has >= TARGET_SPEEDUP x the naive requests/s with >= TARGET_QUALITY of
# the prompt ids answered exactly as the naive set-up answers them, and no errors.
#
# Environment (defaults in brackets):
#   MODEL [smollm2-135m]  a [[models]] name in ROUTE_CONFIG (sluice-tiny: the demo model)
#   DATA [tests/data/route/$MODEL.heldout.jsonl]  held-out prompts, one JSON object a line
#   ROUTE_CONFIG [config/examples/local-models.toml; config/sluice.toml for sluice-tiny]
#   REQUESTS [128 for smollm2-135m (90 of its 164 held-out prompts + 38 repeats; the naive
#            set-up took 0.21 req/s on a busy 2-core machine, 10 min, and should take 3-4 on an
#            idle one); otherwise, and at most, what DATA allows: every prompt once plus the
#            repeats (234 for smollm2-135m)]  requests per set-up
#   CONCURRENCY [16]  REPEAT_SHARE [0.3]  ZIPF [1]  SEED [1]
#   ORDER [shuffled]  first occurrences in a seeded shuffle of DATA, or `file` for its order
#   SETUPS [naive,routed,routed-load,pinned]   MAX_BATCH [32]
#   TOP_TIER [the last of the model's `tiers`, else its `tier`]  the naive set-up's tier
#   MAX_SECONDS [900] s per set-up at most (then nothing more is sent; the run is incomplete)
#   REQUEST_TIMEOUT [600] s per request   TARGET_SPEEDUP [4]   TARGET_QUALITY [0.95]
#   SLUICE_BIN  use this binary instead of building target/release/sluice
#   SLUICE_LOG  [warn] RUST_LOG for sluice
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
MODEL="${MODEL:-smollm2-135m}"
DATA="${DATA:-tests/data/route/$MODEL.heldout.jsonl}"
if [[ "$MODEL" == sluice-tiny* ]]; then
  ROUTE_CONFIG="${ROUTE_CONFIG:-config/sluice.toml}"
  REQUESTS="${REQUESTS:-}"
else
  ROUTE_CONFIG="${ROUTE_CONFIG:-config/examples/local-models.toml}"
  REQUESTS="${REQUESTS:-128}"
fi
CONCURRENCY="${CONCURRENCY:-16}"
REPEAT_SHARE="${REPEAT_SHARE:-0.3}"
ZIPF="${ZIPF:-1}"
SEED="${SEED:-1}"
ORDER="${ORDER:-shuffled}"
SETUPS="${SETUPS:-naive,routed,routed-load,pinned}"
MAX_BATCH="${MAX_BATCH:-32}"
TOP_TIER="${TOP_TIER:-}"
MAX_SECONDS="${MAX_SECONDS:-900}"
REQUEST_TIMEOUT="${REQUEST_TIMEOUT:-600}"
TARGET_SPEEDUP="${TARGET_SPEEDUP:-4}"
TARGET_QUALITY="${TARGET_QUALITY:-0.95}"
SLUICE_LOG="${SLUICE_LOG:-warn}"
CARGO="${CARGO:-cargo}"

log() { printf '[mixed.sh] %s\n' "$*" >&2; }

[[ "$DATA" == /* || ! -f "$DATA" ]] || DATA="$(realpath "$DATA")"
[[ "$ROUTE_CONFIG" == /* || ! -f "$ROUTE_CONFIG" ]] || ROUTE_CONFIG="$(realpath "$ROUTE_CONFIG")"
cd "$root"
DATA="${DATA#"$root"/}"
ROUTE_CONFIG="${ROUTE_CONFIG#"$root"/}"
[[ "$MODEL" =~ ^[a-z0-9][a-z0-9.-]*$ ]] || { log "MODEL must be a model name such as smollm2-135m"; exit 2; }
[[ -z "$REQUESTS" || "$REQUESTS" =~ ^[1-9][0-9]*$ ]] || { log "REQUESTS must be a positive integer"; exit 2; }
[[ "$CONCURRENCY" =~ ^[1-9][0-9]*$ ]] || { log "CONCURRENCY must be a positive integer"; exit 2; }
[[ "$REPEAT_SHARE" =~ ^0(\.[0-9]+)?$ ]] || { log "REPEAT_SHARE must be a number in [0, 1)"; exit 2; }
[[ "$ZIPF" =~ ^[0-9]+(\.[0-9]+)?$ && "$SEED" =~ ^[0-9]+$ ]] || { log "ZIPF and SEED must be numbers"; exit 2; }
[[ "$ORDER" == shuffled || "$ORDER" == file ]] || { log "ORDER must be shuffled or file"; exit 2; }
[[ "$MAX_BATCH" =~ ^[1-9][0-9]*$ ]] || { log "MAX_BATCH must be a positive integer"; exit 2; }
[[ "$MAX_SECONDS" =~ ^[1-9][0-9]*$ ]] && (( MAX_SECONDS <= 1800 )) || {
  log "MAX_SECONDS must be an integer in 1..1800"
  exit 2
}
[[ ",$SETUPS," =~ ^,naive(,(routed|routed-load|pinned))*,$ ]] || {
  log "SETUPS must start with naive, then any of routed, routed-load, pinned (comma-separated)"
  exit 2
}
[[ -f "$root/.ort/libonnxruntime.so" || -n "${ORT_DYLIB_PATH:-}" ]] || {
  log "no .ort/libonnxruntime.so: run \`make ort\` first (or set ORT_DYLIB_PATH)"
  exit 2
}
[[ -f "$DATA" ]] || { log "no held-out prompts at $DATA (set DATA=FILE.jsonl)"; exit 2; }
[[ -f "$ROUTE_CONFIG" ]] || { log "no $ROUTE_CONFIG (set ROUTE_CONFIG)"; exit 2; }

# --- the model's tables in ROUTE_CONFIG --------------------------------------------------
# toml_tables MODE NAME [SKIP] < FILE
#   MODE=model: the [[models]] block whose name is NAME, with its [models.*] tables;
#   MODE=table: the table [NAME] and its [NAME.*] tables (without [SKIP] / [SKIP.*] and
#   the dotted keys `SKIP-suffix.` at the top of [NAME], e.g. SKIP=route.load drops
#   `load.max_queue = 4` under [route]).
# Comments and blank lines are kept; arrays must be on one line (as in every shipped config).
toml_tables() {
  awk -v mode="$1" -v name="$2" -v skip="${3:-}" '
    function emit() { if (keep) printf "%s", buf; buf = ""; keep = 0 }
    /^[ \t]*\[/ {
      arr = ($0 ~ /^[ \t]*\[\[/); h = $0
      sub(/^[ \t]*\[+[ \t]*/, "", h); sub(/[ \t]*\].*$/, "", h)
      if (mode == "model") {
        if (arr && h == "models") { emit(); inb = 1; top = 1; buf = $0 "\n"; next }
        if (inb && !arr && index(h, "models.") == 1) { top = 0; buf = buf $0 "\n"; next }
        emit(); inb = 0; next
      }
      emit()
      inb = !arr && (h == name || index(h, name ".") == 1) && !(skip != "" && (h == skip || index(h, skip ".") == 1))
      top = (h == name)
      if (inb) { keep = 1; buf = $0 "\n" }
      next
    }
    inb {
      if (mode == "model" && top && $0 ~ /^[ \t]*name[ \t]*=/) {
        v = $0; sub(/^[^=]*=[ \t]*"/, "", v); sub(/".*$/, "", v)
        if (v == name) keep = 1
      }
      if (mode == "table" && top && skip != "") {
        k = substr(skip, length(name) + 2)
        if ($0 ~ ("^[ \t]*" k "[ \t]*[.=]")) next
      }
      buf = buf $0 "\n"
    }
    END { emit() }'
}

# toml_value KEY < BLOCK: the raw value of KEY in the block's first table (before any other
# header), comments stripped; empty when missing.
toml_value() {
  awk -v key="$1" '
    /^[ \t]*\[/ { if (seen++) exit; next }
    $0 ~ ("^[ \t]*" key "[ \t]*=") {
      v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]*#[^"]*$/, "", v); print v; exit
    }'
}

# strings < VALUE: the quoted strings of a TOML value, one per line.
strings() { grep -o '"[^"]*"' | tr -d '"' || true; }

# rewrite_table SET DROP < TABLE: the table with the top-level keys in DROP (a regex of key
# names) removed and the lines of SET inserted right after its header.
rewrite_table() {
  SET="$1" awk -v drop="$2" '
    NR == 1 { print; if (ENVIRON["SET"] != "") print ENVIRON["SET"]; top = 1; next }
    /^[ \t]*\[/ { top = 0 }
    top && drop != "" && $0 ~ ("^[ \t]*(" drop ")[ \t]*[.=]") { next }
    { print }'
}

# drop_tables PREFIXES < BLOCK: without the sub-tables [PREFIX] and [PREFIX.*] (a regex).
drop_tables() {
  awk -v re="^[ \t]*\\[[ \t]*($1)([.][^]]*)?[ \t]*\\]" '
    /^[ \t]*\[/ { skip = ($0 ~ re) }
    !skip { print }'
}

# with_load ENABLED < ROUTE_TABLES: the [route] tables with the load policy's `enabled` set
# (its other settings, max_queue and max_step_time, stay as shipped).
with_load() {
  awk -v en="$1" '
    /^[ \t]*\[/ {
      h = $0; sub(/^[ \t]*\[+[ \t]*/, "", h); sub(/[ \t]*\].*$/, "", h); sect = h; print
      if (h == "route.load" && !done) { print "enabled = " en; done = 1 }
      next
    }
    sect == "route" && /^[ \t]*load[ \t]*[.][ \t]*enabled[ \t]*=/ { next }
    sect == "route" && /^[ \t]*load[ \t]*[.]/ && !done { print "load.enabled = " en; done = 1 }
    sect == "route.load" && /^[ \t]*enabled[ \t]*=/ { next }
    { print }
    END { if (!done) { print "[route.load]"; print "enabled = " en } }'
}

model_block="$(toml_tables model "$MODEL" <"$ROUTE_CONFIG")"
[[ -n "$model_block" ]] || { log "$ROUTE_CONFIG has no [[models]] block with name = \"$MODEL\""; exit 2; }
backend_name="$(toml_value backend <<<"$model_block" | strings | head -n1)"
[[ -n "$backend_name" ]] || { log "the [[models]] block of $MODEL in $ROUTE_CONFIG has no backend"; exit 2; }
backend_block="$(toml_tables table "backends.$backend_name" <"$ROUTE_CONFIG")"
[[ -n "$backend_block" ]] || { log "$ROUTE_CONFIG has no [backends.$backend_name]"; exit 2; }
route_tables="$(toml_tables table route <"$ROUTE_CONFIG")"
model_dir="$(toml_value model_dir <<<"$backend_block" | strings | head -n1)"
[[ -z "$model_dir" || -d "$model_dir" ]] || {
  log "no $model_dir (backend $backend_name): run \`make models\` first for smollm2-135m"
  exit 2
}
model_tiers="$(toml_value tiers <<<"$model_block" | strings | paste -sd, -)"
model_tier="$(toml_value tier <<<"$model_block" | strings | head -n1)"
if [[ -z "$TOP_TIER" ]]; then
  TOP_TIER="${model_tiers##*,}"
  [[ -n "$TOP_TIER" ]] || TOP_TIER="$model_tier"
fi
[[ "$TOP_TIER" =~ ^[A-Za-z0-9_.-]+$ ]] || {
  log "cannot tell $MODEL's most precise tier from $ROUTE_CONFIG (no tiers or tier): set TOP_TIER"
  exit 2
}
if [[ -z "$model_tiers" ]]; then
  log "warning: $MODEL has no \`tiers\` in $ROUTE_CONFIG: the routed set-ups serve one tier ($model_tier)"
fi

# config SETUP: the sluice config of one set-up, on $port.
config() {
  local setup="$1" batch="$MAX_BATCH" cache="deterministic" load=false block backend
  case "$setup" in
    naive) batch=1 cache=off ;;
    routed-load) load=true ;;
  esac
  case "$setup" in
    naive | pinned)
      block="$(drop_tables 'models[.]route'"$([[ $setup == naive ]] && echo '|models[.]cache')" <<<"$model_block" |
        rewrite_table "tier = \"$TOP_TIER\"" "tier|tiers|route$([[ $setup == naive ]] && echo '|cache')")"
      backend="$(rewrite_table "$(printf 'tiers = ["%s"]\nmax_batch_size = %s\nqueue_size = 512' "$TOP_TIER" "$batch")" \
        'tiers|max_batch_size|queue_size' <<<"$backend_block")"
      ;;
    *)
      block="$model_block"
      backend="$(rewrite_table "$(printf 'max_batch_size = %s\nqueue_size = 512' "$batch")" \
        'max_batch_size|queue_size' <<<"$backend_block")"
      ;;
  esac
  echo "# Written by loadtest/mixed.sh: set-up \`$setup\` of $MODEL, from $ROUTE_CONFIG."
  echo "[server]"
  echo "listen = \"127.0.0.1:$port\""
  echo
  echo "# A fresh sluice per set-up, so the cache starts empty; entries outlive the run."
  echo "[cache]"
  echo "mode = \"$cache\""
  echo "ttl = \"1h\""
  echo
  echo "$backend"
  echo
  echo "$block"
  echo
  if [[ "$setup" == routed* ]]; then
    with_load "$load" <<<"$route_tables"
  fi
}

# --- build, results directory, cleanup on exit -----------------------------------------
# shellcheck source=loadtest/common.sh
source "$here/common.sh"
bench_setup "mixed-$MODEL"
result="$here/results/mixed-$MODEL"

IFS=, read -r -a setups <<<"$SETUPS"
# The schedule must fit the data; bench-mixed checks it, this says it before any sluice starts.
prompts="$(grep -c '[^[:space:]]' "$DATA" || true)"
most="$(awk -v m="$prompts" -v s="$REPEAT_SHARE" '
  function rep(n, r) { r = int(s * n + 0.5); return r > n - 1 ? n - 1 : r }
  BEGIN { n = m; while (n + 1 - rep(n + 1) <= m) n++; print n }')"
if [[ -z "$REQUESTS" ]]; then
  REQUESTS="$most"
elif (( REQUESTS > most )); then
  log "DATA has $prompts prompts: at most $most requests with REPEAT_SHARE=$REPEAT_SHARE; REQUESTS=$most"
  REQUESTS="$most"
fi
write_context "MODEL=$MODEL DATA=$DATA ROUTE_CONFIG=$ROUTE_CONFIG REQUESTS=$REQUESTS CONCURRENCY=$CONCURRENCY REPEAT_SHARE=$REPEAT_SHARE ZIPF=$ZIPF SEED=$SEED ORDER=$ORDER SETUPS=$SETUPS MAX_BATCH=$MAX_BATCH TOP_TIER=$TOP_TIER loadtest/mixed.sh"
log "model $MODEL: tiers ${model_tiers:-$model_tier}, most precise $TOP_TIER; backend $backend_name"

# --- the set-ups, one after another ------------------------------------------------------
status=0
runs=()
for setup in "${setups[@]}"; do
  port="$("$BIN/bench-loadgen" free-port)"
  config "$setup" >"$out/$setup.toml"
  start_sluice "$out/$setup.toml" "$(( MAX_SECONDS + 120 ))" "$port"
  wrapper="${pids[-1]}"
  log "$setup: sluice pid $sluice_pid on :$port"
  case "$setup" in
    naive) title="naive: $TOP_TIER, max_batch_size 1, cache off" ;;
    routed) title="sluice: batching $MAX_BATCH + cache + routing" ;;
    routed-load) title="sluice + load policy" ;;
    pinned) title="batching $MAX_BATCH + cache, $TOP_TIER only" ;;
  esac
  compare=()
  [[ "$setup" == naive ]] || compare=(--compare "$out/naive.json")
  # In the background and waited for, so that a signal to this script stops it at once.
  timeout -s TERM "$(( MAX_SECONDS + 60 ))" "$BIN/bench-mixed" \
    --url "http://127.0.0.1:$port/v1" --model "$MODEL" --data "$DATA" \
    --requests "$REQUESTS" --concurrency "$CONCURRENCY" --repeat-share "$REPEAT_SHARE" \
    --zipf "$ZIPF" --seed "$SEED" --order "$ORDER" --timeout-s "$REQUEST_TIMEOUT" --max-seconds "$MAX_SECONDS" \
    --label "$setup" --title "$title" --out "$out/$setup.json" "${compare[@]}" \
    >"$out/$setup.summary" &
  pids+=($!)
  run_status=0
  wait "${pids[-1]}" || run_status=$?
  cat "$out/$setup.summary"
  (( run_status == 0 )) || { log "$setup: bench-mixed exited with $run_status"; status=1; }
  hwm="$(awk '/^VmHWM:/ { printf "%.0f MB", $2 / 1024 }' "/proc/$sluice_pid/status" 2>/dev/null || true)"
  log "$setup: sluice peak RSS ${hwm:-n/a}"
  kill -TERM "$wrapper" 2>/dev/null || true
  wait "$wrapper" 2>/dev/null || true
  mv "$out/sluice.log" "$out/$setup.sluice.log"
  [[ -f "$out/$setup.json" ]] && runs+=("$out/$setup.json")
  [[ -f "$out/naive.json" ]] || { log "the naive set-up left no results; stopping"; exit 1; }
done

# --- the table ----------------------------------------------------------------------------
compare_status=0
"$BIN/bench-mixed" compare --naive "$out/naive.json" "${runs[@]}" --tiers "$model_tiers" \
  --target routed --target-speedup "$TARGET_SPEEDUP" --target-quality "$TARGET_QUALITY" \
  --title "$MODEL, $CONCURRENCY clients" >"$result.md" || compare_status=$?
{ echo; echo '```'; cat "$out/context.txt"; echo '```'; } >>"$result.md"
cp "$result.md" "$out/result.md"
cat "$result.md"
log "table in ${result#"$root"/}.md; records, configs, logs and context in ${out#"$root"/}/"
(( status == 0 )) || exit "$status"
exit "$compare_status"
