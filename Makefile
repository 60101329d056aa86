# The two commands a newcomer runs: `make demo` and `make test`. Each builds .venv itself, with the extras it needs:
# `demo` the [demo] extra (emulator + SQLite provider), everything else [dev] (which includes [demo]).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CKSUM := $(shell cat pyproject.toml constraints.txt 2>/dev/null | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-dev-$(CKSUM)
DEMO_STAMP := $(VENV)/.installed-demo-$(CKSUM)
PIP_FLAGS := --disable-pip-version-check --no-input -q
CONSTRAINTS := $(if $(wildcard constraints.txt),-c constraints.txt,)
# Tests are selected by marker (pyproject.toml lists them; each tests/ folder has its own): `make test MARK=unit`.
AND_MARK := $(if $(MARK), and ($(MARK)),)

.PHONY: demo test lint typecheck unit venv clean reliability stack bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) $(CONSTRAINTS) -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@ $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) $(CONSTRAINTS) -e ".[demo]"
	rm -f $(VENV)/.installed-demo-* && touch $@

venv: $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/batchcode demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check airflow_batchcode tests dags bench stack
	$(BIN)/ruff format --check airflow_batchcode tests dags bench stack

typecheck: $(STAMP)
	$(BIN)/mypy

# Three pytest sessions (exit code 5 = "no tests selected", by MARK or PYTEST_ARGS, which is fine):
# - unit, integration and reliability tests on $(WORKERS) pytest-xdist workers, each with its own Airflow home and
#   metadata DB (conftest.py); every database and Redis key a test makes has a unique name. 8.7 min in CI with 2 workers;
# - the stack tests (marker stack) on their own: they start the whole production topology as real processes;
# - the process-fault tests (marker process_faults) run a multi-process Airflow on their own metadata DB.
WORKERS ?= 2
test: lint typecheck
	$(BIN)/python -m pytest -m "not stack and not process_faults$(AND_MARK)" -n $(WORKERS) $(PYTEST_ARGS) || test $$? -eq 5
	$(BIN)/python -m pytest -m "stack and not process_faults$(AND_MARK)" $(PYTEST_ARGS) || test $$? -eq 5
	$(BIN)/python -m pytest -m "process_faults$(AND_MARK)" $(PYTEST_ARGS) || test $$? -eq 5

unit: $(STAMP)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

reliability: $(STAMP)
	BATCHCODE_RELIABILITY_SCALE=full $(BIN)/python -m pytest -m "reliability and not process_faults" $(PYTEST_ARGS)
	BATCHCODE_RELIABILITY_SCALE=full $(BIN)/python -m pytest -m "reliability and process_faults" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The production topology as real processes (PostgreSQL, Redis, Celery worker, scheduler, dag-processor, triggerer,
# api-server, emulator): up, one smoke run, then serve until Ctrl-C. STACK_ARGS="--once" stops after the smoke run.
stack: $(STAMP)
	bash stack/setup.sh $(BIN)/python
	$(BIN)/python -m stack.run $(STACK_ARGS)
