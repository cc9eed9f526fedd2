#!/usr/bin/env bash
# Soak: SOAK_MINUTES of mixed load at LOAD_FRACTION of the measured capacity against the
# embedded engine and a test upstream that fails and recovers, watching sluice's RSS, open
# fds and tokio tasks for growth. `make soak` runs it. Everything on 127.0.0.1; every
# process started here is stopped on exit (and each runs under `timeout`).
#
#   loadtest/soak.sh                                   # the target run: 30 minutes
#   SOAK_MINUTES=3 CAPACITY_SECONDS=10 loadtest/soak.sh   # a quick look
#   SOAK_LIMITS=0 loadtest/soak.sh                     # a sluice without [limits]
#
# Steps: build sluice (release; the binary is copied into the results so a rebuild during
# the run changes nothing), install loadtest/soak/.venv (aiohttp, matplotlib; pinned in
# loadtest/soak/requirements.txt), start the test upstream (loadtest/soak/upstream.py) and
# sluice with a generated config (config/sluice.toml's embedded backend and sluice-tiny,
# plus `soak-upstream` on the test upstream; cache on with a small bound and TTL, so it
# fills, evicts and expires during warm-up; two API keys: tenant `soak` for the load,
# `soak-burst` for the bursts, rate-limited when SOAK_LIMITS=1), then run the driver
# (loadtest/soak/soak.py: capacity, soak, drain). Results in
# loadtest/results/soak/<UTC time>/: samples.csv (every SAMPLE_EVERY s), summary.json,
# soak.svg, the config, logs and the machine context.
# Exit status: 0 passed, 3 failed (an unexpected answer, growth over MAX_GROWTH after
# warm-up, a dropped arrival, sluice down), anything else an error.
#
# Environment (defaults in brackets):
#   SOAK_MINUTES [30]  CAPACITY_SECONDS [20]  CAPACITY_CONCURRENCY [32]  LOAD_FRACTION [0.7]
#   SOAK_RATE     fixed offered rate in req/s (skips the capacity phase)
#   SOAK_LIMITS [1]  write the [limits] block (bursts then expect 429s); 0 for a sluice
#                    without rate limits (bursts then expect 200s)
#   BURST_EVERY [30] s  BURST_SIZE [40]  BURST_RPS [5] the burst tenant's requests_per_second
#   FAIL_FIRST [60] s  FAIL_EVERY [180] s  FAIL_FOR [20] s   upstream failure windows
#   SAMPLE_EVERY [10] s  WARMUP_FRACTION [0.2]  MAX_GROWTH [0.10]  WINDOW_SECONDS [10% of
#   the run, at least 60]  QUIET_SLACK [2] fds/tasks a quiet point may gain whatever the %
#   MAX_TOKENS [16] (streams ask twice as many)  SEED [1]
#   SLUICE_BIN  use this binary instead of building one
#   SLUICE_LOG [warn]  RUST_LOG for sluice;  CARGO [cargo];  CARGO_TARGET_DIR is honoured
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
SOAK_MINUTES="${SOAK_MINUTES:-30}"
CAPACITY_SECONDS="${CAPACITY_SECONDS:-20}"
CAPACITY_CONCURRENCY="${CAPACITY_CONCURRENCY:-32}"
LOAD_FRACTION="${LOAD_FRACTION:-0.7}"
SOAK_RATE="${SOAK_RATE:-0}"
SOAK_LIMITS="${SOAK_LIMITS:-1}"
BURST_EVERY="${BURST_EVERY:-30}"
BURST_SIZE="${BURST_SIZE:-40}"
BURST_RPS="${BURST_RPS:-5}"
FAIL_FIRST="${FAIL_FIRST:-60}"
FAIL_EVERY="${FAIL_EVERY:-180}"
FAIL_FOR="${FAIL_FOR:-20}"
SAMPLE_EVERY="${SAMPLE_EVERY:-10}"
WARMUP_FRACTION="${WARMUP_FRACTION:-0.2}"
MAX_GROWTH="${MAX_GROWTH:-0.10}"
QUIET_SLACK="${QUIET_SLACK:-2}"
WINDOW_SECONDS="${WINDOW_SECONDS:-0}"
MAX_TOKENS="${MAX_TOKENS:-16}"
SEED="${SEED:-1}"
SLUICE_LOG="${SLUICE_LOG:-warn}"
CARGO="${CARGO:-cargo}"
SOAK="$here/soak"
VENV="$SOAK/.venv"

log() { printf '[soak.sh] %s\n' "$*" >&2; }

[[ "$SOAK_MINUTES" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { log "SOAK_MINUTES must be a number"; exit 2; }
[[ "$SOAK_LIMITS" == 0 || "$SOAK_LIMITS" == 1 ]] || { log "SOAK_LIMITS must be 0 or 1"; exit 2; }
[[ -f "$root/.ort/libonnxruntime.so" || -n "${ORT_DYLIB_PATH:-}" ]] || {
  log "no .ort/libonnxruntime.so: run \`make ort\` first (or set ORT_DYLIB_PATH)"
  exit 2
}
# Upper bound on the whole run: capacity, soak, drain and start-up, with slack.
budget=$(awk -v m="$SOAK_MINUTES" -v c="$CAPACITY_SECONDS" 'BEGIN { printf "%d", m * 60 + c + 300 }')

# --- build ------------------------------------------------------------------------------
if [[ -z "${SLUICE_BIN:-}" ]]; then
  log "building sluice (release)"
  (cd "$root" && "$CARGO" build --release --locked --bin sluice)
  target="${CARGO_TARGET_DIR:-target}"
  [[ "$target" == /* ]] || target="$root/$target"
  SLUICE_BIN="$target/release/sluice"
fi
[[ -x "$SLUICE_BIN" ]] || { log "no sluice binary at $SLUICE_BIN"; exit 2; }

if [[ ! -f "$VENV/.installed" || "$SOAK/requirements.txt" -nt "$VENV/.installed" ]]; then
  log "installing $VENV (loadtest/soak/requirements.txt)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$SOAK/requirements.txt"
  touch "$VENV/.installed"
fi
PY="$VENV/bin/python"

# --- results directory, cleanup on exit ---------------------------------------------------
# shellcheck source=loadtest/common.sh
source "$here/common.sh"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$here/results/soak/$stamp"
mkdir -p "$out"
pids=()
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
cp "$SLUICE_BIN" "$out/sluice"

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_http URL TRIES LOGFILE: wait for URL to answer 200, about 0.5 s a try, giving up at
# once when the last process started exits; on failure print the end of LOGFILE, exit 1.
wait_http() {
  for _ in $(seq "$2"); do
    curl -sf -o /dev/null --max-time 1 "$1" && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.5
  done
  log "$1 did not answer; the end of $3:"
  tail -n 30 "$3" >&2
  exit 1
}

# --- test upstream ------------------------------------------------------------------------
up_port="$(free_port)"
ctl_port="$(free_port)"
timeout -s TERM "$budget" "$PY" "$SOAK/upstream.py" --listen "127.0.0.1:$up_port" \
  --control "127.0.0.1:$ctl_port" --max-seconds "$budget" >"$out/upstream.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$up_port/v1/models" 40 "$out/upstream.log"

# --- sluice -------------------------------------------------------------------------------
gw_port="$(free_port)"
main_key="soak-main-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
burst_key="soak-burst-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
{
  cat <<EOF
# Written by loadtest/soak.sh: the embedded engine (config/sluice.toml's backend and
# model) and soak-upstream on the test upstream, two tenants, the cache on.
[server]
listen = "127.0.0.1:$gw_port"
shutdown_timeout = "5s"

[[auth.keys]]
tenant = "soak"
sha256 = "$(sha "$main_key")"

[[auth.keys]]
tenant = "soak-burst"
sha256 = "$(sha "$burst_key")"

# Small and short-lived, so that the cache fills, evicts and expires during warm-up and
# its size is flat afterwards: growth after that is not the cache.
[cache]
mode = "deterministic"
ttl = "2m"
max_bytes = 1048576

$("$PY" "$SOAK/tables.py" "$root/config/sluice.toml" local sluice-tiny)

[backends.upstream]
kind = "openai"
url = "http://127.0.0.1:$up_port/v1"

[[models]]
name = "soak-upstream"
backend = "upstream"
EOF
  if [[ "$SOAK_LIMITS" == 1 ]]; then
    cat <<EOF

# --- SOAK_LIMITS=1: rate limits (a sluice with [limits]) ---------------------------------
# Only the burst tenant is limited: its bursts of $BURST_SIZE go over it (429 expected).
[limits.tenants.soak-burst]
requests_per_second = $BURST_RPS
# --- end of SOAK_LIMITS ------------------------------------------------------------------
EOF
  fi
} >"$out/sluice.toml"

if ! (cd "$root" && "$out/sluice" check-config --config "$out/sluice.toml") >"$out/check-config.log" 2>&1; then
  cat "$out/check-config.log" >&2
  if grep -q 'unknown field .limits.' "$out/check-config.log"; then
    log "this sluice has no [limits] yet: run with SOAK_LIMITS=0"
  fi
  exit 2
fi
(cd "$root" && RUST_LOG="$SLUICE_LOG" exec timeout -s TERM "$budget" \
  "$out/sluice" serve --config "$out/sluice.toml") >"$out/sluice.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$gw_port/readyz" 120 "$out/sluice.log"
sluice_pid="$(pgrep -P "${pids[-1]}" | head -n1)"
[[ -n "$sluice_pid" ]] || { log "cannot find the sluice process"; exit 1; }
curl -sf "http://127.0.0.1:$gw_port/metrics" | grep -q '^sluice_runtime_alive_tasks ' || {
  log "this sluice does not export sluice_runtime_alive_tasks: cannot watch its tasks"
  exit 2
}
log "upstream on :$up_port (control :$ctl_port), sluice pid $sluice_pid on :$gw_port"

write_context "SOAK_MINUTES=$SOAK_MINUTES CAPACITY_SECONDS=$CAPACITY_SECONDS CAPACITY_CONCURRENCY=$CAPACITY_CONCURRENCY LOAD_FRACTION=$LOAD_FRACTION SOAK_RATE=$SOAK_RATE SOAK_LIMITS=$SOAK_LIMITS BURST_EVERY=$BURST_EVERY BURST_SIZE=$BURST_SIZE FAIL_EVERY=$FAIL_EVERY FAIL_FOR=$FAIL_FOR loadtest/soak.sh"

# --- the soak -------------------------------------------------------------------------------
# In the background and waited for, so that a signal to this script stops it at once.
SOAK_MAIN_KEY="$main_key" SOAK_BURST_KEY="$burst_key" timeout -s TERM "$budget" \
  "$PY" "$SOAK/soak.py" \
  --gateway "http://127.0.0.1:$gw_port" --pid "$sluice_pid" \
  --upstream-control "http://127.0.0.1:$ctl_port" --out "$out" \
  --minutes "$SOAK_MINUTES" --rate "$SOAK_RATE" \
  --capacity-seconds "$CAPACITY_SECONDS" --capacity-concurrency "$CAPACITY_CONCURRENCY" \
  --load-fraction "$LOAD_FRACTION" --limits "$SOAK_LIMITS" --max-tokens "$MAX_TOKENS" \
  --burst-every "$BURST_EVERY" --burst-size "$BURST_SIZE" \
  --fail-first "$FAIL_FIRST" --fail-every "$FAIL_EVERY" --fail-for "$FAIL_FOR" \
  --sample-every "$SAMPLE_EVERY" --warmup-fraction "$WARMUP_FRACTION" \
  --window-seconds "$WINDOW_SECONDS" --max-growth "$MAX_GROWTH" --quiet-slack "$QUIET_SLACK" --seed "$SEED" \
  >"$out/result.md" &
pids+=($!)
status=0
wait "${pids[-1]}" || status=$?
cat "$out/result.md"
{ echo; echo '```'; cat "$out/context.txt"; echo '```'; } >>"$out/result.md"
hwm="$(awk '/^VmHWM:/ { printf "%.1f MB", $2 / 1024 }' "/proc/$sluice_pid/status" 2>/dev/null || true)"
log "sluice peak RSS (VmHWM): ${hwm:-n/a}"
log "results in ${out#"$root"/}/ (result.md, summary.json, samples.csv, soak.svg, logs)"
exit "$status"
