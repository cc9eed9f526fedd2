#!/usr/bin/env bash
# Checks the container and Kubernetes files offline (no Docker daemon, no cluster, no
# image pulled), each with its own tool from tools/ops/.venv (make ops-tools):
#   Dockerfile              hadolint, no findings at any level; every COPY source is in
#                           the build context that .dockerignore leaves
#   docker-compose.yml      the real Compose v2 binary: `config -q` without and with each
#                           profile; every bind-mounted file or folder exists
#   config/compose.toml,    `sluice check-config`
#   deploy/k8s/base/sluice.toml
#   deploy/k8s/**           `kubectl kustomize` of the base and each overlay into
#                           kubernetes-validate -k 1.32 --strict (CRDs only warn; without
#                           kubectl each manifest file is validated on its own); the
#                           grace period outlasts server.shutdown_timeout; the
#                           queue-scaling overlay has no CPU autoscaler left
#   prometheusrule.yaml     equals a fresh gen-prometheusrule.py run, its spec equals the
#                           rules file, and promtool accepts the spec
#   YAML                    yamllint --strict -c tools/ops/yamllint.yml
#   loadtest/k6/*.js        `k6 inspect` parses each scenario
# Run from anywhere; exits non-zero on the first failing check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VENV=tools/ops/.venv
PY=$VENV/bin/python
COMPOSE=$(find "$VENV"/lib -path '*/site-packages/compose/docker-compose' -type f 2>/dev/null | head -n 1 || true)
KUBE_VERSION=1.32

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "check_containers: $*" >&2; exit 1; }

for tool in hadolint kubernetes-validate yamllint k6 python; do
    [ -x "$VENV/bin/$tool" ] || fail "$VENV/bin/$tool missing: run make ops-tools"
done
# The Python wrapper `docker-compose` always exits 0: use the binary it wraps.
if [ -z "$COMPOSE" ] || [ ! -x "$COMPOSE" ]; then
    fail "the Compose binary is missing from $VENV: run make ops-tools"
fi

step "hadolint Dockerfile"
"$VENV/bin/hadolint" --failure-threshold style Dockerfile
echo "no findings"

step ".dockerignore keeps every COPY source of the Dockerfile"
"$PY" - <<'EOF'
import fnmatch, os, re, sys

def patterns():
    out = []
    for line in open(".dockerignore", encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = os.path.normpath(line.lstrip("!").strip("/"))
        out.append((neg, pat))
    return out

def match(pat, path):
    # Docker's matcher: `**` spans folders, `*` and `?` stay inside one; a pattern
    # that matches a parent folder matches everything in it.
    rx = ""
    i = 0
    while i < len(pat):
        if pat.startswith("**/", i):
            rx += "(?:.*/)?"; i += 3
        elif pat.startswith("**", i):
            rx += ".*"; i += 2
        elif pat[i] == "*":
            rx += "[^/]*"; i += 1
        elif pat[i] == "?":
            rx += "[^/]"; i += 1
        else:
            rx += re.escape(pat[i]); i += 1
    parts = path.split("/")
    return any(re.fullmatch(rx, "/".join(parts[:n])) for n in range(1, len(parts) + 1))

def excluded(path, pats):
    out = False
    for neg, pat in pats:
        if match(pat, path):
            out = not neg
    return out

pats = patterns()
sources = []
for line in open("Dockerfile", encoding="utf-8"):
    words = line.split()
    if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
        args = [w for w in words[1:] if not w.startswith("--")]
        sources += args[:-1]
bad = []
for src in sources:
    if not os.path.exists(src):
        bad.append(f"{src}: not in the repository")
        continue
    files = [src] if os.path.isfile(src) else [
        os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs]
    kept = [f for f in files if not excluded(os.path.normpath(f), pats)]
    if not kept:
        bad.append(f"{src}: left out of the build context by .dockerignore")
for must_go in ["target", ".git", ".ort", "data", ".venv", "models/smollm2-135m/x"]:
    if not excluded(must_go, pats):
        bad.append(f"{must_go}: should be left out by .dockerignore")
if bad:
    sys.exit("\n".join(bad))
print(f"{len(sources)} COPY sources kept; target/, .git, .ort, data/, .venv and other models left out")
EOF

step "docker compose config (Compose $("$COMPOSE" version --short))"
for profiles in "" "--profile cache" "--profile loadtest"; do
    # shellcheck disable=SC2086  # the profile flags are meant to split
    "$COMPOSE" -f docker-compose.yml $profiles config -q
    echo "ok: docker compose ${profiles:+$profiles }config -q"
done
"$COMPOSE" -f docker-compose.yml --profile cache --profile loadtest config --format json \
    >"$tmp/compose.json"
"$PY" - "$tmp/compose.json" <<'EOF'
import json, os, sys
problems = []
for name, service in json.load(open(sys.argv[1]))["services"].items():
    for v in service.get("volumes", []):
        if v["type"] == "bind" and not os.path.exists(v["source"]):
            problems.append(f"{name}: {os.path.relpath(v['source'])} does not exist")
    image = service.get("image", "")
    if ":" not in image or image.endswith(":latest"):
        problems.append(f"{name}: image {image!r} is not pinned to a version")
if problems:
    sys.exit("\n".join(problems))
print("every bind-mounted path exists; every image is pinned")
EOF

step "sluice check-config"
if [ -n "${SLUICE_BIN:-}" ]; then
    check_config() { "$SLUICE_BIN" check-config --config "$1"; }
else
    check_config() { cargo run --quiet --locked --bin sluice -- check-config --config "$1"; }
fi
check_config config/compose.toml
# The Deployment sets the cache key from the Secret: any valid key stands in for it.
SLUICE__CACHE__ENCRYPTION_KEY=$(printf 'ab%.0s' $(seq 32)) check_config deploy/k8s/base/sluice.toml

step "kustomize + kubernetes-validate -k $KUBE_VERSION --strict"
dirs=(deploy/k8s/base deploy/k8s/overlays/*/)
KUBECTL=${KUBECTL:-kubectl}
if command -v "$KUBECTL" >/dev/null 2>&1; then
    for dir in "${dirs[@]}"; do
        dir=${dir%/}
        out="$tmp/$(basename "$dir").yaml"
        "$KUBECTL" kustomize "$dir" >"$out"
        echo "-- $dir ($(grep -c '^kind:' "$out") resources)"
        "$VENV/bin/kubernetes-validate" -k "$KUBE_VERSION" --strict --quiet "$out"
    done
    "$PY" - "$tmp" <<'EOF'
import re, sys, tomllib, yaml
rendered = sys.argv[1]
docs = list(yaml.safe_load_all(open(f"{rendered}/base.yaml")))
deploy = next(d for d in docs if d["kind"] == "Deployment")
grace = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
cm = next(d for d in docs if d["kind"] == "ConfigMap")
config = tomllib.loads(cm["data"]["sluice.toml"])
timeout = config["server"]["shutdown_timeout"]
m = re.fullmatch(r"(\d+)s", timeout)
if not m:
    sys.exit(f"server.shutdown_timeout = {timeout!r}: write it in seconds (\"30s\") for this check")
pre = deploy["spec"]["template"]["spec"]["containers"][0].get("lifecycle", {}) \
    .get("preStop", {}).get("sleep", {}).get("seconds", 0)
if grace <= int(m.group(1)) + pre:
    sys.exit(f"terminationGracePeriodSeconds {grace} must exceed preStop {pre}s + shutdown_timeout {timeout}")
print(f"grace period {grace}s > preStop {pre}s + shutdown_timeout {timeout}")
kinds = [d["kind"] for d in yaml.safe_load_all(open(f"{rendered}/queue-scaling.yaml"))]
if "HorizontalPodAutoscaler" in kinds or "ScaledObject" not in kinds:
    sys.exit(f"queue-scaling must swap the CPU autoscaler for a ScaledObject: {kinds}")
print("queue-scaling: ScaledObject, no HorizontalPodAutoscaler")
EOF
else
    echo "kubectl not found: validating each manifest file on its own (generators and patches not applied)"
    find deploy/k8s -name '*.yaml' ! -name kustomization.yaml ! -name 'delete-*.yaml' -print0 \
        | xargs -0 "$VENV/bin/kubernetes-validate" -k "$KUBE_VERSION" --strict --quiet
fi

step "PrometheusRule from prometheus/rules/sluice.rules.yml"
gen=deploy/k8s/overlays/monitoring/gen-prometheusrule.py
"$PY" "$gen" --check
"$PY" - <<'EOF'
import sys, yaml
rule = yaml.safe_load(open("deploy/k8s/overlays/monitoring/prometheusrule.yaml"))
rules = yaml.safe_load(open("prometheus/rules/sluice.rules.yml"))
if rule["spec"] != rules:
    sys.exit("prometheusrule.yaml: spec differs from prometheus/rules/sluice.rules.yml once parsed")
print(f"spec equals the rules file ({sum(len(g['rules']) for g in rules['groups'])} rules)")
EOF
if command -v promtool >/dev/null 2>&1; then
    "$PY" -c 'import sys, yaml; yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))["spec"], open(sys.argv[2], "w"))' \
        deploy/k8s/overlays/monitoring/prometheusrule.yaml "$tmp/spec.rules.yml"
    promtool check rules "$tmp/spec.rules.yml"
else
    echo "promtool not found (make ops-tools installs it): spec not checked by promtool"
fi

step "yamllint"
"$VENV/bin/yamllint" --strict -c tools/ops/yamllint.yml docker-compose.yml deploy/k8s tools/ops/yamllint.yml
echo "no findings"

step "k6 inspect loadtest/k6"
for script in loadtest/k6/chat.js loadtest/k6/stream.js loadtest/k6/cache.js loadtest/k6/embeddings.js; do
    K6_NO_USAGE_REPORT=true "$VENV/bin/k6" inspect "$script" >/dev/null
    echo "ok: $script"
done

printf '\ncheck_containers: all checks passed\n'
