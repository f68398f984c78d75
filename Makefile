# Two commands: `make repro` runs the pipeline, `make test` runs the tests. Both set up .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Nothing in this project phones home: DVC analytics and MLflow telemetry are off.
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: setup test repro bench ui clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Lint and format check of the whole tree first (seconds), then the tests.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# Every benchmark in bench/ and the wall time of `dvc repro` (in a scratch copy), as one table.
# Quick run: make bench BENCH_ARGS=--quick; also write bench/results.md: BENCH_ARGS=--write
bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --default-artifact-root ./mlruns/artifacts

clean-venv:
	rm -rf $(VENV)
