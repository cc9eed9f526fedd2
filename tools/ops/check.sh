#!/usr/bin/env bash
# Every operations file checked by its tool, offline (make ops-check; make test runs it):
#   prometheus/ and alertmanager/  promtool check config / check rules / test rules, amtool
#   grafana/                       every dashboard and rule expression parses and names only
#                                  metrics src/metrics.rs exports; promtool parses them too
#   Dockerfile, compose, deploy/   hadolint, docker compose config -q (each profile),
#                                  kubernetes-validate --strict, yamllint
# The live check (a real Prometheus scraping a real sluice, every expression returning
# data, the 500 ms alert firing) is tests/prometheus_live.rs, run with the Rust tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=tools/ops/.venv/bin/python
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "== prometheus, alertmanager"
tools/ops/check_prometheus.sh

echo "== grafana dashboard"
$PY tools/ops/check_dashboard.py
# promtool parses every dashboard expression as well (as recording rules).
$PY tools/ops/check_dashboard.py --exprs | $PY -c '
import sys, yaml
exprs = [l.strip() for l in sys.stdin if l.strip()]
rules = [{"record": "dashboard:expr%d" % i, "expr": e} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sys.stdout)
' > "$TMP/dashboard_rules.yml"
promtool check rules "$TMP/dashboard_rules.yml"

echo "== containers, compose, kubernetes"
tools/ops/check_containers.sh

echo "ops-check: all operations files pass"
