# sluice — the two commands a new user needs:
#   make run    build and start sluice on config/sluice.toml
#   make test   run the whole test suite (Rust + the official Python openai SDK)
# Each target installs what it needs itself.

CARGO   ?= cargo
CONFIG  ?= config/sluice.toml
VENV    := .venv
PY      := $(VENV)/bin/python

.PHONY: run build test test-rust test-python venv bench-latency check-config model clean

run: build
	./target/release/sluice serve --config $(CONFIG)

build:
	$(CARGO) build --release --locked

check-config:
	$(CARGO) run --quiet -- check-config --config $(CONFIG)

test: test-rust test-python

# cargo-nextest runs tests in parallel processes; plain cargo test is the fallback.
test-rust:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --locked --no-fail-fast && $(CARGO) test --locked --doc; \
	else \
		$(CARGO) test --locked --no-fail-fast; \
	fi

# The Python SDK tests start the debug binary against a fake upstream.
test-python: venv
	$(CARGO) build --locked --bin sluice
	SLUICE_BIN=$(CURDIR)/target/debug/sluice $(PY) -m pytest -q tests/python

venv: $(VENV)/.installed

$(VENV)/.installed: tests/python/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

clean:
	rm -rf target $(VENV)

# Latency sluice adds over calling the upstream directly at 2,000 req/s, and its peak
# memory (see loadtest/README.md). Not part of `make test`.
bench-latency:
	loadtest/latency.sh

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
