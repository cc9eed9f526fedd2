#!/usr/bin/env bash
# Checks the Prometheus and Alertmanager files with their own tools (make ops-tools installs
# promtool and amtool from Debian's prometheus and prometheus-alertmanager). Run from the
# repository root; exits non-zero on the first failure. tests/prometheus_live.rs then
# queries every rule expression against a live sluice.
set -euo pipefail

for tool in promtool amtool; do
    command -v "$tool" >/dev/null || { echo "$tool not found: run make ops-tools" >&2; exit 1; }
done

promtool check config prometheus/prometheus.yml
promtool check rules prometheus/rules/*.yml
promtool test rules prometheus/tests/*.yml
amtool check-config alertmanager/alertmanager.yml

# Routing: each severity reaches its receiver.
route() { # expected-receiver labels...
    local want=$1
    shift
    amtool config routes test --config.file=alertmanager/alertmanager.yml \
        --verify.receivers="$want" "$@" 2>/dev/null >/dev/null ||
        { echo "alertmanager: $* should route to $want" >&2; exit 1; }
    echo "alertmanager route: $* -> $want"
}
route oncall alertname=SluiceDown severity=critical
route team alertname=SluiceChatLatencyHigh severity=warning
route default alertname=SomethingElse
