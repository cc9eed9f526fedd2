#!/usr/bin/env bash
# CPU time per proxied request: sluice against a bare nginx `proxy_pass` hop (the
# practical floor) in front of the same fast upstream, in one run. `make bench-cpu` runs
# it. A third hop, bench-hop (loadtest/bench), is the floor of sluice's own stack: a bare
# pass-through built from hyper, hyper-util's pooled client and tokio alone, the crates
# under sluice's server and upstream client, with no JSON, metrics or logs. Everything on
# 127.0.0.1; every process started here is stopped on exit.
#
#   loadtest/cpu.sh                              # 2 rounds x 10 s per hop and mode
#   RUN_SECONDS=5 ROUNDS=1 MODES=nonstream loadtest/cpu.sh
#   PERF=1 loadtest/cpu.sh                       # plus a perf profile of sluice per mode
#
# Set-up, as the hot-path issue measured it: the hop under test (nginx, hyper or sluice) alone on
# CPU $HOP_CPU; the test upstream (loadtest/bench bench-upstream, one thread) and wrk (one
# thread, $CONNECTIONS keep-alive connections, closed loop) on CPU $LOAD_CPU. sluice runs
# with `worker_threads = 1`, the cache off and one OpenAI-compatible backend; nginx with one
# process and upstream keep-alive. The hop's user+sys CPU time (/proc/PID/stat) over a
# phase, divided by the requests wrk counted in it, is its CPU per request. Phases of the
# two hops alternate, each after a warm-up; the table gives each hop's median over rounds.
# nginx-light and wrk come from Debian (installed here, with sudo when not root).
# Exit status: 0 target met (sluice <= TARGET_RATIO x nginx in every mode), 3 missed,
# anything else an error. Results in loadtest/results/cpu-<UTC time>/.
#
# Environment (defaults in brackets):
#   RUN_SECONDS [10]  WARMUP [2]  ROUNDS [2]  CONNECTIONS [32]  MODES [nonstream,stream]
#   HOPS [nginx,hyper,sluice]  which hops to measure (nginx and sluice always are; drop
#           hyper to save a third of the time). `reqwest` adds bench-hop sending through
#           reqwest instead of hyper-util's client: what reqwest's own layers cost
#   TOKENS [8] content chunks per upstream answer   TARGET_RATIO [1.5]
#   PROMPT_BYTES [0]  pad the user message with this many bytes of words (how the cost
#           grows with the prompt: sluice reads and re-encodes it, nginx copies it)
#   HOP_CPU [1]  LOAD_CPU [0]   SLUICE_BIN  use this binary instead of building one
#   NGINX_ACCESS_LOG=1  nginx writes its default access log (one line per request, to a
#           file under the results), as a deployed hop usually does; off by default, the
#           bare floor
#   RATE=N  open loop at N requests/s (bench-loadgen, one keep-alive connection per request
#           in flight) instead of wrk's closed loop. Closed loop saturates the hop under
#           test, so the cheaper hop's peers (wrk, the upstream) stay busy while the dearer
#           hop's sit idle and each of its loopback writes pays a cross-CPU wake-up; at a
#           fixed rate below every hop's capacity, all hops pay the same wake-ups, as a
#           gateway does in service. The table then also gives each hop's added p50.
#   PERF=1  after the measured phases, one more sluice phase per mode under
#           `perf record -g` (results/…/perf-MODE.data; not counted in the table)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
RUN_SECONDS="${RUN_SECONDS:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
MODES="${MODES:-nonstream,stream}"
TOKENS="${TOKENS:-8}"
TARGET_RATIO="${TARGET_RATIO:-1.5}"
PROMPT_BYTES="${PROMPT_BYTES:-0}"
HOP_CPU="${HOP_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
PERF="${PERF:-0}"
RATE="${RATE:-}"
NGINX_ACCESS_LOG="${NGINX_ACCESS_LOG:-0}"
HOPS="${HOPS:-nginx,hyper,sluice}"
hops_all=(nginx)
[[ ",$HOPS," == *,hyper,* ]] && hops_all+=(hyper)
[[ ",$HOPS," == *,reqwest,* ]] && hops_all+=(reqwest)
hops_all+=(sluice)
CARGO="${CARGO:-cargo}"
MODEL="bench-model"

log() { printf '[cpu.sh] %s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [[ "${#need[@]}" -gt 0 ]]; then
  log "installing ${need[*]} from Debian"
  sudo_=()
  [[ "$(id -u)" == 0 ]] || sudo_=(sudo)
  "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${need[@]}" >&2
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
if [[ "$(nproc)" -le "$HOP_CPU" || "$(nproc)" -le "$LOAD_CPU" ]]; then
  log "this machine has $(nproc) CPUs; set HOP_CPU and LOAD_CPU to two different ones"
  exit 1
fi

# shellcheck source=loadtest/common.sh
source "$here/common.sh"
bench_setup cpu
n_modes=$(( $(tr -cd ',' <<<"$MODES" | wc -c) + 1 ))
budget=$(( n_modes * (ROUNDS + 1) * ${#hops_all[@]} * (RUN_SECONDS + WARMUP + 2) + 120 ))

# --- upstream, on the load CPU ------------------------------------------------------------
up_port="$("$BIN/bench-loadgen" free-port)"
timeout -s TERM "$budget" taskset -c "$LOAD_CPU" "$BIN/bench-upstream" \
  --listen "127.0.0.1:$up_port" --threads 1 --tokens "$TOKENS" --max-seconds "$budget" \
  >"$out/upstream.log" 2>&1 &
pids+=($!)
"$BIN/bench-loadgen" wait-ready "http://127.0.0.1:$up_port/v1/models" --timeout 20

# --- nginx, on the hop CPU ----------------------------------------------------------------
ng_port="$("$BIN/bench-loadgen" free-port)"
mkdir -p "$out/nginx"
access_log="access_log off;"
[[ "$NGINX_ACCESS_LOG" == 1 ]] && access_log="access_log $out/nginx/access.log;"
cat >"$out/nginx/nginx.conf" <<EOF
# Written by loadtest/cpu.sh: one process, a keep-alive upstream, access log per NGINX_ACCESS_LOG.
daemon off;
master_process off;
worker_processes 1;
pid $out/nginx/nginx.pid;
error_log $out/nginx/error.log warn;
events { worker_connections 1024; }
http {
  $access_log
  client_body_temp_path $out/nginx/body;
  proxy_temp_path $out/nginx/proxy;
  fastcgi_temp_path $out/nginx/fastcgi;
  uwsgi_temp_path $out/nginx/uwsgi;
  scgi_temp_path $out/nginx/scgi;
  client_max_body_size 4m;
  # prompts stay in memory (nginx's default, 16k, spools bigger bodies to a temp file)
  client_body_buffer_size 4m;
  upstream bench { server 127.0.0.1:$up_port; keepalive 64; }
  server {
    listen 127.0.0.1:$ng_port;
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # streamed answers pass through as they come, as an LLM proxy must
      proxy_buffering off;
    }
  }
}
EOF
timeout -s TERM "$budget" taskset -c "$HOP_CPU" "$NGINX" -p "$out/nginx" -c "$out/nginx/nginx.conf" \
  -e "$out/nginx/error.log" >"$out/nginx/stdout.log" 2>&1 &
pids+=($!)
"$BIN/bench-loadgen" wait-ready "http://127.0.0.1:$ng_port/v1/models" --timeout 20
nginx_pid="$(pgrep -P "${pids[-1]}" | head -n1)"
[[ -n "$nginx_pid" ]] || { log "cannot find the nginx process"; exit 1; }

# --- the bare hops (bench-hop), on the hop CPU --------------------------------------------
# start_hop CLIENT: start bench-hop with that upstream client; sets hop_port and hop_pid.
start_hop() {
  hop_port="$("$BIN/bench-loadgen" free-port)"
  timeout -s TERM "$budget" taskset -c "$HOP_CPU" "$BIN/bench-hop" --listen "127.0.0.1:$hop_port" \
    --upstream "127.0.0.1:$up_port" --client "$1" --max-seconds "$budget" >"$out/hop-$1.log" 2>&1 &
  pids+=($!)
  "$BIN/bench-loadgen" wait-ready "http://127.0.0.1:$hop_port/v1/models" --timeout 20
  hop_pid="$(pgrep -P "${pids[-1]}" | head -n1)"
  [[ -n "$hop_pid" ]] || { log "cannot find the bench-hop ($1) process"; exit 1; }
}
declare -A hop_ports=([nginx]="$ng_port") hop_pids=([nginx]="$nginx_pid")
for client in hyper reqwest; do
  if [[ " ${hops_all[*]} " == *" $client "* ]]; then
    start_hop "$client"
    hop_ports[$client]="$hop_port" hop_pids[$client]="$hop_pid"
  fi
done

# --- sluice, on the hop CPU ---------------------------------------------------------------
gw_port="$("$BIN/bench-loadgen" free-port)"
proxy_config "$out/sluice.toml" "$gw_port" "$up_port" "$MODEL" "worker_threads = 1"
(cd "$root" && RUST_LOG="${SLUICE_LOG:-warn}" exec timeout -s TERM "$budget" \
  taskset -c "$HOP_CPU" "$SLUICE_BIN" serve --config "$out/sluice.toml") >"$out/sluice.log" 2>&1 &
pids+=($!)
wait_ready sluice "$gw_port" 60 "$out/sluice.log"
sluice_pid="$(pgrep -P "${pids[-1]}" | head -n1)"
[[ -n "$sluice_pid" ]] || { log "cannot find the sluice process"; exit 1; }
hop_ports[sluice]="$gw_port" hop_pids[sluice]="$sluice_pid"
log "upstream :$up_port (CPU $LOAD_CPU); on CPU $HOP_CPU: $(for h in "${hops_all[@]}"; do printf '%s pid %s :%s; ' "$h" "${hop_pids[$h]}" "${hop_ports[$h]}"; done)"

write_context "HOPS=$(IFS=,; echo "${hops_all[*]}")${RATE:+ RATE=$RATE} RUN_SECONDS=$RUN_SECONDS WARMUP=$WARMUP ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS MODES=$MODES TOKENS=$TOKENS PROMPT_BYTES=$PROMPT_BYTES HOP_CPU=$HOP_CPU LOAD_CPU=$LOAD_CPU NGINX_ACCESS_LOG=$NGINX_ACCESS_LOG loadtest/cpu.sh"

# --- requests -------------------------------------------------------------------------------
padding=""
if [[ "$PROMPT_BYTES" -gt 0 ]]; then
  padding=" $(python3 -c 'import sys; w = "lorem ipsum dolor sit amet "; n = int(sys.argv[1]); print((w * (n // len(w) + 1))[:n].strip())' "$PROMPT_BYTES")"
fi
for mode in ${MODES//,/ }; do
  case "$mode" in
    nonstream) stream=false ;;
    stream) stream=true ;;
    *) log "unknown mode $mode (nonstream, stream)"; exit 1 ;;
  esac
  body="{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a helpful assistant.\"},{\"role\":\"user\",\"content\":\"Say hello in one short sentence.$padding\"}],\"max_tokens\":32,\"temperature\":0,\"stream\":$stream}"
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[%s]]\n' \
    "$body" >"$out/$mode.lua"
  # Each hop must give the same kind of answer before it is measured.
  for hop in "${hops_all[@]}"; do
    port="${hop_ports[$hop]}"
    answer="$(curl -sS --max-time 5 -H 'content-type: application/json' -d "$body" \
      "http://127.0.0.1:$port/v1/chat/completions")"
    if [[ "$stream" == true ]]; then
      grep -q '^data: \[DONE\]' <<<"$answer" || { log "no SSE answer from :$port: $answer"; exit 1; }
    else
      grep -q '"chat.completion"' <<<"$answer" || { log "no JSON answer from :$port: $answer"; exit 1; }
    fi
  done
done

# rate_phase MODE HOP PORT PID SECONDS: like phase, at RATE requests/s (bench-loadgen,
# which sends the same load straight to the upstream first; only the hop's phase counts).
# Prints "requests cpu_us errors added_p50_us".
rate_phase() {
  local mode="$1" hop="$2" port="$3" pid="$4" seconds="$5" json
  json="$out/loadgen-$mode-$hop.json"
  taskset -c "$LOAD_CPU" "$BIN/bench-loadgen" run --direct "http://127.0.0.1:$up_port/v1" \
    --gateway "http://127.0.0.1:$port/v1" --rate "$RATE" --duration "$seconds" --warmup 1 \
    --rounds 1 --modes "$mode" --model "$MODEL" --gateway-pid "$pid" \
    --json "$json" >"$out/loadgen-$mode-$hop.log" 2>&1 || true
  python3 - "$json" <<'PY'
import json, sys
try:
    m = json.load(open(sys.argv[1]))["modes"][0]
except (OSError, ValueError, KeyError, IndexError):
    print("0 0 0 0")
    sys.exit()
g = m["gateway"]
print(g["ok"], round(g["cpu_us_per_req"]["sluice"] * g["ok"]), g["errors"],
      round(m["added"]["p50_us"], 1))
PY
}

# cpu_ticks PID: user + system clock ticks of the process (all its threads).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
tck="$(getconf CLK_TCK)"

# phase MODE HOP PORT PID SECONDS: one wrk run; prints "requests cpu_us errors".
phase() {
  local mode="$1" hop="$2" port="$3" pid="$4" seconds="$5" before after log
  if [[ -n "$RATE" ]]; then
    rate_phase "$@"
    return
  fi
  log="$out/wrk-$mode-$hop.log"
  before="$(cpu_ticks "$pid")"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --timeout 5s \
    -s "$out/$mode.lua" "http://127.0.0.1:$port/v1/chat/completions" >"$log" 2>&1
  after="$(cpu_ticks "$pid")"
  awk -v b="$before" -v a="$after" -v t="$tck" '
    / requests in / { n = $1 }
    /Non-2xx or 3xx responses:/ { e += $NF }
    /Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) { sub(",", "", $i); e += $i } }
    END { printf "%d %.0f %d\n", n, (a - b) * 1e6 / t, e }' "$log"
}

: >"$out/phases.tsv"
for mode in ${MODES//,/ }; do
  for round in $(seq "$ROUNDS"); do
    # Reverse the order of the hops every other round, so slow drift of the machine hits
    # them alike.
    hops=("${hops_all[@]}")
    if (( round % 2 == 0 )); then
      hops=()
      for (( i = ${#hops_all[@]} - 1; i >= 0; i-- )); do hops+=("${hops_all[$i]}"); done
    fi
    for hop in "${hops[@]}"; do
      port="${hop_ports[$hop]}" pid="${hop_pids[$hop]}"
      # (bench-loadgen warms up by itself)
      [[ -n "$RATE" ]] || phase "$mode" "$hop" "$port" "$pid" "$WARMUP" >/dev/null
      read -r n cpu_us errors added < <(phase "$mode" "$hop" "$port" "$pid" "$RUN_SECONDS")
      [[ "$n" -gt 0 ]] || { log "$mode $hop: no request counted (see the wrk or loadgen log under $out)"; exit 1; }
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$hop" "$round" "$n" "$cpu_us" "$errors" "${added:-}" >>"$out/phases.tsv"
      log "$mode round $round $hop: $n requests, $(awk -v c="$cpu_us" -v n="$n" 'BEGIN { printf "%.1f", c / n }') CPU µs/request, $errors errors"
    done
  done
done

if [[ "$PERF" == 1 ]]; then
  for mode in ${MODES//,/ }; do
    log "perf: one more $mode phase of sluice under perf record -g"
    perf record -F 999 -g -p "$sluice_pid" -o "$out/perf-$mode.data" >"$out/perf-$mode.log" 2>&1 &
    perf_pid=$!
    phase "$mode" sluice "$gw_port" "$sluice_pid" "$RUN_SECONDS" >/dev/null
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
  done
fi

# The access log (NGINX_ACCESS_LOG=1) is about 150 MB per phase and only there to be paid for.
rm -f "$out/nginx/access.log"

# --- report ---------------------------------------------------------------------------------
status=0
python3 - "$out" "$TARGET_RATIO" "$RUN_SECONDS" "$CONNECTIONS" "$RATE" >"$out/result.md" <<'EOF' || status=$?
import json, statistics, sys
out, target, seconds, conns, rate = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rows = [l.split("\t") for l in open(f"{out}/phases.tsv").read().splitlines() if l]
by, added = {}, {}
for mode, hop, rnd, n, cpu, err, p50 in rows:
    by.setdefault((mode, hop), []).append((int(n), float(cpu), int(err)))
    if p50:
        added.setdefault((mode, hop), []).append(float(p50))
modes = list(dict.fromkeys(r[0] for r in rows))
load = (f"open loop at {rate} requests/s (bench-loadgen)" if rate
        else f"wrk with {conns} keep-alive connections (closed loop)")
print(f"CPU per proxied request: one hop alone on a CPU, {load}, "
      f"{seconds} s per phase, median over rounds\n")
extra = " added p50 µs |" if added else ""
print(f"| mode | hop | requests/s | CPU µs/request (each round) | median | ratio to nginx | errors |{extra}")
print("|---|---|---|---|---|---|---|" + ("---|" if added else ""))
result, met = {}, True
for mode in modes:
    med = {}
    for hop in [h for h in ("nginx", "hyper", "reqwest", "sluice") if (mode, h) in by]:
        ph = by[(mode, hop)]
        per = [c / n for n, c, _ in ph]
        med[hop] = statistics.median(per)
        rps = statistics.median(n / float(seconds) for n, _, _ in ph)
        errs = sum(e for _, _, e in ph)
        ratio = med[hop] / med["nginx"]
        result.setdefault(mode, {})[hop] = {"cpu_us_per_request": per, "median": med[hop],
                                             "requests_per_second": rps, "errors": errs}
        print(f"| {mode} | {hop} | {rps:,.0f} | {', '.join(f'{p:.1f}' for p in per)} | "
              f"**{med[hop]:.1f}** | {ratio:.2f}x | {errs} |"
              + (f" {statistics.median(added[(mode, hop)]):+.0f} |" if (mode, hop) in added else ""))
        if errs:
            met = False
    result[mode]["ratio"] = med["sluice"] / med["nginx"]
    if "hyper" in med:
        result[mode]["ratio_to_hyper"] = med["sluice"] / med["hyper"]
    met = met and result[mode]["ratio"] <= target
print()
if any("ratio_to_hyper" in r for r in result.values()):
    print("hyper: bench-hop, a bare pass-through on the crates under sluice (hyper server, "
          "hyper-util pooled client, tokio); sluice's own cost is what it spends above it: "
          + ", ".join(f"{m} {result[m]['ratio_to_hyper']:.2f}x hyper" for m in modes
                      if "ratio_to_hyper" in result[m]))
    print()
print(f"target: sluice <= {target}x nginx's CPU per request in every mode, no errors => "
      + ("PASS" if met else "MISS"))
json.dump(result, open(f"{out}/result.json", "w"), indent=1)
sys.exit(0 if met else 3)
EOF
cat "$out/result.md"
{ echo; cat "$out/context.txt"; } >>"$out/result.md"
log "results in ${out#"$root"/}/ (result.md, result.json, phases.tsv, wrk and server logs)"
if [[ "$PERF" == 1 ]]; then
  log "profiles: perf report -i ${out#"$root"/}/perf-MODE.data --no-children"
fi
exit "$status"
