# Shared by the scripts in loadtest/ (sourced, not run): build sluice and the bench tools,
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

# wait_ready NAME PORT TRIES LOGFILE: wait for http://127.0.0.1:PORT/readyz, about a second
# per try, giving up at once if the last process started (${pids[-1]}) exits; on failure
# print the end of LOGFILE and exit 1.
wait_ready() {
  local name="$1" port="$2" tries="$3" logfile="$4" ready=0
  for _ in $(seq "$tries"); do
    if "$BIN/bench-loadgen" wait-ready "http://127.0.0.1:$port/readyz" --timeout 1 2>/dev/null; then
      ready=1
      break
    fi
    kill -0 "${pids[-1]}" 2>/dev/null || break
  done
  if [[ "$ready" != 1 ]]; then
    log "$name did not become ready; the end of its log:"
    tail -n 30 "$logfile" >&2
    exit 1
  fi
}

# start_sluice CONFIG SECONDS PORT: run `sluice serve --config CONFIG` from the repository
# root (so .ort/ and models/ resolve) under `timeout SECONDS`, logging to $out/sluice.log;
# wait up to 60 s for /readyz on PORT (giving up at once if sluice exits), and set
# sluice_pid to the sluice process (not its `timeout` wrapper).
start_sluice() {
  local config="$1" seconds="$2" port="$3"
  (cd "$root" && RUST_LOG="${SLUICE_LOG:-warn}" exec timeout -s TERM "$seconds" \
    "$SLUICE_BIN" serve --config "$config") >"$out/sluice.log" 2>&1 &
  pids+=($!)
  wait_ready sluice "$port" 60 "$out/sluice.log"
  sluice_pid="$(pgrep -P "${pids[-1]}" | head -n1)"
  [[ -n "$sluice_pid" ]] || { log "cannot find the sluice process"; exit 1; }
}

# proxy_config FILE GW_PORT UP_PORT MODEL [SERVER_LINES]: a sluice config for measuring the
# proxy path: listen on GW_PORT, cache off, one OpenAI-compatible backend `bench` at the
# test upstream on UP_PORT, and MODEL served from it under its own name (so a request
# straight to the upstream and one through sluice carry the same body). SERVER_LINES go
# into [server] (e.g. `worker_threads = 1`).
proxy_config() {
  local file="$1" gw="$2" up="$3" model="$4" server="${5:-}"
  cat >"$file" <<EOF
# Written by loadtest/$(basename "$0"): one OpenAI-compatible backend, the fast test upstream.
[server]
listen = "127.0.0.1:$gw"
$server

# The proxy path is what is measured: no answer comes from the response cache.
[cache]
mode = "off"

[backends.bench]
kind = "openai"
url = "http://127.0.0.1:$up/v1"

[[models]]
name = "$model"
backend = "bench"
EOF
}

# write_context COMMAND: the machine context of this run ($out/context.txt, also to stderr).
write_context() {
  {
    echo "date: $stamp"
    echo "git: $(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$root" && git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
    echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "command: $1"
  } >"$out/context.txt"
  cat "$out/context.txt" >&2
}

# perf_attach SECONDS: with PERF=1, record a `perf record -g` profile of sluice.
perf_attach() {
  if [[ "${PERF:-0}" == 1 ]]; then
    timeout -s INT "$1" perf record -F 999 -g -p "$sluice_pid" -o "$out/perf.data" \
      >"$out/perf.log" 2>&1 &
    pids+=($!)
  fi
}

# finish_report RESULT: log sluice's peak RSS, append the context to RESULT.md, say where
# the results are.
finish_report() {
  local result="$1" hwm
  hwm="$(awk '/^VmHWM:/ { printf "%.1f MB", $2 / 1024 }' "/proc/$sluice_pid/status" 2>/dev/null || true)"
  log "sluice peak RSS (VmHWM): ${hwm:-n/a}"
  { echo; cat "$out/context.txt"; } >>"$result.md"
  log "results in ${result#"$root"/}.md and .json; config, log and context in ${out#"$root"/}/"
}
