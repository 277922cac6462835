# One entry point for users and CI. Every target bootstraps the virtual environment first,
# so `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Calibration solves small linear systems; on 2 busy cores BLAS threads thrash (~10x slower).
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: install run test soak lint check bench lock kafka-up kafka-down clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[service,dev]'
	touch $(STAMP)

install: $(STAMP)

run: install  ## run the service (starts a local broker when none is configured)
	$(BIN)/sentinel run

test: install  ## all tests: unit tests on two processes, then the integration tests (one at a time, real local Kafka broker)
	$(BIN)/pytest -n 2 tests/unit; unit=$$?; $(BIN)/pytest tests/integration; integration=$$?; \
	  [ $$unit -eq 0 ] && [ $$integration -eq 0 ]

soak: install  ## the long live runs kept out of `make test` for CI's time budget (about 20 minutes)
	$(BIN)/pytest -m soak tests/integration

lint: install  ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test  ## lint + types + tests: what CI runs

bench: install  ## detector, quality and throughput benchmarks (ratios against in-run baselines)
	$(BIN)/python bench/detectors.py --quick
	$(BIN)/python bench/quality.py --quick
	$(BIN)/python bench/throughput.py --quick

lock: install
	head -n 2 constraints.txt > constraints.new
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^sentinel' >> constraints.new
	mv constraints.new constraints.txt

kafka-up: install
	$(BIN)/sentinel kafka up
kafka-down: install
	$(BIN)/sentinel kafka down

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
