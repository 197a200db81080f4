# Ticket Gateway: the two commands a newcomer needs are `make run` and `make test`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= mailboxes.toml

.PHONY: run test bench lint typecheck clean

# Create the virtualenv and install the package with its test tools, once per
# change of pyproject.toml.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: start the daemon on SQLite (var/) with the sample mailboxes.toml
run: $(STAMP)
	@mkdir -p var
	$(BIN)/ticket-gateway serve --config $(CONFIG)

## test: the whole suite (real SMTP/LMTP sockets, SQLite and PostgreSQL), then lint and types
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory lint typecheck

## bench: throughput, latency, threading cost and memory against a bare aiosmtpd
## sink, with Postfix's smtp-source as the load (installs postfix's tools if missing)
bench: $(STAMP)
	bash bench/setup.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
