# Custody: the two commands a newcomer needs are `make demo` and `make test`.
# Each creates .venv itself and installs what it needs (Debian packages via apt-get when missing).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# LocalStack (the integration tests' S3 endpoint) lives in a venv of its own: its pins clash with ours.
S3VENV  := .venv-s3
S3STAMP := $(S3VENV)/.installed
EXTRAS  ?= agent,server,dev

.PHONY: demo test lint typecheck bench fleet-bench crash-test fault-test system-deps venv s3-venv clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project with all extras

# The script keeps its own stamp with the exact requirement list and does nothing when it matches;
# make's stamp dependency only spares the script's start-up on every `make test`.
$(S3STAMP): deploy/scripts/localstack-venv.sh
	@PY=$(PY) bash deploy/scripts/localstack-venv.sh $(S3VENV) && touch $(S3STAMP)

s3-venv: $(S3STAMP)  ## create .venv-s3 with LocalStack, the S3 endpoint of the integration tests

system-deps:  ## install the Debian packages the tests use (mosquitto, postgresql) when missing
	@bash deploy/scripts/system-deps.sh

demo: $(STAMP)  ## run the system on embedded defaults
	$(BIN)/custody demo --data-dir demo-data/$$(date +%Y%m%d-%H%M%S)

test: $(STAMP) system-deps $(S3STAMP)  ## run the whole test suite (lint, types, unit and integration)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

crash-test: $(STAMP)  ## SIGKILL a recording agent 200 times and check the buffer after each restart
	CUSTODY_CRASH_TRIALS=200 $(BIN)/python -m pytest -q -s --timeout 3600 tests/integration/agent/test_crash.py

fault-test: $(STAMP) system-deps  ## the sync fault scenarios with 30 s outages (broker, server, footage store down)
	CUSTODY_FAULT_SECONDS=30 $(BIN)/python -m pytest -q -s --timeout 1800 tests/integration/sync/test_faults.py

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)  ## run the benchmarks (figures go to bench/RESULTS.md by hand)
	$(BIN)/python bench/protocol_bench.py

fleet-bench: $(STAMP) system-deps  ## issue 9's fleet ramp against one server core (about 15 min; FLEET_ARGS="--ramp 50,100 ...")
	$(BIN)/python bench/fleet_bench.py $(FLEET_ARGS)

clean:
	rm -rf $(VENV) $(S3VENV) .pytest_cache .mypy_cache .ruff_cache
