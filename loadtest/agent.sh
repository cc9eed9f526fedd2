#!/usr/bin/env bash
# The agent benchmark: does plain chat keep its latency while 64 server-side agent runs
# (sluice-agent: the model's tool calls run by the gateway) share the embedded engine?
# One release sluice on config/sluice.toml (only the listen address changed: a free
# 127.0.0.1 port), then bench-agent (loadtest/bench/src/bin/bench-agent/) runs, one after
# another:
#   A    PLAIN_REQUESTS plain chat requests to sluice-tiny (greeting, max_tokens 24,
#        temperature 0.7, cache-control: no-store) from PLAIN_CLIENTS clients, alone;
#   B64  the same plain traffic while AGENTS (64) clients loop agent runs to sluice-agent
#        over the held-out tasks of tests/data/agent/sluice-tiny.tasks.jsonl
#        (calculator / SQL / time, cache-control: no-store), after WARMUP s;
#   B8   the same with 8 agent clients (the variant: a load the 2-core engine can carry);
#   A2   A again (drift).
# Reported: plain p50/p99 per phase and the p99 ratio B64/A (the issue's target: <= 1.1),
# agent runs/s and their p50/p99, tool steps per run, and the engine's mean batch size
# during each phase from /metrics (sluice_engine_batch_size sum/count deltas; must be > 1
# during B64). Everything on 127.0.0.1, bounded (sluice under `timeout`, bench-agent
# --max-seconds); all processes started here are stopped on exit. Writes
# loadtest/results/agent.md (and agent-<UTC time>.md/.json; config, log and context in
# loadtest/results/agent-<UTC time>/). Exit status: 0 targets met, 3 missed, else error.
#
#   loadtest/agent.sh
#   AGENTS=64,16 PLAIN_REQUESTS=400 loadtest/agent.sh
#
# Environment (defaults in brackets): AGENTS [64,8]  PLAIN_CLIENTS [4]
#   PLAIN_REQUESTS [200]  PLAIN_RATE [0: closed loop; else open loop at this many req/s]
#   WARMUP [3]  MAX_SECONDS [900]  TARGET_P99_RATIO [1.1]
#   SLUICE_BIN (else target/release/sluice is built)  SLUICE_LOG [warn]
#   AGENT_BACKEND (unset: sluice-agent on its background-priority backend `agents`, as
#   shipped; `local`: on the same engines as plain chat)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
AGENTS="${AGENTS:-64,8}"
PLAIN_CLIENTS="${PLAIN_CLIENTS:-4}"
PLAIN_REQUESTS="${PLAIN_REQUESTS:-200}"
PLAIN_RATE="${PLAIN_RATE:-0}"
WARMUP="${WARMUP:-3}"
MAX_SECONDS="${MAX_SECONDS:-900}"
TARGET_P99_RATIO="${TARGET_P99_RATIO:-1.1}"
CARGO="${CARGO:-cargo}"
TASKS="$root/tests/data/agent/sluice-tiny.tasks.jsonl"

log() { printf '[agent.sh] %s\n' "$*" >&2; }

[[ "$AGENTS" =~ ^[0-9]+(,[0-9]+)*$ && "$PLAIN_CLIENTS" =~ ^[0-9]+$ && "$PLAIN_REQUESTS" =~ ^[0-9]+$ \
  && "$MAX_SECONDS" =~ ^[0-9]+$ && "$PLAIN_RATE" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { log "AGENTS, PLAIN_CLIENTS, PLAIN_REQUESTS, MAX_SECONDS: numbers"; exit 2; }
[[ -f "$root/.ort/libonnxruntime.so" || -n "${ORT_DYLIB_PATH:-}" ]] || {
  log "no .ort/libonnxruntime.so: run \`make ort\` first (or set ORT_DYLIB_PATH)"
  exit 2
}
[[ -f "$TASKS" ]] || { log "no $TASKS: run .venv/bin/python tools/agent/make_tasks.py"; exit 2; }

# shellcheck source=loadtest/common.sh
source "$here/common.sh"
bench_setup agent

port="$("$BIN/bench-loadgen" free-port)"
sed "s/^listen = .*/listen = \"127.0.0.1:$port\"/" "$root/config/sluice.toml" >"$out/sluice.toml"
grep -q "^listen = \"127.0.0.1:$port\"" "$out/sluice.toml" || { log "cannot set the listen address"; exit 1; }
# AGENT_BACKEND=local: sluice-agent on the chat engines instead of its background-priority
# backend (the comparison the README reports).
if [[ -n "${AGENT_BACKEND:-}" ]]; then
  sed -i "s/^backend = \"agents\"/backend = \"$AGENT_BACKEND\"/" "$out/sluice.toml"
  grep -q "^backend = \"$AGENT_BACKEND\"" "$out/sluice.toml" || { log "cannot move sluice-agent"; exit 1; }
fi
start_sluice "$out/sluice.toml" "$(( MAX_SECONDS + 60 ))" "$port"
log "sluice pid $sluice_pid on 127.0.0.1:$port"
write_context "AGENTS=$AGENTS PLAIN_CLIENTS=$PLAIN_CLIENTS PLAIN_REQUESTS=$PLAIN_REQUESTS PLAIN_RATE=$PLAIN_RATE AGENT_BACKEND=${AGENT_BACKEND:-} WARMUP=$WARMUP loadtest/agent.sh"

result="$here/results/agent-$stamp"
status=0
"$BIN/bench-agent" --url "http://127.0.0.1:$port/v1" --tasks "$TASKS" \
  --plain-clients "$PLAIN_CLIENTS" --plain-requests "$PLAIN_REQUESTS" --agent-clients "$AGENTS" \
  --plain-rate "$PLAIN_RATE" --agent-backend "${AGENT_BACKEND:-agents}" \
  --warmup "$WARMUP" --max-seconds "$MAX_SECONDS" --target-p99-ratio "$TARGET_P99_RATIO" \
  --json "$result.json" >"$result.md" &
pids+=($!)
wait "${pids[-1]}" || status=$?
{
  echo "# Agent runs beside plain chat (loadtest/agent.sh)"
  echo
  cat "$result.md"
} >"$result.md.tmp" && mv "$result.md.tmp" "$result.md"
finish_report "$result"
cp "$result.md" "$here/results/agent.md"
cat "$result.md"
exit "$status"
