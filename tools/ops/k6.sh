#!/usr/bin/env bash
# The k6 scenarios of loadtest/k6 against a sluice this script starts on loopback:
# chat.js, stream.js and cache.js on config/sluice.toml (the bundled sluice-tiny), then
# embeddings.js on config/examples/local-models.toml when `make models` has built
# all-MiniLM-L6-v2 (models/minilm-l6/model.onnx). Each scenario runs at a constant
# arrival rate for DURATION (default 20s) and fails on its thresholds (p95 < 500 ms,
# < 1% failed requests, checks passing); k6 then exits 99.
#
#   tools/ops/k6.sh                 (make k6)
#   DURATION=1m RATE=20 tools/ops/k6.sh
#   SLUICE_BIN=target/debug/sluice tools/ops/k6.sh
#
# Every request goes to 127.0.0.1 on a free port. Summaries land in loadtest/results/k6/
# (git-ignored). Exits non-zero when a scenario fails: with k6's own code (99 for a
# crossed threshold) for the first one that failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

K6=${K6:-tools/ops/.venv/bin/k6}
export DURATION=${DURATION:-20s}
# k6 reports usage to its vendor unless told not to; nothing here leaves the machine.
export K6_NO_USAGE_REPORT=true
RESULTS=loadtest/results/k6

[ -x "$K6" ] || { echo "k6.sh: $K6 is missing: run make ops-tools" >&2; exit 2; }
command -v curl >/dev/null || { echo "k6.sh: curl is needed to wait for sluice" >&2; exit 2; }
if [ -z "${SLUICE_BIN:-}" ]; then
    # A no-op when the release binary is up to date.
    cargo build --release --locked --bin sluice
    SLUICE_BIN=target/release/sluice
fi
[ -f .ort/libonnxruntime.so ] || make ort

work=$(mktemp -d)
pid=""
stop_sluice() {
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    # server.shutdown_timeout is 30 s; give it a little more, then make sure.
    for _ in $(seq 80); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
}
trap 'stop_sluice; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_sluice CONFIG: serve it on 127.0.0.1:$port, with the workflow run store in the
# scratch folder rather than data/, and wait until /healthz and /readyz answer.
start_sluice() {
    local config=$1 log
    port=$(free_port)
    log="$work/sluice-$port.log"
    SLUICE__WORKFLOWS__STORE="$work/runs-$port.db" \
        "$SLUICE_BIN" serve --config "$config" --listen "127.0.0.1:$port" >"$log" 2>&1 &
    pid=$!
    for path in healthz readyz; do
        local waited=0
        until curl -fsS -o /dev/null "http://127.0.0.1:$port/$path"; do
            if ! kill -0 "$pid" 2>/dev/null || [ "$waited" -ge 240 ]; then
                echo "k6.sh: sluice on $config did not get to /$path; its log:" >&2
                tail -n 30 "$log" >&2
                exit 1
            fi
            sleep 0.5
            waited=$((waited + 1))
        done
    done
    echo "sluice ($config) ready on 127.0.0.1:$port"
}

mkdir -p "$RESULTS"
status=0
summary=()
# run_scenario NAME [k6 -e options...]
run_scenario() {
    local name=$1 rc
    shift
    echo
    echo "== k6 $name.js ($DURATION)"
    set +e
    "$K6" run --quiet --no-color -e "BASE_URL=http://127.0.0.1:$port" "$@" \
        --summary-export "$RESULTS/$name.json" "loadtest/k6/$name.js"
    rc=$?
    set -e
    case $rc in
        0) summary+=("$name: passed") ;;
        99) summary+=("$name: FAILED (a threshold was crossed)") ;;
        *) summary+=("$name: FAILED (k6 exit $rc)") ;;
    esac
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
        status=$rc
    fi
}

start_sluice config/sluice.toml
for name in chat stream cache; do
    run_scenario "$name" -e "MODEL=${MODEL:-sluice-tiny}"
done
stop_sluice

if [ -f models/minilm-l6/model.onnx ] && [ -d models/smollm2-135m ]; then
    start_sluice config/examples/local-models.toml
    run_scenario embeddings -e "EMBED_MODEL=${EMBED_MODEL:-minilm-l6}"
    stop_sluice
else
    summary+=("embeddings: skipped (make models builds models/minilm-l6 and models/smollm2-135m, which config/examples/local-models.toml serves)")
fi

echo
printf '%s\n' "${summary[@]}"
exit "$status"
