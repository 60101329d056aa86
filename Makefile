# The two commands a newcomer runs: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PROCESS_FAULTS := tests/reliability/test_process_faults.py
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt 2>/dev/null | cksum | cut -d' ' -f1)
PIP_FLAGS := --disable-pip-version-check --no-input -q
CONSTRAINTS := $(if $(wildcard constraints.txt),-c constraints.txt,)

.PHONY: demo test lint typecheck unit venv clean reliability stack bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) $(CONSTRAINTS) -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/batchcode demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check airflow_batchcode tests dags bench stack
	$(BIN)/ruff format --check airflow_batchcode tests dags bench stack

typecheck: $(STAMP)
	$(BIN)/mypy

# The process-fault tests run a multi-process Airflow on their own metadata DB, so in a second session
# (exit code 5 = "no tests selected" by PYTEST_ARGS, which is fine).
test: lint typecheck
	$(BIN)/python -m pytest --ignore=$(PROCESS_FAULTS) $(PYTEST_ARGS)
	$(BIN)/python -m pytest $(PROCESS_FAULTS) $(PYTEST_ARGS) || test $$? -eq 5

reliability: $(STAMP)
	BATCHCODE_RELIABILITY_SCALE=full $(BIN)/python -m pytest tests/reliability --ignore=$(PROCESS_FAULTS) $(PYTEST_ARGS)
	BATCHCODE_RELIABILITY_SCALE=full $(BIN)/python -m pytest $(PROCESS_FAULTS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The production topology as real processes (PostgreSQL, Redis, Celery worker, scheduler, dag-processor, triggerer,
# api-server, emulator): up, one smoke run, then serve until Ctrl-C. STACK_ARGS="--once" stops after the smoke run.
stack: $(STAMP)
	bash stack/setup.sh $(BIN)/python
	$(BIN)/python -m stack.run $(STACK_ARGS)
