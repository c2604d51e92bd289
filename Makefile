# One entry point per job; README.md and .ci/run use these targets.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install tools demo test lint stack-up stack-down bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python  ## the project and its dev tools in .venv
	$(BIN)/pip install --quiet -e '.[dev]'

tools: install  ## what the checks need outside the venv: PostgreSQL, checkov, the offline Terraform provider
	bash infra/install_test_tools.sh

demo: install  ## the whole pipeline on the local emulators, with sample data
	$(BIN)/python -m infra.demo

test: tools  ## lint, types and every test (emulator tests skip with a reason if the Cloud SDK is absent)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

stack-up: install  ## start the local stack and leave it running (see .local/stack/env)
	$(BIN)/python -m infra.stack up

stack-down:
	$(BIN)/python -m infra.stack down

bench: install  ## benchmarks: print figures, run on purpose (not part of test)
	$(BIN)/python -m infra.bench $(BENCH)

clean:
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
